// The handoff protocol's I/O, both sides (the protocol itself, its states and crash points, are in
// the README, "Global scheduling"). At home: prepare (leave the queue, start the copy at the peer,
// read its answer), decide (record committed or aborted, the decision point), tell. At the peer:
// admit a copy as `pending` (holding nothing, in no queue), activate it on `committed`, withdraw it
// on `aborted` or a recall, ask the home for a decision it has not heard, and tell the home how
// the job ended. Every statement is conditional on the job's state and epoch, so any retry is safe.
import { sql } from 'kysely';
import { Context } from '@temporalio/activity';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import type { JobResult, JobSpec } from '../api/types';
import type { InventorySummary } from '../api/peers';
import { ErrorTypes, badRequest, isDomainError, rootMessage } from '../api/errors';
import { jobWorkflowId } from '../api/ids';
import { AcceleratorTypeKey, JobIdKey, JobStateKey, RegionKey, TenantKey, TierKey } from '../api/search-attributes';
import {
  cancelSignal,
  giveBackUpdate,
  handedJobEndedSignal,
  handoffDecisionQuery,
  handoffDecisionSignal,
  placedSignal,
  statusQuery,
  type HandoffDecision,
  type HandoffOrigin,
} from '../api/messages';
import { admissionProblems } from '../scheduling/admission';
import { checkQuota, type QuotaRule } from '../scheduling/quota';
import { choosePeer, roomHere, type PeerChoice } from '../scheduling/handoff';
import { requestMilli } from '../scheduling/geometry';
import { loadAdmissionContext } from './admission';
import { QUEUED_REASON } from './jobs';
import { readInFlight, readPeerSummaries, summarizeInventory } from './inventory';
import { activityLog, tell, type Region } from './region';
import { releaseEndedJob } from './reconcile';
import { failpoint } from './failpoints';

/** How long the home waits for a peer's answer to a prepare before it decides `aborted`. */
export const HANDOFF_ANSWER_MS = 15_000;

export type PrepareAnswer =
  | { answer: 'accepted' }
  | { answer: 'refused' | 'no-answer'; reason: string }
  /** The job was no longer waiting at this epoch (placed or cancelled meanwhile): nothing was offered. */
  | { answer: 'not-prepared'; reason: string };

// --- at home --------------------------------------------------------------------------------

/** The peer that should take this waiting job now, from the summaries held. */
export async function pickPeer(region: Region, spec: JobSpec, o: { exclude: string[]; mustLeave: boolean }): Promise<PeerChoice> {
  if (!region.peers.names.length) return { reason: 'this region has no peers' };
  const held = await readPeerSummaries(region.db);
  const inFlight = await readInFlight(region.db, held);
  return choosePeer(spec, region.peers.names, held, { now: Date.now(), exclude: new Set(o.exclude), mustLeave: o.mustLeave, inFlight });
}

/** This region's own summary, kept this long for the recall checks of its handed-off jobs. */
const OWN_SUMMARY_MS = 1_000;
const ownSummaries = new Map<string, { at: number; summary: Promise<InventorySummary> }>();

/**
 * Whether this region (the job's home) could place a job it handed off, now: its own summary
 * (read at most once a second however many jobs ask) and the rule in `roomHere`.
 */
export async function roomAtHome(region: Region, spec: JobSpec): Promise<{ room: boolean; reason: string }> {
  let own = ownSummaries.get(region.name);
  if (!own || Date.now() - own.at > OWN_SUMMARY_MS) {
    own = { at: Date.now(), summary: summarizeInventory(region.db, region.name) };
    ownSummaries.set(region.name, own);
    own.summary.catch(() => ownSummaries.delete(region.name));
  }
  return roomHere(spec, await own.summary);
}

/**
 * Prepare: the job leaves the queue (`handing-off`, in the transaction that checks it still waits
 * at `epoch`; nominations made for it are dropped, so its would-be victims keep running), then its
 * copy is started at the peer under the same workflow id, and the copy's answer is read: `pending`
 * means accepted, a rejection means refused. Same id: a retried start is a no-op.
 */
