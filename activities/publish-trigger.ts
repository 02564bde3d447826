// Publishing on large changes. A region's summary goes to its peers every period (the exchange
// workflow); when its free capacity moves a lot in between (a large job ends, a burst is placed,
// a node comes or goes), the peers should not wait for the period. After each scheduling cycle and
// each release the region compares its free devices per type with the summary it last published
// (`largeChange`) and, if they moved a lot, publishes at once from this process, beside the
// exchange (which keeps its period): at most one publication in flight per region and one per
// EARLY_GAP_MS. Versions come from one sequence, so a peer keeps whichever is newest. Per worker
// process: one that has not published yet leaves it to the period. (Not through the exchange
// workflow: short workflow timers among frequent signals were seen to fire late on a loaded
// server, and a stalled exchange lets the peers' copies of its summary expire.)
import { sql } from 'kysely';
import type { InventorySummary } from '../api/peers';
import { largeChange, type FreeByType } from '../scheduling/handoff';
import type { Region } from './region';

/** However large the changes, early publications of a region are at least this far apart. */
export const EARLY_GAP_MS = 500;

interface RegionState {
  /** Free and total devices by type in the summary this process last published. */
  published?: FreeByType;
  publish?: () => Promise<unknown>;
  inFlight: boolean;
  lastEarlyAt: number;
  early: number;
  lastReason?: string;
}
const regions = new Map<string, RegionState>();
const stateOf = (region: string): RegionState => {
  let s = regions.get(region);
  if (!s) regions.set(region, (s = { inFlight: false, lastEarlyAt: -Infinity, early: 0 }));
  return s;
};

/** The publication this process makes for `region` (the exchange activity's own). */
export function registerPublisher(region: string, publish: () => Promise<unknown>): void {
  stateOf(region).publish = publish;
}

export function notePublished(summary: InventorySummary): void {
  stateOf(summary.region).published = new Map(
    Object.entries(summary.types).map(([type, t]) => [type, { free: t.freeWhole, total: t.totalDevices }]),
  );
}

/** Early publications this process made for `region`, and the last reason. */
export function earlyPublications(region: string): { count: number; lastReason?: string } {
  const s = stateOf(region);
  return { count: s.early, ...(s.lastReason ? { lastReason: s.lastReason } : {}) };
}

/** Publishes the region's summary now if its free capacity moved a lot; the reason, if it did. */
export async function publishIfLargeChange(region: Region, now = Date.now()): Promise<string | undefined> {
  const s = stateOf(region.name);
  if (!region.peers.names.length || !s.published || !s.publish || s.inFlight || now - s.lastEarlyAt < EARLY_GAP_MS) return undefined;
  const rows = await sql<{ type: string; free: string; total: string }>`
    SELECT accelerator_type AS type, coalesce(sum(free_whole) FILTER (WHERE state = 'ready'), 0)::bigint AS free,
      sum(device_count)::bigint AS total
    FROM nodes WHERE state <> 'down' GROUP BY accelerator_type`.execute(region.db);
  const current: FreeByType = new Map(rows.rows.map((r) => [r.type, { free: Number(r.free), total: Number(r.total) }]));
  const reason = largeChange(s.published, current);
  if (!reason || s.inFlight) return undefined;
  s.inFlight = true;
  s.lastEarlyAt = now;
  try {
    await s.publish();
    s.early++;
    s.lastReason = reason;
    return reason;
  } finally {
    s.inFlight = false;
  }
}
