// What a placement transaction reads before it decides: its jobs locked, their placements, the
// quota rules and locked usage rows, open reservations and nominations.
import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely';
import { PREPARED } from '../../db/connection';
import type { Database } from '../../db/schema';
import type { Placement, StoredJobState } from '../../api/types';
import { quotaKey, quotaKeysFor, validateQuotaRules, type QuotaRule } from '../../scheduling/quota';
import type { ActiveReservation } from '../../scheduling/reservations';
import type { CandidateRow } from './candidates';

type Trx = Transaction<Database>;

/** Placements held by these jobs, keyed `jobId@epoch`. */
export async function readPlacements(db: Kysely<Database> | Trx, jobIds: string[]): Promise<Map<string, Placement>> {
  if (!jobIds.length) return new Map();
  const rows = await db
    .selectFrom('allocations as a')
    .innerJoin('nodes as n', 'n.id', 'a.node_id')
    .select(['a.job_id', 'a.epoch', 'a.worker_idx', 'a.node_id', 'n.name', 'n.accelerator_type', 'a.device_idx', 'a.milli'])
    .where('a.job_id', 'in', jobIds)
    .orderBy('a.job_id')
    .orderBy('a.worker_idx')
    .orderBy('a.device_idx')
    .execute();
  return groupPlacements(rows);
}

/** The quota rules and the locked usage rows a placement transaction decides against. */
export interface LockedQuota {
  rules: QuotaRule[];
  usage: Map<string, number>;
  /** Usage keys this transaction changed (written by `writePlacements`). */
  dirty: Set<string>;
}

export interface LockedJob {
  id: string;
  epoch: number;
  tenant: string;
  tier: string;
  state: StoredJobState;
  /** Seconds since the job was submitted, as the lock was taken (for the placement-latency metric). */
  waited_s: number;
}

/** What a placement transaction decides against, read in the round trip that locks its jobs. */
export interface PlacementContext {
  jobs: LockedJob[];
  placements: Map<string, Placement>;
  rules: QuotaRule[];
  reservations: ActiveReservation[];
  nominations: Array<{ node_id: number; preemptor: string }>;
  /** The rows of the candidate read given to `lockAndRead`, if any (read after the jobs were locked). */
  candidates: CandidateRow[];
}

interface PlacementRow {
  job_id: string;
  epoch: number;
  worker_idx: number;
  node_id: number;
  name: string;
  accelerator_type: string;
  device_idx: number;
  milli: number;
}

/**
 * Locks the batch's jobs (in id order) and reads, in the same statement, their placements, the
 * small tables every placement checks (quota rules, open reservations, nominations) and, when
 * given, the first candidate pages (`candidatePagesQuery`), locked after the jobs. Prepared: every
 * table is reached by key or through a fit index whatever the values, so the generic plan is the
 * custom one, and the statement is planned once per connection. A statement
 * reads the snapshot it started with; if a job row changed between that snapshot and its lock
 * (another placement or release of it committed meanwhile), the read runs again — the rows are
 * ours by then, so the second read is current. `onConflict` hears of each such read (a metric).
 */
