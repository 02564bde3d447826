// Pure hierarchical quota per accelerator type over the tenant tree (`org`, `org/team`,
// `org/team/project`), in the spirit of Kueue cohorts. No I/O: the caller loads rules and
// usage (locking the keys from `quotaKeysFor`), asks `checkQuota`, then writes the charge.
//
// Units: rules are in whole devices; usage and requests are in milli-devices (1 device =
// 1000 milli). The usage of a ruled node is the usage of its whole subtree.
//
// Semantics, for one accelerator type (rules of other types play no part):
//  - The *path* of a tenant is the rules on its path from the leaf upward; nodes without a
//    rule are skipped. An empty path means the type is not governed: admit, charge nothing.
//  - A rule node's *cohort parent* is its nearest proper ancestor that has a rule; the
//    cohort's *members* are all rule nodes whose nearest ruled ancestor is that parent. A
//    node with no ruled ancestor has no cohort.
//  - With n = nominal, b = borrowing limit (∞ if null), l = lending limit (n if null,
//    clamped to n) and g = n − l (never lent), all ×1000, admitting `milli` adds it to the
//    usage u of every path node. It is allowed iff, with u' the usage after, for every
//    path node N:
//      1. u'(N) ≤ n(N) + b(N), and u'(N) ≤ n(N) if N has no cohort parent;
//      2. if N has a cohort parent P: Σ max(0, u'(M) − g(M)) ≤ Σ l(M) + max(0, n(P) − Σ n(M))
//         over the members M (usage within g never touches the pool; P's nominal not
//         handed to any member is borrowable too).
//    P's own conditions are checked when P is visited on the path (its usage grows too).
//    Nothing is reclaimed: a member's lendable nominal already borrowed by a sibling is
//    not available to it until the sibling releases (preemption lives elsewhere).
//  - A refusal names the first failing path node, leaf upward, in devices.

import { tenantAncestors } from '../api/tenants';
import { formatDevices } from '../api/units';

export interface QuotaRule {
  tenant: string; // tree node path
  acceleratorType: string;
  nominal: number; // guaranteed devices
  borrowingLimit: number | null; // max devices above nominal this node may use; null = no limit
  lendingLimit: number | null; // max devices of its nominal others may borrow; null = all of nominal
}

export const quotaKey = (tenant: string, type: string): string => `${tenant}|${type}`;

/** Usage in milli-devices per quotaKey (subtree usage of that rule's node). Missing key = 0. */
export type QuotaUsage = ReadonlyMap<string, number>;

export type QuotaDecision =
  | { ok: true; charge: string[] } // quota keys whose usage grows by the request (every rule on the tenant's path for that type, leaf first)
  | { ok: false; reason: string }; // human-readable

const MILLI = 1000;

function assertTenantPath(tenant: string, what: string): void {
  if (typeof tenant !== 'string' || tenant.length === 0 || tenant.split('/').some((s) => s.length === 0)) {
    throw new Error(`${what} must be a '/'-separated tenant path with no empty segments, got ${JSON.stringify(tenant)}`);
  }
}

function assertType(type: string, what: string): void {
  if (typeof type !== 'string' || type.length === 0) {
    throw new Error(`${what} must be a non-empty accelerator type, got ${JSON.stringify(type)}`);
  }
}

function assertDevices(value: number, field: string, rule: QuotaRule): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new Error(
      `quota rule ${quotaKey(rule.tenant, rule.acceleratorType)}: ${field} must be a whole number of devices ≥ 0, got ${value}`,
    );
  }
}

function assertRule(rule: QuotaRule): void {
  assertTenantPath(rule.tenant, 'quota rule tenant');
  assertType(rule.acceleratorType, `quota rule ${rule.tenant} acceleratorType`);
  assertDevices(rule.nominal, 'nominal', rule);
  if (rule.borrowingLimit !== null) assertDevices(rule.borrowingLimit, 'borrowingLimit', rule);
  if (rule.lendingLimit !== null) assertDevices(rule.lendingLimit, 'lendingLimit', rule);
}

