// Admission's I/O: loads the policy rows of a tenant's chain (the `tenants` table, read on every
// admission, so an operator's change applies to the next submission without a restart) and whether
// anyone waits in the region, in one round trip. The decision is `scheduling/admission`.
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema';
import { tenantChain } from '../api/tenants';
import type { TenantPolicyRow } from '../scheduling/admission';

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