export async function lockAndRead(
  trx: Trx,
  ids: string[],
  onConflict?: () => void,
  candidates?: RawBuilder<CandidateRow>,
): Promise<PlacementContext> {
  for (let attempt = 1; ; attempt++) {
    const r = await sql<{
      jobs: LockedJob[];
      moved: number;
      placements: PlacementRow[];
      rules: QuotaRule[];
      reservations: Array<Omit<ActiveReservation, 'endsAt'> & { endsAt: string }>;
      nominations: PlacementContext['nominations'];
      candidates: CandidateRow[];
    }>`${sql.raw(PREPARED)}
      WITH seen AS (SELECT id, xmin::text AS v FROM jobs WHERE id = ANY(${ids}::text[])),
      locked AS (SELECT id, epoch, tenant, tier, state, created_at, xmin::text AS v FROM jobs WHERE id = ANY(${ids}::text[]) ORDER BY id FOR UPDATE)
      SELECT
        coalesce((SELECT json_agg(json_build_object('id', id, 'epoch', epoch, 'tenant', tenant, 'tier', tier, 'state', state,
          'waited_s', extract(epoch FROM clock_timestamp() - created_at))) FROM locked), '[]') AS jobs,
        (SELECT count(*)::int FROM locked l JOIN seen s USING (id) WHERE l.v <> s.v) AS moved,
        coalesce((SELECT json_agg(json_build_object('job_id', a.job_id, 'epoch', a.epoch, 'worker_idx', a.worker_idx, 'node_id', a.node_id,
            'name', n.name, 'accelerator_type', n.accelerator_type, 'device_idx', a.device_idx, 'milli', a.milli)
            ORDER BY a.job_id, a.worker_idx, a.device_idx)
          FROM allocations a JOIN nodes n ON n.id = a.node_id WHERE a.job_id = ANY(${ids}::text[])), '[]') AS placements,
        coalesce((SELECT json_agg(json_build_object('tenant', tenant, 'acceleratorType', accelerator_type, 'nominal', nominal,
          'borrowingLimit', borrowing_limit, 'lendingLimit', lending_limit)) FROM quotas), '[]') AS rules,
        coalesce((SELECT json_agg(json_build_object('id', id, 'tenant', tenant, 'acceleratorType', accelerator_type, 'devices', devices,
          'endsAt', ends_at)) FROM reservations WHERE state = 'active'), '[]') AS reservations,
        coalesce((SELECT json_agg(json_build_object('node_id', node_id, 'preemptor', preemptor)) FROM nominations), '[]') AS nominations,
        -- Last, so the candidate nodes are locked after the jobs, as in a transaction that reads them next.
        ${candidates ? sql`coalesce((SELECT json_agg(c) FROM (${candidates}) c), '[]')` : sql`'[]'::json`} AS candidates`.execute(trx);
    const row = r.rows[0];
    if (row.moved > 0) onConflict?.();
    if (row.moved > 0 && attempt < 10) continue;
    if (row.moved > 0) throw new Error(`placement: jobs ${ids.join(', ')} kept changing under their lock (10 reads)`);
    // The quota table is operators' data: a malformed rule stops placements with an error that
    // names it (the activity retries until it is fixed), rather than deciding on it.
    validateQuotaRules(row.rules);
    return {
      jobs: row.jobs,
      placements: groupPlacements(row.placements),
      rules: row.rules,
      nominations: row.nominations,
      reservations: row.reservations.map((x) => ({ ...x, endsAt: new Date(x.endsAt) })),
      candidates: row.candidates,
    };
  }
}

function groupPlacements(rows: PlacementRow[]): Map<string, Placement> {
  const out = new Map<string, Placement>();
  for (const r of rows) {
    const key = `${r.job_id}@${r.epoch}`;
    let p = out.get(key);
    if (!p) out.set(key, (p = { jobId: r.job_id, epoch: r.epoch, acceleratorType: r.accelerator_type, workers: [] }));
    let w = p.workers.find((x) => x.workerIdx === r.worker_idx);
    if (!w) p.workers.push((w = { workerIdx: r.worker_idx, nodeId: r.node_id, nodeName: r.name, deviceIdx: [], milli: r.milli }));
    w.deviceIdx.push(r.device_idx);
  }
  return out;
}

export async function lockQuota(trx: Trx, rules: QuotaRule[], wants: Array<{ tenant?: string; types: string[] }>): Promise<LockedQuota> {
  const usage = new Map<string, number>();
  const dirty = new Set<string>();
  const keys = new Set<string>();
  if (rules.length)
    for (const w of wants) if (w.tenant) for (const t of w.types) for (const k of quotaKeysFor(rules, w.tenant, t)) keys.add(k);
  if (keys.size) {
    const locked = await sql<{ tenant: string; accelerator_type: string; used_milli: string }>`
      SELECT tenant, accelerator_type, used_milli FROM quotas
      WHERE tenant || '|' || accelerator_type = ANY(${[...keys].sort()}::text[])
      ORDER BY tenant, accelerator_type FOR UPDATE`.execute(trx);
    for (const r of locked.rows) usage.set(quotaKey(r.tenant, r.accelerator_type), Number(r.used_milli));
  }
  return {
    rules,
    usage,
    dirty,
  };
}