/** Throws on a malformed rule or two rules for the same tenant and type; call when loading quota config. */
export function validateQuotaRules(rules: readonly QuotaRule[]): void {
  const seen = new Set<string>();
  for (const rule of rules) {
    assertRule(rule);
    const key = quotaKey(rule.tenant, rule.acceleratorType);
    if (seen.has(key)) throw new Error(`duplicate quota rule for tenant ${rule.tenant} and type ${rule.acceleratorType}`);
    seen.add(key);
  }
}

/** The rules for one type, by tenant path (validated). */
function rulesForType(rules: readonly QuotaRule[], type: string): Map<string, QuotaRule> {
  const byTenant = new Map<string, QuotaRule>();
  for (const rule of rules) {
    if (rule.acceleratorType !== type) continue;
    assertRule(rule);
    if (byTenant.has(rule.tenant)) throw new Error(`duplicate quota rule for tenant ${rule.tenant} and type ${type}`);
    byTenant.set(rule.tenant, rule);
  }
  return byTenant;
}

function pathRules(ruled: ReadonlyMap<string, QuotaRule>, tenant: string): QuotaRule[] {
  return [tenant, ...tenantAncestors(tenant)].flatMap((t) => {
    const rule = ruled.get(t);
    return rule === undefined ? [] : [rule];
  });
}

function cohortParent(ruled: ReadonlyMap<string, QuotaRule>, tenant: string): QuotaRule | undefined {
  for (const t of tenantAncestors(tenant)) {
    const rule = ruled.get(t);
    if (rule !== undefined) return rule;
  }
  return undefined;
}

function cohortMembers(ruled: ReadonlyMap<string, QuotaRule>, parent: QuotaRule): QuotaRule[] {
  return [...ruled.values()].filter((r) => cohortParent(ruled, r.tenant)?.tenant === parent.tenant);
}

const nominalMilli = (r: QuotaRule): number => r.nominal * MILLI;
const borrowMilli = (r: QuotaRule): number => (r.borrowingLimit === null ? Infinity : r.borrowingLimit * MILLI);
const lendMilli = (r: QuotaRule): number => Math.min(nominalMilli(r), r.lendingLimit === null ? Infinity : r.lendingLimit * MILLI);
const guaranteedMilli = (r: QuotaRule): number => nominalMilli(r) - lendMilli(r);

/** What the cohort under `parent` can lend: members' lendable nominal plus the parent's unassigned nominal. */
function cohortPoolMilli(parent: QuotaRule, members: readonly QuotaRule[]): number {
  const lendable = members.reduce((s, m) => s + lendMilli(m), 0);
  const assigned = members.reduce((s, m) => s + nominalMilli(m), 0);
  return lendable + Math.max(0, nominalMilli(parent) - assigned);
}

function cohortPoolUse(members: readonly QuotaRule[], used: (r: QuotaRule) => number): number {
  return members.reduce((s, m) => s + Math.max(0, used(m) - guaranteedMilli(m)), 0);
}

function assertRequestMilli(milli: number): void {
  if (!Number.isSafeInteger(milli) || milli <= 0) {
    throw new Error(`quota request must be a positive integer number of milli-devices, got ${milli}`);
  }
}

