// The inventory exchange's I/O: this region's summary for its peers (read from its own database),
// and the peers' summaries it keeps (the newest version of each, in its own database).
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema';
import { TIERS, type Tier } from '../api/types';
import { validateSummary, type InventorySummary, type TypeSummary } from '../api/peers';
import type { HeldSummary, InFlight } from '../scheduling/handoff';

/** The milli-devices a job row's spec asks for in all (workers × devices, or × the share). */
export const SPEC_MILLI = sql<string>`((spec->'request'->>'workers')::bigint * CASE WHEN (spec->'request'->>'devicesPerWorker')::int > 0
  THEN (spec->'request'->>'devicesPerWorker')::bigint * 1000 ELSE coalesce((spec->'request'->>'milliPerWorker')::bigint, 0) END)`;

/** This region's summary: per accelerator type, free capacity by topology level, the largest node, and the queue by tier. */
export async function summarizeInventory(db: Kysely<Database>, region: string): Promise<InventorySummary> {
  const capacity = await sql<{
    type: string;
    free_milli: string;
    free_whole: string;
    node_free: number;
    rack_free: string;
    pod_free: string;
    devices: number;
    total: string;
    cpu: number | null;
    memory: number | null;
  }>`
    WITH live AS (SELECT * FROM nodes WHERE state <> 'down'),
    ready AS (SELECT * FROM live WHERE state = 'ready'),
    racks AS (SELECT accelerator_type, max(s) AS rack_free FROM (
      SELECT accelerator_type, sum(free_whole) AS s FROM ready GROUP BY accelerator_type, pod, rack) r GROUP BY accelerator_type),
    pods AS (SELECT accelerator_type, max(s) AS pod_free FROM (
      SELECT accelerator_type, sum(free_whole) AS s FROM ready GROUP BY accelerator_type, pod) p GROUP BY accelerator_type)
    SELECT l.accelerator_type AS type,
      coalesce(sum((SELECT sum(f) FROM unnest(l.free_milli) AS f)) FILTER (WHERE l.state = 'ready'), 0)::bigint AS free_milli,
      coalesce(sum(l.free_whole) FILTER (WHERE l.state = 'ready'), 0)::bigint AS free_whole,
      coalesce(max(l.free_whole) FILTER (WHERE l.state = 'ready'), 0) AS node_free,
      coalesce(max(r.rack_free), 0)::bigint AS rack_free,
      coalesce(max(p.pod_free), 0)::bigint AS pod_free,
      max(l.device_count) AS devices,
      sum(l.device_count)::bigint AS total,
      CASE WHEN bool_or(l.cpu_milli IS NULL) THEN NULL ELSE max(l.cpu_milli) END AS cpu,
      CASE WHEN bool_or(l.memory_mib IS NULL) THEN NULL ELSE max(l.memory_mib) END AS memory
    FROM live l LEFT JOIN racks r USING (accelerator_type) LEFT JOIN pods p USING (accelerator_type)
    GROUP BY l.accelerator_type`.execute(db);
  // Copies admitted and waiting for their home's decision count as queued: most will be. Each job
  // counts once, under its first type (a peer weighs a job that accepts several types against the
  // sum over them: `choosePeer`).
  const queue = await sql<{ type: string; tier: Tier; jobs: number; milli: string; oldest: Date }>`
    SELECT spec->'request'->'acceleratorTypes'->>0 AS type, tier, count(*)::int AS jobs, sum(${SPEC_MILLI})::bigint AS milli,
      min(enqueued_at) AS oldest
    FROM jobs WHERE state IN ('waiting', 'pending') GROUP BY 1, 2`.execute(db);
  const version = await sql<{ v: string }>`SELECT nextval('summary_version') AS v`.execute(db);
  const now = Date.now();
  const types: Record<string, TypeSummary> = {};
  const emptyQueue = () => Object.fromEntries(TIERS.map((t) => [t, { jobs: 0, milli: 0, oldestWaitMs: 0 }])) as TypeSummary['queue'];
  for (const c of capacity.rows)
    types[c.type] = {
      freeMilli: Number(c.free_milli),
      freeWhole: Number(c.free_whole),
      totalDevices: Number(c.total),
      largestFree: { node: Number(c.node_free), rack: Number(c.rack_free), pod: Number(c.pod_free) },
      largestNode: { devices: Number(c.devices), cpuMilli: c.cpu, memoryMib: c.memory },
      queue: emptyQueue(),
      scalableDevices: 0,
    };
  for (const q of queue.rows) {
    const t = types[q.type];
    if (t) t.queue[q.tier] = { jobs: q.jobs, milli: Number(q.milli), oldestWaitMs: Math.max(0, now - new Date(q.oldest).getTime()) };
  }
  return { region, version: Number(version.rows[0].v), generatedAt: new Date(now).toISOString(), types };
}

