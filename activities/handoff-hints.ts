// Hints to look abroad. A waiting job looks for a peer itself (pickPeer) once its `afterMs` has
// passed and every PEER_RETRY_MS after, so a peer's capacity freed just after a look waited up to
// that long for the next. When a peer's summary arrives, the region instead tells the waiting jobs
// at the head of its queue that a peer has room for (scheduling/handoff.ts `chooseHinted`) to look
// now. A hint is only advice: the job decides for itself, so a hint lost, late or wrong costs
// nothing but the early look.
import { sql } from 'kysely';
import type { JobSpec, Tier } from '../api/types';
import { lookAbroadSignal } from '../api/messages';
import { chooseHinted } from '../scheduling/handoff';
import { queueKeySql } from './cycle';
import { readInFlight, readPeerSummaries } from './inventory';
import type { Region } from './region';

/** How many waiting jobs at the head of the queue a hint pass reads. */
export const HINT_SCAN = 64;
/** At most this many jobs are told to look abroad per pass. */
export const HINTS_PER_PASS = 16;

/**
 * A job told to look and still waiting is not told again for this long: it may avoid that peer
 * (refused lately) or be pinned, which only the job knows, and must not take the head-of-queue
 * places of the jobs behind it in every pass.
 */
export const HINT_AGAIN_MS = 10_000;

/** Regions with a pass running: a summary arriving meanwhile is covered by the next one. */
const running = new Set<string>();
/** Per region: the jobs told lately, and when. */
const toldAt = new Map<string, Map<string, number>>();

/**
 * One pass: the jobs told to look abroad (their ids), in queue order. Skips (returns []) while a
 * pass of the same region runs. A job that cannot be reached is left out; it looks anyway later.
 */
export async function hintHandoffs(region: Region, now = Date.now()): Promise<string[]> {
  if (!region.peers.names.length || running.has(region.name)) return [];
  running.add(region.name);
  try {
    const held = await readPeerSummaries(region.db);
    if (!held.size) return [];
    const rows = await sql<{ id: string; tier: Tier; workflow_id: string; spec: JobSpec; enqueued_at: Date }>`
      SELECT id, tier, workflow_id, spec, enqueued_at FROM jobs
      WHERE region = ${region.name} AND state = 'waiting' AND origin_region IS NULL
      ORDER BY ${queueKeySql()} DESC, enqueued_at, id
      LIMIT ${HINT_SCAN}`.execute(region.db);
    const lately = toldAt.get(region.name) ?? new Map<string, number>();
    toldAt.set(region.name, lately);
    for (const [id, at] of lately) if (now - at >= HINT_AGAIN_MS) lately.delete(id);
    const waiting = rows.rows
      .filter((r) => !lately.has(r.id))
      .map((r) => ({ jobId: r.id, spec: { ...r.spec, tier: r.tier }, enqueuedAt: r.enqueued_at.getTime() }));
    const inFlight = await readInFlight(region.db, held);
    const told = chooseHinted(waiting, region.peers.names, held, { now, limit: HINTS_PER_PASS, inFlight });
    const workflowIds = new Map(rows.rows.map((r) => [r.id, r.workflow_id]));
    const results = await Promise.allSettled(
      told.map((t) => region.client.workflow.getHandle(workflowIds.get(t.jobId)!).signal(lookAbroadSignal, { peer: t.peer })),
    );
    const delivered = told.filter((_, i) => results[i].status === 'fulfilled').map((t) => t.jobId);
    for (const id of delivered) lately.set(id, now);
    return delivered;
  } finally {
    running.delete(region.name);
  }
}
