// Publishing on large changes. A region's summary goes to its peers every period (the exchange
// workflow); when its free capacity moves a lot in between (a large job ends, a burst is placed,
// a node comes or goes), the peers should not wait for the period: after each scheduling cycle
// (every release and submission kicks one) the region compares its free devices per type with the
// summary it last published (`largeChange`) and, if they moved a lot, asks its exchange to publish
// now; so does every release (a job ending frees room whether or not anything waits to kick a cycle). The comparison is per worker process: a worker that has not published itself leaves it to
// the period.
import { sql } from 'kysely';
import type { InventorySummary } from '../api/peers';
import { peerExchangeWorkflowId } from '../api/ids';
import { publishNowSignal } from '../api/messages';
import { largeChange, type FreeByType } from '../scheduling/handoff';
import type { Region } from './region';

/** Per region: free and total devices by type in the summary this process last published (or asked to publish). */
const published = new Map<string, FreeByType>();

export function notePublished(summary: InventorySummary): void {
  published.set(
    summary.region,
    new Map(Object.entries(summary.types).map(([type, t]) => [type, { free: t.freeWhole, total: t.totalDevices }])),
  );
}

/** Asks the region's exchange to publish now if its free capacity moved a lot; the reason, if it asked. */
export async function publishIfLargeChange(region: Region): Promise<string | undefined> {
  const last = published.get(region.name);
  if (!region.peers.names.length || !last) return undefined;
  const rows = await sql<{ type: string; free: string; total: string }>`
    SELECT accelerator_type AS type, coalesce(sum(free_whole) FILTER (WHERE state = 'ready'), 0)::bigint AS free,
      sum(device_count)::bigint AS total
    FROM nodes WHERE state <> 'down' GROUP BY accelerator_type`.execute(region.db);
  const now: FreeByType = new Map(rows.rows.map((r) => [r.type, { free: Number(r.free), total: Number(r.total) }]));
  const reason = largeChange(last, now);
  if (!reason) return undefined;
  // Counted as told: the same change does not ask again before the publication it asked for.
  published.set(region.name, now);
  await region.client.workflow.getHandle(peerExchangeWorkflowId(region.name)).signal(publishNowSignal, reason);
  return reason;
}