export async function prepareHandoff(region: Region, spec: JobSpec, epoch: number, peerName: string): Promise<PrepareAnswer> {
  const peer = region.peers.config(peerName);
  if (!peer) throw badRequest(`handoff of ${spec.jobId}: region ${peerName} is not a configured peer of ${region.name}`);
  const held = await region.db.selectFrom('peer_summaries').select('region').where('region', '=', peerName).executeTakeFirst();
  if (!held) throw badRequest(`handoff of ${spec.jobId}: region ${peerName} has never been seen (no summary received from it)`);
  const marked = await sql<{ id: string }>`
    WITH mark AS (
      UPDATE jobs SET state = 'handing-off', handoff_peer = ${peerName}, handoff_epoch = ${epoch},
        waiting_reason = ${`handing off to ${peerName}: waiting for its answer`}, updated_at = now()
      WHERE id = ${spec.jobId} AND epoch = ${epoch}
        AND (state IN ('waiting', 'waiting-abroad') OR (state = 'handing-off' AND handoff_peer = ${peerName} AND handoff_epoch = ${epoch}))
      RETURNING id),
    nom AS (DELETE FROM nominations WHERE preemptor IN (SELECT id FROM mark) RETURNING 1)
    SELECT id FROM mark`.execute(region.db);
  if (!marked.rows.length) {
    const now = await region.db.selectFrom('jobs').select(['state', 'epoch']).where('id', '=', spec.jobId).executeTakeFirst();
    return { answer: 'not-prepared', reason: `job is ${now?.state ?? 'unknown'} at epoch ${now?.epoch ?? '?'}` };
  }
  await failpoint('handoff.home.marked');
  const workflowId = jobWorkflowId(spec.tenant, spec.jobId);
  const origin: HandoffOrigin = { region: region.name, epoch };
  try {
    await region.peers.call(peerName, (client) =>
      client.workflow.start('JobWorkflow', {
        workflowId,
        taskQueue: peer.taskQueue,
        args: [{ spec, region: peerName, origin }],
        typedSearchAttributes: [
          { key: JobIdKey, value: spec.jobId },
          { key: TenantKey, value: spec.tenant },
          { key: TierKey, value: spec.tier },
          { key: RegionKey, value: peerName },
          { key: JobStateKey, value: 'submitted' },
          { key: AcceleratorTypeKey, value: spec.request.acceleratorTypes[0] },
        ],
        memo: { handedOffBy: region.name, originEpoch: epoch },
      }),
    );
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError))
      return { answer: 'no-answer', reason: `could not start the job at ${peerName}: ${(err as Error).message}` };
  }
  await failpoint('handoff.home.started');
  // The copy answers by where it stands: `pending` (admitted) or `rejected` (refused).
  const deadline = Date.now() + HANDOFF_ANSWER_MS;
  let last = 'no status yet';
  while (Date.now() < deadline) {
    Context.current().heartbeat();
    try {
      const st = await region.peers.call(peerName, (client) => client.workflow.getHandle(workflowId).query(statusQuery));
      if (st.origin?.region === region.name && st.origin.epoch === epoch) {
        if (st.phase === 'rejected' || st.phase === 'cancelled' || st.phase === 'failed')
          return { answer: 'refused', reason: `${peerName} refused: ${st.waitingReason ?? st.phase}` };
        if (st.phase !== 'validating' && st.phase !== 'admitting' && st.phase !== 'submitted') return { answer: 'accepted' };
        last = `copy is ${st.phase}`;
      } else last = `an earlier copy (epoch ${st.origin?.epoch ?? '-'}) is still there`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { answer: 'no-answer', reason: `no answer from ${peerName} within ${HANDOFF_ANSWER_MS / 1000} s (${last})` };
}

/**
 * Decide: records the decision of the handoff at `epoch` in this region's database (the
 * workflow's history records it too). Committed: the job is `handed-off`. Aborted: it is back in
 * the queue at epoch + 1, its queue position kept. Returns the job's epoch after the decision.
 */
export async function decideHandoff(
  region: Region,
  jobId: string,
  epoch: number,
  decision: HandoffDecision | 'recalled',
  reason: string,
  abroad: boolean,
): Promise<number> {
  await failpoint('handoff.home.deciding');
  const r =
    decision === 'recalled'
      ? await sql<{ epoch: number }>`
          UPDATE jobs SET state = 'waiting', epoch = ${epoch + 1}, waiting_reason = ${reason}, updated_at = now()
          WHERE id = ${jobId} AND handoff_epoch = ${epoch} AND state = 'handed-off' AND epoch = ${epoch}
          RETURNING epoch`.execute(region.db)
      : decision === 'committed'
        ? await sql<{ epoch: number }>`
          UPDATE jobs SET state = 'handed-off', waiting_reason = ${reason}, updated_at = now()
          WHERE id = ${jobId} AND handoff_epoch = ${epoch} AND (state = 'handing-off' OR state = 'handed-off') AND epoch = ${epoch}
          RETURNING epoch`.execute(region.db)
        : await sql<{ epoch: number }>`
          UPDATE jobs SET state = ${abroad ? 'waiting-abroad' : 'waiting'}, epoch = ${epoch + 1}, waiting_reason = ${reason}, updated_at = now()
          WHERE id = ${jobId} AND handoff_epoch = ${epoch} AND state = 'handing-off' AND epoch = ${epoch}
          RETURNING epoch`.execute(region.db);
  if (r.rows.length) {
    activityLog().info('handoff decided', { jobId, epoch, event: `handoff.${decision}`, reason });
    await failpoint('handoff.home.decided');
    if (decision !== 'committed' && !abroad) await region.kick();
    return r.rows[0].epoch;
  }
  // A retry after the decision was recorded: the row says how it stands.
  const row = await region.db.selectFrom('jobs').select(['state', 'epoch', 'handoff_epoch']).where('id', '=', jobId).executeTakeFirst();
  if (row && row.handoff_epoch === epoch && decision === 'committed' && row.state === 'handed-off') return row.epoch;
  if (row && row.handoff_epoch === epoch && decision !== 'committed' && row.epoch === epoch + 1) return row.epoch;
  throw new Error(
    `handoff of ${jobId} at epoch ${epoch}: cannot record ${decision}, the job is ${row?.state ?? 'unknown'} at epoch ${row?.epoch ?? '?'}`,
  );
}

/** Tell: delivers the decision to the copy; true when delivered or when the copy has already ended. */
export async function tellDecision(
  region: Region,
  peerName: string,
  workflowId: string,
  epoch: number,
  decision: HandoffDecision,
): Promise<boolean> {
  await failpoint('handoff.home.telling');
  try {
    await region.peers.call(peerName, (client) => client.workflow.getHandle(workflowId).signal(handoffDecisionSignal, { epoch, decision }));
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
  return true;
}

/** Passes an operator's cancel to the copy at the peer, which ends the job there and tells the home. */
export async function forwardCancel(region: Region, peerName: string, workflowId: string, reason: string): Promise<void> {
  try {
    await region.peers.call(peerName, (client) => client.workflow.getHandle(workflowId).signal(cancelSignal, reason));
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
}

/** Asks the copy to give the job back (a recall); the copy refuses once it has been placed. */
export async function recallFromPeer(
  region: Region,
  peerName: string,
  workflowId: string,
  reason: string,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  try {
    await region.peers.call(peerName, (client) => client.workflow.getHandle(workflowId).executeUpdate(giveBackUpdate, { args: [reason] }));
    return { ok: true };
  } catch (err) {
    return { ok: false, reason: `${peerName} would not give it back: ${rootMessage(err)}` };
  }
}

/** How the copy at the peer ended, once it has (undefined while it runs, or when the peer cannot be reached). */
export async function peerCopyOutcome(region: Region, peerName: string, workflowId: string): Promise<JobResult | undefined> {
  try {
    return await region.peers.call(peerName, async (client) => {
      const handle: WorkflowHandle = client.workflow.getHandle(workflowId);
      const d = await handle.describe();
      if (d.status.name === 'RUNNING') return undefined;
      return (await handle.result()) as JobResult;
    });
  } catch (err) {
    const jobId = workflowId.slice(workflowId.lastIndexOf('/') + 1);
    if (err instanceof WorkflowNotFoundError)
      return { jobId, outcome: 'failed', reason: `the copy at ${peerName} is gone`, region: peerName };
    // A copy that was terminated or failed ended without its own cleanup: whatever it held there is left to the peer's operators.
    if (err instanceof WorkflowFailedError)
      return { jobId, outcome: 'failed', reason: `the copy at ${peerName} ended abnormally: ${err.message}`, region: peerName };
    return undefined;
  }
}

// --- at the peer ------------------------------------------------------------------------------

/**
 * Admits a copy handed over by `origin` under this region's own policy and quota, as `pending`:
 * it holds nothing and no cycle sees it until the home's decision says committed. A refusal is
 * an answer (the problems), not an error.
 */
export async function admitCopy(
  region: Region,
  spec: JobSpec,
  origin: HandoffOrigin,
  workflowId: string,
): Promise<{ admitted: true; epoch: number } | { admitted: false; problems: string[] }> {
  if (!region.peers.config(origin.region))
    return { admitted: false, problems: [`handoff from region ${origin.region}, which is not a configured peer of ${region.name}`] };
  const { policy } = await loadAdmissionContext(region.db, spec.tenant, region.name, spec.jobId);
  const problems = admissionProblems(spec, region.name, policy);
  if (!problems.length) {
    try {
      await region.allocator.checkRequest(spec.request);
    } catch (err) {
      // A refusal is the copy's answer; an unreadable inventory fails the step (retried), not the handoff.
      if (!isDomainError(err, ErrorTypes.badRequest)) throw err;
      problems.push((err as Error).message);
    }
  }
  if (!problems.length) {
    const quota = await quotaHeadroom(region, spec);
    if (quota) problems.push(quota);
  }
  if (problems.length) return { admitted: false, problems };
  const reason = `pending: handed over by ${origin.region} (epoch ${origin.epoch}), waiting for its decision`;
  const r = await sql<{ epoch: number; origin_epoch: number }>`
    INSERT INTO jobs (id, tenant, tier, priority, region, workflow_id, spec, state, epoch, waiting_reason, origin_region, origin_epoch)
    VALUES (${spec.jobId}, ${spec.tenant}, ${spec.tier}, ${spec.priority ?? 0}, ${region.name}, ${workflowId}, ${JSON.stringify(spec)}::jsonb,
            'pending', 1, ${reason}, ${origin.region}, ${origin.epoch})
    ON CONFLICT (id) DO UPDATE SET state = 'pending', epoch = jobs.epoch + 1, spec = excluded.spec, priority = excluded.priority,
      waiting_reason = excluded.waiting_reason, origin_epoch = excluded.origin_epoch, enqueued_at = now(), placed_at = NULL, updated_at = now()
    WHERE jobs.workflow_id = excluded.workflow_id AND jobs.origin_region = excluded.origin_region AND jobs.origin_epoch < excluded.origin_epoch
      AND jobs.state IN ('completed', 'failed', 'cancelled', 'rejected')
    RETURNING epoch, origin_epoch`.execute(region.db);
  if (r.rows.length) {
    await failpoint('handoff.copy.admitted');
    return { admitted: true, epoch: r.rows[0].epoch };
  }
  const row = await region.db
    .selectFrom('jobs')
    .select(['epoch', 'state', 'workflow_id', 'origin_region', 'origin_epoch'])
    .where('id', '=', spec.jobId)
    .executeTakeFirst();
  if (row && row.workflow_id === workflowId && row.origin_region === origin.region && row.origin_epoch === origin.epoch)
    return { admitted: true, epoch: row.epoch };
  return {
    admitted: false,
    problems: [`jobId: ${spec.jobId} is already taken in ${region.name} by another job`],
  };
}

/** Why the tenant's quota here could not take the job now on any acceptable type, or undefined when one could. */
async function quotaHeadroom(region: Region, spec: JobSpec): Promise<string | undefined> {
  const rows = await region.db
    .selectFrom('quotas')
    .select(['tenant', 'accelerator_type', 'nominal', 'borrowing_limit', 'lending_limit', 'used_milli'])
    .execute();
  if (!rows.length) return undefined;
  const rules: QuotaRule[] = rows.map((q) => ({
    tenant: q.tenant,
    acceleratorType: q.accelerator_type,
    nominal: q.nominal,
    borrowingLimit: q.borrowing_limit,
    lendingLimit: q.lending_limit,
  }));
  const usage = new Map(rows.map((q) => [`${q.tenant}|${q.accelerator_type}`, Number(q.used_milli)]));
  const why: string[] = [];
  for (const type of spec.request.acceleratorTypes) {
    const d = checkQuota(rules, usage, spec.tenant, type, requestMilli(spec.request));
    if (d.ok) return undefined;
    why.push(`${type}: ${d.reason}`);
  }
  return why.join('; ');
}

/** On `committed`: the copy joins this region's queue (fresh queue position) and the scheduler is woken. */
export async function activateCopy(region: Region, jobId: string, originEpoch: number): Promise<void> {
  await region.db
    .updateTable('jobs')
    .set({ state: 'waiting', waiting_reason: QUEUED_REASON, enqueued_at: new Date(), updated_at: new Date() })
    .where('id', '=', jobId)
    .where('origin_epoch', '=', originEpoch)
    .where('state', '=', 'pending')
    .execute();
  await failpoint('handoff.copy.activated');
  if (await placeCopyNow(region, jobId, originEpoch)) return;
  await region.kick();
}

/**
 * A committed copy that nobody else here waits ahead of is placed at once, as a job admitted to
 * an empty queue is: it was sent because this region had room for it, and a round trip through
 * the scheduler's next cycle left that room idle a second or more each time. Delivered to the
 * copy's workflow as the cycle delivers (the `placed` signal, at the copy's epoch). True when it
 * was placed and told; otherwise the scheduler places it. A retry finds the same placement (the
 * allocator is keyed by job and epoch) and tells it again, which the workflow takes once.
 */
async function placeCopyNow(region: Region, jobId: string, originEpoch: number): Promise<boolean> {
  const r = await sql<{ epoch: number; state: string; workflow_id: string; spec: JobSpec; queue_ahead: boolean }>`
    SELECT j.epoch, j.state, j.workflow_id, j.spec,
      EXISTS (SELECT 1 FROM jobs o WHERE o.region = ${region.name} AND o.state = 'waiting' AND o.id <> j.id) AS queue_ahead
    FROM jobs j WHERE j.id = ${jobId} AND j.origin_epoch = ${originEpoch}`.execute(region.db);
  const row = r.rows[0];
  if (!row || !((row.state === 'waiting' && !row.queue_ahead) || row.state === 'placed')) return false;
  const [tried] = await region.allocator.allocateBatch([{ jobId, epoch: row.epoch, request: row.spec.request }]);
  if (!tried.result?.placed) return false;
  const placement = tried.result.placement;
  activityLog().info('handed-over job placed on activation', {
    jobId,
    epoch: row.epoch,
    event: 'handoff.copy-placed',
    nodes: placement.workers.map((w) => w.nodeName),
  });
  const told = await tell(() => region.client.workflow.getHandle(row.workflow_id).signal(placedSignal, { epoch: row.epoch, placement }));
  // Its workflow has ended meanwhile: the devices go back (as the cycle does for a placement nobody hears).
  if (!told)
    await releaseEndedJob(region, jobId, row.epoch, `its workflow ${row.workflow_id} had ended when its placement was made`, false);
  return true;
}

/** Ends a copy that has not been placed (aborted, or given back); false when it has been placed meanwhile. */
export async function withdrawCopy(region: Region, jobId: string, originEpoch: number, reason: string): Promise<boolean> {
  const r = await region.db
    .updateTable('jobs')
    .set({ state: 'cancelled', waiting_reason: reason, updated_at: new Date() })
    .where('id', '=', jobId)
    .where('origin_epoch', '=', originEpoch)
    .where('state', 'in', ['pending', 'waiting', 'cancelled'])
    .returning('id')
    .executeTakeFirst();
  return r !== undefined;
}

/** Asks the home for the decision of the handoff at `epoch`; `unreachable` when it cannot answer now. */
export async function askOrigin(
  region: Region,
  origin: HandoffOrigin,
  workflowId: string,
): Promise<HandoffDecision | 'undecided' | 'unreachable'> {
  try {
    return await region.peers.call(origin.region, (client) =>
      client.workflow.getHandle(workflowId).query(handoffDecisionQuery, origin.epoch),
    );
  } catch (err) {
    // No such workflow at home: nothing there waits on this copy, so it was not committed.
    if (err instanceof WorkflowNotFoundError) return 'aborted';
    return 'unreachable';
  }
}

/** Tells the home how the job ended here (retried by the caller until delivered; a home that is gone needs no telling). */
export async function tellOriginEnded(region: Region, origin: HandoffOrigin, workflowId: string, result: JobResult): Promise<void> {
  await failpoint('handoff.copy.ending');
  try {
    await region.peers.call(origin.region, (client) =>
      client.workflow.getHandle(workflowId).signal(handedJobEndedSignal, { epoch: origin.epoch, result }),
    );
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) throw err;
  }
}
