// Checks the inventory invariants against the database itself, for tests, soaks and operators.
import { sql, type Kysely } from 'kysely';
import type { Database } from './schema';

export interface Violation {
  rule: string;
  detail: string;
}

const LIVE_STATES = ['waiting', 'placed', 'running'];

export async function checkInvariants(db: Kysely<Database>): Promise<Violation[]> {
  const violations: Violation[] = [];
  // 1. No device is held beyond its whole share (two whole allocations, or shares over 1000).
  const over = await sql<{ node_id: number; device_idx: number; held: number }>`
    SELECT node_id, device_idx, sum(milli)::int AS held FROM allocations
    GROUP BY node_id, device_idx HAVING sum(milli) > 1000 OR (count(*) > 1 AND bool_or(milli = 1000))`.execute(db);
  for (const r of over.rows)
    violations.push({ rule: 'device-double-held', detail: `node ${r.node_id} device ${r.device_idx} holds ${r.held} milli` });
  // 2. A node's free share per device equals its capacity minus its allocations.
  const drift = await sql<{ id: number; device_idx: number; free: number; expected: number }>`
    SELECT n.id, d.i - 1 AS device_idx, n.free_milli[d.i] AS free,
           1000 - coalesce((SELECT sum(a.milli) FROM allocations a WHERE a.node_id = n.id AND a.device_idx = d.i - 1), 0)::int AS expected
    FROM nodes n CROSS JOIN LATERAL generate_subscripts(n.free_milli, 1) AS d(i)
    WHERE n.free_milli[d.i] <> 1000 - coalesce((SELECT sum(a.milli) FROM allocations a WHERE a.node_id = n.id AND a.device_idx = d.i - 1), 0)`.execute(
    db,
  );
  for (const r of drift.rows)
    violations.push({ rule: 'free-capacity-drift', detail: `node ${r.id} device ${r.device_idx} free ${r.free}, expected ${r.expected}` });
  // 2b. A node's free host CPU and memory equal its totals minus what its allocations hold
  // (both NULL on a node that does not track them).
  const hostDrift = await sql<{
    id: number;
    free_cpu: number | null;
    expected_cpu: number | null;
    free_mem: number | null;
    expected_mem: number | null;
  }>`
    SELECT n.id, n.free_cpu_milli AS free_cpu, n.cpu_milli - h.cpu AS expected_cpu, n.free_memory_mib AS free_mem, n.memory_mib - h.mem AS expected_mem
    FROM nodes n CROSS JOIN LATERAL (
      SELECT coalesce(sum(a.cpu_milli), 0)::int AS cpu, coalesce(sum(a.memory_mib), 0)::int AS mem FROM allocations a WHERE a.node_id = n.id) h
    WHERE n.free_cpu_milli IS DISTINCT FROM n.cpu_milli - h.cpu OR n.free_memory_mib IS DISTINCT FROM n.memory_mib - h.mem`.execute(db);
  for (const r of hostDrift.rows)
    violations.push({
      rule: 'host-capacity-drift',
      detail: `node ${r.id} free CPU ${r.free_cpu ?? 'untracked'} milli (expected ${r.expected_cpu ?? 'untracked'}), free memory ${r.free_mem ?? 'untracked'} MiB (expected ${r.expected_mem ?? 'untracked'})`,
    });
  // 3. Every allocation belongs to a live job at that job's current epoch.
  const orphans = await sql<{ job_id: string; epoch: number; state: string | null; job_epoch: number | null }>`
    SELECT DISTINCT a.job_id, a.epoch, j.state, j.epoch AS job_epoch FROM allocations a LEFT JOIN jobs j ON j.id = a.job_id
    WHERE j.id IS NULL OR j.state <> ALL (${LIVE_STATES}::text[]) OR j.epoch <> a.epoch`.execute(db);
  for (const r of orphans.rows)
    violations.push({
      rule: 'allocation-without-live-job',
      detail: `job ${r.job_id} epoch ${r.epoch} is ${r.state ?? 'unknown'} at epoch ${r.job_epoch ?? '-'}`,
    });
  // 4. Each quota rule's usage equals what the live charges on it add up to.
  const quotaDrift = await sql<{ tenant: string; accelerator_type: string; used: string; charged: string }>`
    SELECT q.tenant, q.accelerator_type, q.used_milli AS used,
           coalesce((SELECT sum(j.quota_milli) FROM jobs j WHERE (q.tenant || '|' || q.accelerator_type) = ANY(j.quota_charge)), 0) AS charged
    FROM quotas q
    WHERE q.used_milli <> coalesce((SELECT sum(j.quota_milli) FROM jobs j WHERE (q.tenant || '|' || q.accelerator_type) = ANY(j.quota_charge)), 0)`.execute(
    db,
  );
  for (const r of quotaDrift.rows)
    violations.push({
      rule: 'quota-usage-drift',
      detail: `${r.tenant} ${r.accelerator_type} records ${r.used} milli, charges add up to ${r.charged}`,
    });
  // 5. No quota node uses more than nominal + borrowing limit (nominal alone at the top of a tree).
  const overQuota = await sql<{ tenant: string; accelerator_type: string; used: string; cap: string }>`
    SELECT q.tenant, q.accelerator_type, q.used_milli AS used,
           CASE WHEN EXISTS (SELECT 1 FROM quotas p WHERE p.accelerator_type = q.accelerator_type AND q.tenant LIKE p.tenant || '/%')
                THEN (q.nominal + q.borrowing_limit)::bigint * 1000 ELSE q.nominal::bigint * 1000 END AS cap
    FROM quotas q
    WHERE q.used_milli > CASE WHEN EXISTS (SELECT 1 FROM quotas p WHERE p.accelerator_type = q.accelerator_type AND q.tenant LIKE p.tenant || '/%')
                              THEN (q.nominal::bigint + coalesce(q.borrowing_limit, 1000000000)) * 1000 ELSE q.nominal::bigint * 1000 END`.execute(
    db,
  );
  for (const r of overQuota.rows)
    violations.push({
      rule: 'quota-exceeded',
      detail: `${r.tenant} ${r.accelerator_type} uses ${r.used} milli, limit ${r.cap ?? 'unbounded'}`,
    });
  // 6. Capacity is nominated only to a job still waiting for it.
  const dangling = await sql<{ preemptor: string; state: string | null }>`
    SELECT DISTINCT m.preemptor, j.state FROM nominations m LEFT JOIN jobs j ON j.id = m.preemptor
    WHERE j.state IS DISTINCT FROM 'waiting'`.execute(db);
  for (const r of dangling.rows)
    violations.push({ rule: 'nomination-dangling', detail: `capacity nominated to ${r.preemptor}, which is ${r.state ?? 'unknown'}` });
  return violations;
}
