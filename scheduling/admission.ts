// Admission rules: whether a tenant may submit this job at all. The policy is a row per tenant
// (active flag, allowed tiers, allowed accelerator types, largest job), inherited down the tenant
// tree: the nearest tenant that sets a field decides. A tenant must be registered and active, and
// so must its ancestors. Pure: the caller loads the rows of the tenant's chain.
import type { JobSpec } from '../api/types';
import { tenantChain } from '../api/tenants';
import { formatDevices } from '../api/units';
import { requestMilli } from './geometry';

/**
 * Where a job may run, from its `allowedRegions`: whether at home, and the problems with regions
 * it names that are neither home nor a peer. `region` is home; `peers` the configured peers.
 */
export function regionRules(
  spec: Pick<JobSpec, 'allowedRegions'>,
  region: string,
  peers: readonly string[],
): { home: boolean; problems: string[] } {
  if (!spec.allowedRegions) return { home: true, problems: [] };
  const unknown = spec.allowedRegions.filter((r) => r !== region && !peers.includes(r));
  const problems = unknown.length
    ? [
        `allowedRegions: ${unknown.join(', ')} ${unknown.length === 1 ? 'is' : 'are'} neither this region (${region}) nor one of its peers (${peers.join(', ') || 'none'})`,
      ]
    : [];
  return { home: spec.allowedRegions.includes(region), problems };
}

export interface TenantPolicyRow {
  path: string;
  active: boolean;
  allowed_tiers: string[] | null;
  allowed_types: string[] | null;
  max_devices_per_job: number | null;
}

/**
 * The reasons a job is refused admission in `region`, given the policy rows found for its tenant
 * chain (any order; missing ancestors are allowed). Empty means admitted.
 */
export function admissionProblems(spec: JobSpec, region: string, rows: readonly TenantPolicyRow[]): string[] {
  const byPath = new Map(rows.map((r) => [r.path, r]));
  const chain = tenantChain(spec.tenant);
  if (!byPath.has(spec.tenant)) return [`tenant: ${spec.tenant} is not a registered tenant`];
  const inactive = chain.find((p) => byPath.get(p)?.active === false);
  if (inactive) return [`tenant: ${inactive === spec.tenant ? spec.tenant : `${inactive} (parent of ${spec.tenant})`} is not active`];
  /** The nearest setting of a policy field, self first, with where it came from. */
  const nearest = <K extends 'allowed_tiers' | 'allowed_types' | 'max_devices_per_job'>(field: K) => {
    for (const p of chain) {
      const v = byPath.get(p)?.[field];
      if (v !== null && v !== undefined) return { value: v as NonNullable<TenantPolicyRow[K]>, from: p };
    }
    return undefined;
  };
  const problems: string[] = [];
  const tiers = nearest('allowed_tiers');
  if (tiers && !tiers.value.includes(spec.tier))
    problems.push(
      `tier: ${spec.tier} is not allowed for ${spec.tenant} (policy of ${tiers.from} allows ${tiers.value.join(', ') || 'none'})`,
    );
  const types = nearest('allowed_types');
  if (types) {
    const refused = spec.request.acceleratorTypes.filter((t) => !types.value.includes(t));
    if (refused.length)
      problems.push(
        `request.acceleratorTypes: ${refused.join(', ')} not allowed for ${spec.tenant} (policy of ${types.from} allows ${types.value.join(', ') || 'none'})`,
      );
  }
  const max = nearest('max_devices_per_job');
  const milli = requestMilli(spec.request);
  if (max && milli > max.value * 1000)
    problems.push(
      `request: ${formatDevices(milli)} devices exceed the limit of ${max.value} per job for ${spec.tenant} (policy of ${max.from})`,
    );
  return problems;
}
