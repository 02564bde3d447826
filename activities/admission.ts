// Admission: whether a tenant may submit this job at all. The policy lives in the `tenants` table
// (active flag, allowed tiers, allowed accelerator types, largest job), inherited down the tenant
// tree, and is read on every admission, so an operator's change applies to the next submission
// without a restart. `admissionProblems` is the pure decision; `admit` loads the tenant chain.
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema';
import type { JobSpec } from '../api/types';
import { requestMilli } from './allocator';

export interface TenantPolicyRow {
  path: string;
  active: boolean;
  allowed_tiers: string[] | null;
  allowed_types: string[] | null;
  max_devices_per_job: number | null;
}

/** Every ancestor path of a tenant, itself first: `a/b/c` → [`a/b/c`, `a/b`, `a`]. */
export function tenantChain(tenant: string): string[] {
  const parts = tenant.split('/');
  return parts.map((_, i) => parts.slice(0, parts.length - i).join('/'));
}

const devices = (milli: number): string => String(Math.round(milli) / 1000);

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
  if (spec.allowedRegions && !spec.allowedRegions.includes(region))
    problems.push(`allowedRegions: this is region ${region}, not one of ${spec.allowedRegions.join(', ')}`);
  const tiers = nearest('allowed_tiers');
  if (tiers && !tiers.value.includes(spec.tier))
    problems.push(`tier: ${spec.tier} is not allowed for ${spec.tenant} (policy of ${tiers.from} allows ${tiers.value.join(', ') || 'none'})`);
  const types = nearest('allowed_types');
  if (types) {
    const refused = spec.request.acceleratorTypes.filter((t) => !types.value.includes(t));
    if (refused.length)
      problems.push(`request.acceleratorTypes: ${refused.join(', ')} not allowed for ${spec.tenant} (policy of ${types.from} allows ${types.value.join(', ') || 'none'})`);
  }
  const max = nearest('max_devices_per_job');
  const milli = requestMilli(spec.request);
  if (max && milli > max.value * 1000)
    problems.push(`request: ${devices(milli)} devices exceed the limit of ${max.value} per job for ${spec.tenant} (policy of ${max.from})`);
  return problems;
}

/**
 * What an admission decides on, in one round trip: the tenant chain's policy rows, and whether
 * anyone other than `jobId` waits in `region` (then the job must queue behind them rather than be
 * placed on admission).
 */
export async function loadAdmissionContext(
  db: Kysely<Database>,
  tenant: string,
  region: string,
  jobId: string,
): Promise<{ policy: TenantPolicyRow[]; queueAhead: boolean }> {
  const r = await sql<{ policy: TenantPolicyRow[]; queue_ahead: boolean }>`
    SELECT
      coalesce((SELECT json_agg(json_build_object('path', path, 'active', active, 'allowed_tiers', allowed_tiers,
          'allowed_types', allowed_types, 'max_devices_per_job', max_devices_per_job))
        FROM tenants WHERE path = ANY(${tenantChain(tenant)}::text[])), '[]') AS policy,
      EXISTS (SELECT 1 FROM jobs WHERE region = ${region} AND state = 'waiting' AND id <> ${jobId}) AS queue_ahead`.execute(db);
  return { policy: r.rows[0].policy, queueAhead: r.rows[0].queue_ahead };
}
