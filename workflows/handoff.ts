// The handoff protocol as the two workflows run it (README, "Global scheduling": its states and
// what each crash point leads to). The home's JobWorkflow is the only coordinator of its job,
// fenced by the job's epoch e: prepare (the job leaves the home queue and a copy is started at the
// peer under the same id), decide (committed or aborted, recorded in the home's history and
// database: the decision point), tell (sent until delivered). A copy holds nothing and is in no
// queue until it learns `committed`; it asks the home when it hears nothing, and ends on `aborted`.
import { condition, log } from '@temporalio/workflow';
import type { JobResult } from '../api/types';
import type { HandoffDecision } from '../api/messages';
import { handoffActs as acts, peerward, type JobRecord } from './job-record';

/** A peer that refused or did not answer is not asked again for this long. */
export const AVOID_PEER_MS = 60_000;
/** How often a handed-off home checks on its copy when it has heard nothing (a copy that vanished). */
export const CHECK_COPY_MS = 60_000;
/** How long a pending copy waits for the decision before it asks the home. */
export const ASK_HOME_MS = 10_000;

/** How a handoff attempt ended for the home. */
export type HandoffEnd =
  /** The job ran (or ended) at the peer: the home ends with this result. */
  | { kind: 'ended'; result: JobResult }
  /** The job is home again (aborted, recalled, or it was placed meanwhile); the lifecycle goes on. */
  | { kind: 'home' };

/** The home side: offers the job to `peer` and, if committed, follows it there until it ends or comes back. */
export async function handOff(job: JobRecord, peer: string, why: string, abroad: boolean): Promise<HandoffEnd> {
  const { status, jobId } = job;
  const e = status.epoch;
  status.handoff = { peer, epoch: e, state: 'preparing', reason: why };
  job.enter('handing-off', `handing off to ${peer}: ${why}`);
  const answer = await acts.prepareHandoff(job.spec, e, peer);
  if (answer.answer === 'not-prepared') {
    // Placed or ended meanwhile: nothing was offered; the delivery (or the cancel) is on its way.
    log.info('handoff not prepared', { jobId, event: 'handoff.not-prepared', peer, reason: answer.reason });
    status.handoff = undefined;
    return { kind: 'home' };
  }
  const decision: HandoffDecision = answer.answer === 'accepted' ? 'committed' : 'aborted';
  const reason = answer.answer === 'accepted' ? `handed off to ${peer}: ${why}` : answer.reason;
  // The decision is fixed by prepare's answer, recorded in history; the query answers it from now on.
  job.decisions.set(e, decision);
  status.epoch = await acts.decideHandoff(jobId, e, decision, reason, abroad);
  status.handoff = { peer, epoch: e, state: decision, reason };
  // Tell, until delivered; nothing waits on it (a copy that hears nothing asks).
  void peerward.tellDecision(peer, job.workflowId, e, decision).catch(() => undefined);
  if (decision === 'aborted') {
    job.avoid.set(peer, Date.now() + AVOID_PEER_MS);
    log.info('handoff aborted', { jobId, event: 'handoff.aborted', peer, epoch: e, reason });
    return { kind: 'home' };
  }
  job.enter('handed-off', reason, undefined, peer);
  return followCopy(job, peer, e);
}

/** While the job lives at the peer: forwards a cancel, takes a recall, and ends with the copy's ending. */
async function followCopy(job: JobRecord, peer: string, e: number): Promise<HandoffEnd> {
  const { status, jobId } = job;
  let forwarded = false;
  for (;;) {
    await condition(
      () => job.peerEnded !== undefined || job.recalled !== undefined || (status.cancelRequested && !forwarded),
      CHECK_COPY_MS,
    );
    if (job.peerEnded) return { kind: 'ended', result: job.peerEnded.result };
    if (job.recalled !== undefined) {
      // The copy gave the job back (it had not been placed there): home again, at a new epoch, kept home.
      status.epoch = await acts.decideHandoff(jobId, e, 'recalled', `recalled from ${peer}: ${job.recalled}`, false);
      status.handoff = { peer, epoch: e, state: 'recalled', reason: job.recalled };
      status.pinned = true;
      job.recalled = undefined;
      log.info('recalled', { jobId, event: 'handoff.recalled', peer, epoch: e });
      return { kind: 'home' };
    }
    if (status.cancelRequested && !forwarded) {
      forwarded = true;
      await peerward.forwardCancel(peer, job.workflowId, `cancelled at ${status.region}`);
      continue;
    }
    // Heard nothing for a while: has the copy ended without telling (terminated, or its end signal lost)?
    const ended = await acts.peerCopyOutcome(peer, job.workflowId);
    if (ended) return { kind: 'ended', result: ended };
  }
}

/**
 * The copy side, after it was admitted as `pending`: waits for the home's decision, asking the
 * home when it hears nothing. Returns true when committed (the copy joins this region's queue).
 */
export async function awaitDecision(job: JobRecord): Promise<boolean> {
  const origin = job.origin!;
  while (job.heard === undefined && !job.givenBack) {
    if (await condition(() => job.heard !== undefined || job.givenBack, ASK_HOME_MS)) break;
    const asked = await acts.askOrigin(origin, job.workflowId);
    if (asked === 'committed' || asked === 'aborted') job.heard ??= asked;
  }
  log.info('handoff decision heard', { jobId: job.jobId, event: `handoff.copy-${job.heard ?? 'given-back'}`, origin: origin.region });
  return job.heard === 'committed' && !job.givenBack;
}