export function checkQuota(rules: readonly QuotaRule[], usage: QuotaUsage, tenant: string, type: string, milli: number): QuotaDecision {
  assertTenantPath(tenant, 'tenant');
  assertType(type, 'accelerator type');
  assertRequestMilli(milli);
  const ruled = rulesForType(rules, type);
  const path = pathRules(ruled, tenant);
  if (path.length === 0) return { ok: true, charge: [] };

  const onPath = new Set(path.map((r) => r.tenant));
  const before = (r: QuotaRule): number => usage.get(quotaKey(r.tenant, type)) ?? 0;
  const after = (r: QuotaRule): number => before(r) + (onPath.has(r.tenant) ? milli : 0);

  for (const node of path) {
    const parent = cohortParent(ruled, node.tenant);
    const n = nominalMilli(node);
    const used = formatDevices(before(node));
    if (parent === undefined) {
      if (after(node) > n) {
        return {
          ok: false,
          reason: `over quota: ${node.tenant} uses ${used} of nominal ${formatDevices(n)} ${type} and has no cohort to borrow from`,
        };
      }
      continue;
    }
    const b = borrowMilli(node);
    if (after(node) > n + b) {
      return {
        ok: false,
        reason: `over quota: ${node.tenant} uses ${used} of nominal ${formatDevices(n)} ${type}, borrowing limit ${formatDevices(b)} reached`,
      };
    }
    const members = cohortMembers(ruled, parent);
    const pool = cohortPoolMilli(parent, members);
    const useBefore = cohortPoolUse(members, before);
    const useAfter = cohortPoolUse(members, after);
    if (useAfter > pool) {
      const need = formatDevices(useAfter - useBefore);
      const idle = formatDevices(Math.max(0, pool - useBefore));
      return {
        ok: false,
        reason: `over quota: ${node.tenant} would borrow ${need} ${type} but cohort ${parent.tenant} has ${idle} idle to lend`,
      };
    }
  }
  return { ok: true, charge: path.map((r) => quotaKey(r.tenant, type)) };
}

/** The quota keys a transaction must lock to decide `checkQuota` for this tenant and type: the rules on the path plus every member of each cohort it is checked against, sorted (for deadlock-free locking). */
export function quotaKeysFor(rules: readonly QuotaRule[], tenant: string, type: string): string[] {
  assertTenantPath(tenant, 'tenant');
  assertType(type, 'accelerator type');
  const ruled = rulesForType(rules, type);
  const keys = new Set<string>();
  for (const node of pathRules(ruled, tenant)) {
    keys.add(quotaKey(node.tenant, type));
    const parent = cohortParent(ruled, node.tenant);
    if (parent !== undefined) for (const m of cohortMembers(ruled, parent)) keys.add(quotaKey(m.tenant, type));
  }
  // Plain code-unit order, the same in every process and locale.
  return [...keys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Adds `milli` (may be negative for a release) to each charged key in place. */
export function applyCharge(usage: Map<string, number>, charge: readonly string[], milli: number): void {
  if (!Number.isSafeInteger(milli)) throw new Error(`quota charge must be an integer number of milli-devices, got ${milli}`);
  const next = new Map<string, number>();
  for (const key of charge) next.set(key, (next.get(key) ?? usage.get(key) ?? 0) + milli);
  // Check everything before writing anything, so a bad release leaves usage untouched.
  for (const [key, value] of next) {
    if (value < 0) {
      throw new Error(
        `applying ${formatDevices(milli)} devices to ${key} would make its usage negative (${formatDevices(value)}); a release must not exceed what was charged`,
      );
    }
  }
  for (const [key, value] of next) usage.set(key, value);
}

/** Usage limit of a rule in milli-devices for display and invariant checks: (nominal + borrowingLimit) * 1000, or Infinity. A node without a cohort parent is further held to its nominal. */
export function usageLimitMilli(rule: QuotaRule): number {
  return rule.borrowingLimit === null ? Infinity : (rule.nominal + rule.borrowingLimit) * MILLI;
}

/** One line for operators, e.g. "acme/a uses 64 of nominal 64 H100 (borrowing limit 16)". */
export function describeUsage(rule: QuotaRule, usedMilli: number): string {
  const limits = [rule.borrowingLimit === null ? 'no borrowing limit' : `borrowing limit ${formatDevices(rule.borrowingLimit * MILLI)}`];
  if (rule.lendingLimit !== null) limits.push(`lending limit ${formatDevices(rule.lendingLimit * MILLI)}`);
  return `${rule.tenant} uses ${formatDevices(usedMilli)} of nominal ${formatDevices(rule.nominal * MILLI)} ${rule.acceleratorType} (${limits.join(', ')})`;
}
