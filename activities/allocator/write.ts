// The one statement that writes a placement transaction's decisions.
import { sql, type Insertable, type Transaction } from 'kysely';
import type { Database } from '../../db/schema';
import { PREPARED } from '../../db/connection';
import type { LockedQuota } from './context';

type Trx = Transaction<Database>;

/**
 * Everything a placement transaction writes, in one statement: the allocation rows (the trigger
 * takes the devices, CPU and memory, and the CHECKs refuse oversubscription), the jobs' new
 * epochs, placed states, quota charges and waiting reasons, the nominations the placed jobs no
 * longer need, and the quota usage.
 */
export async function writePlacements(
  trx: Trx,
  w: {
    inserts: Array<Insertable<Database['allocations']>>;
    placed: Array<{ id: string; charge: string[]; milli: number }>;
    waiting: Array<[string, string]>;
    bumps: Array<[string, number]>;
    quota: LockedQuota;
  },
): Promise<void> {
  const jobs = new Map<
    string,
    { epoch: number | null; placed: boolean; charge: string | null; milli: number | null; reason: string | null }
  >();
  const job = (id: string) => {
    let j = jobs.get(id);
    if (!j) jobs.set(id, (j = { epoch: null, placed: false, charge: null, milli: null, reason: null }));
    return j;
  };
  for (const [id, epoch] of w.bumps) job(id).epoch = epoch;
  for (const p of w.placed) Object.assign(job(p.id), { placed: true, charge: p.charge.join(','), milli: p.milli });
  for (const [id, reason] of w.waiting) job(id).reason = reason;
  const quotaKeys = [...w.quota.dirty];
  if (!jobs.size && !w.inserts.length && !quotaKeys.length) return;
  const ids = [...jobs.keys()];
  const rows = [...jobs.values()];
  const col = <K extends keyof Insertable<Database['allocations']>>(k: K) => w.inserts.map((i) => i[k] ?? 0);
  // Prepared: every table it touches is reached by key from its parameter arrays.
  await sql`${sql.raw(PREPARED)}
    WITH ins AS (
      INSERT INTO allocations (job_id, epoch, node_id, device_idx, milli, worker_idx, cpu_milli, memory_mib)
      SELECT * FROM unnest(${col('job_id')}::text[], ${col('epoch')}::int[], ${col('node_id')}::int[], ${col('device_idx')}::int[],
        ${col('milli')}::int[], ${col('worker_idx')}::int[], ${col('cpu_milli')}::int[], ${col('memory_mib')}::int[])
      RETURNING 1),
    job AS (
      UPDATE jobs AS j SET
        epoch = coalesce(u.epoch, j.epoch),
        state = CASE WHEN u.placed THEN 'placed' ELSE j.state END,
        waiting_reason = CASE WHEN u.placed THEN NULL ELSE coalesce(u.reason, j.waiting_reason) END,
        placed_at = CASE WHEN u.placed THEN now() ELSE j.placed_at END,
        quota_charge = CASE WHEN NOT u.placed THEN j.quota_charge WHEN u.charge = '' THEN NULL ELSE string_to_array(u.charge, ',') END,
        quota_milli = CASE WHEN u.placed THEN u.milli ELSE j.quota_milli END,
        updated_at = now()
      FROM unnest(${ids}::text[], ${rows.map((r) => r.epoch)}::int[], ${rows.map((r) => r.placed)}::bool[], ${rows.map((r) => r.charge)}::text[],
        ${rows.map((r) => r.milli)}::int[], ${rows.map((r) => r.reason)}::text[]) AS u(id, epoch, placed, charge, milli, reason)
      WHERE j.id = u.id AND (u.placed OR u.epoch IS NOT NULL OR j.waiting_reason IS DISTINCT FROM u.reason)
      RETURNING 1),
    nom AS (DELETE FROM nominations WHERE preemptor = ANY(${w.placed.map((p) => p.id)}::text[]) RETURNING 1),
    quota AS (
      UPDATE quotas AS q SET used_milli = u.used
      FROM unnest(${quotaKeys}::text[], ${quotaKeys.map((k) => w.quota.usage.get(k) ?? 0)}::bigint[]) AS u(k, used)
      WHERE q.tenant || '|' || q.accelerator_type = u.k
      RETURNING 1)
    SELECT (SELECT count(*) FROM ins) AS allocations`.execute(trx);
}
