// Publishing on large changes. The exchange workflow publishes its region's summary every period;
// between two periods, its publication activity waits here for the region's free capacity to move
// a lot since the summary it last published (`largeChange`: room appeared, a type filled up, a type
// came or went) and publishes at once when it does. The wait is part of an awaited, heartbeating
// activity: a worker that stops cancels it, and nothing outlives the worker that started it.
import { sql, type Kysely } from 'kysely';
import { Context } from '@temporalio/activity';
import type { Database } from '../db/schema';
import { largeChange, type FreeByType } from '../scheduling/handoff';

/** How often a waiting publication looks at the region's free capacity. */
export const CHANGE_POLL_MS = 250;

/** Free whole devices on ready nodes and all devices on live nodes, per type (as `summarizeInventory` counts them). */
export async function readFreeByType(db: Kysely<Database>): Promise<FreeByType> {
  const rows = await sql<{ type: string; free: string; total: string }>`
    SELECT accelerator_type AS type, coalesce(sum(free_whole) FILTER (WHERE state = 'ready'), 0)::bigint AS free,
      sum(device_count)::bigint AS total
    FROM nodes WHERE state <> 'down' GROUP BY accelerator_type`.execute(db);
  return Object.fromEntries(rows.rows.map((r) => [r.type, { free: Number(r.free), total: Number(r.total) }]));
}

/** Sleeps `ms`; inside an activity, heartbeats first and ends early (throwing) if the activity is cancelled. */
async function pause(ms: number): Promise<void> {
  let ctx: Context | undefined;
  try {
    ctx = Context.current();
  } catch {
    ctx = undefined;
  }
  if (!ctx) return new Promise((resolve) => setTimeout(resolve, ms));
  ctx.heartbeat();
  await ctx.sleep(ms);
}

/**
 * Waits up to `waitMs` (none before `minWaitMs`) for a large change in the region's free capacity
 * since `published`; the reason if one came, undefined when the time ran out. With `watch` false
 * it only waits out `waitMs` (heartbeating): publishing on the period alone.
 */
export async function waitForLargeChange(
  db: Kysely<Database>,
  published: FreeByType,
  waitMs: number,
  minWaitMs = 0,
  pollMs = CHANGE_POLL_MS,
  watch = true,
): Promise<string | undefined> {
  const start = Date.now();
  const until = start + waitMs;
  if (minWaitMs > 0) await pause(Math.min(minWaitMs, waitMs));
  for (;;) {
    const left = until - Date.now();
    if (left <= 0) return undefined;
    const reason = watch ? largeChange(published, await readFreeByType(db)) : undefined;
    if (reason) return reason;
    await pause(Math.min(pollMs, left));
  }
}