/**
 * Keeps a peer's summary if it is newer than the one held. A malformed summary, one from a region
 * that is not a configured peer, or one not newer than the one held is refused with the reason,
 * and nothing changes.
 */
export async function storePeerSummary(
  db: Kysely<Database>,
  peers: readonly string[],
  summary: InventorySummary,
): Promise<{ stored: true; version: number } | { stored: false; reason: string }> {
  const problems = validateSummary(summary);
  if (problems.length) return { stored: false, reason: `summary refused: ${problems.join('; ')}` };
  if (!peers.includes(summary.region))
    return {
      stored: false,
      reason: `summary refused: region ${summary.region} is not a configured peer (peers: ${peers.join(', ') || 'none'})`,
    };
  const stored = await sql<{ version: string }>`
    INSERT INTO peer_summaries (region, version, received_at, summary) VALUES (${summary.region}, ${summary.version}, now(), ${JSON.stringify(summary)}::jsonb)
    ON CONFLICT (region) DO UPDATE SET version = excluded.version, received_at = excluded.received_at, summary = excluded.summary
    WHERE peer_summaries.version < excluded.version
    RETURNING version`.execute(db);
  if (!stored.rows.length) {
    const held = await db.selectFrom('peer_summaries').select('version').where('region', '=', summary.region).executeTakeFirst();
    return {
      stored: false,
      reason: `summary refused: version ${summary.version} from ${summary.region} is not newer than the version ${held?.version ?? '?'} held`,
    };
  }
  return { stored: true, version: Number(stored.rows[0].version) };
}

/** The peers' summaries held, with when each arrived. */
export async function readPeerSummaries(db: Kysely<Database>): Promise<Map<string, HeldSummary>> {
  const rows = await db.selectFrom('peer_summaries').select(['region', 'summary', 'received_at']).execute();
  return new Map(rows.map((r) => [r.region, { summary: r.summary, receivedAt: r.received_at.getTime() }]));
}

/**
 * What this region is handing to each peer, and what it handed after that peer's summary was made
 * (by the earlier of its stated time and its receipt), under the job's first acceptable type:
 * demand the summary cannot show yet (`InFlight` in scheduling/handoff.ts).
 */
export async function readInFlight(db: Kysely<Database>, held: ReadonlyMap<string, HeldSummary>): Promise<InFlight> {
  const since = new Map(
    [...held].map(([peer, h]) => [peer, Math.min(h.receivedAt, Date.parse(h.summary.generatedAt) || h.receivedAt)] as const),
  );
  if (!since.size) return new Map();
  const rows = await sql<{ peer: string; type: string; milli: string; at: Date; state: string }>`
    SELECT handoff_peer AS peer, spec->'request'->'acceleratorTypes'->>0 AS type, ${SPEC_MILLI} AS milli, updated_at AS at, state
    FROM jobs WHERE origin_region IS NULL
      AND (state = 'handing-off' OR (state = 'handed-off' AND updated_at >= ${new Date(Math.min(...since.values()))}))`.execute(db);
  const out = new Map<string, Map<string, number>>();
  for (const r of rows.rows) {
    const from = since.get(r.peer);
    // Still handing off: its copy may not have reached the peer when that summary was made, and it
    // counts whenever it was marked (marked just before the summary, it was missed by both).
    if (from === undefined || (r.state !== 'handing-off' && r.at.getTime() < from)) continue;
    const types = out.get(r.peer) ?? new Map<string, number>();
    types.set(r.type, (types.get(r.type) ?? 0) + Number(r.milli));
    out.set(r.peer, types);
  }
  return out;
}
