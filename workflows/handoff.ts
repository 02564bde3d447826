// The handoff protocol as the two workflows run it (README, "Global scheduling": its states and
// what each crash point leads to). The home's JobWorkflow is the only coordinator of its job,
// fenced by the job's epoch e: prepare (the job leaves the home queue and a copy is started at the
// peer under the same id), decide (committed or aborted, recorded in the home's history and
// database: the decision point), tell (sent until delivered). A copy holds nothing and is in no
// queue until it learns `committed`; it asks the home when it hears nothing, and ends on `aborted`.
import { condition, log, patched } from '@temporalio/workflow';
import type { JobResult } from '../api/types';
import type { HandoffDecision } from '../api/messages';
import { handoffActs as acts, peerward, type JobRecord } from './job-record';

/** A peer that refused or did not answer is not asked again for this long. */
export const AVOID_PEER_MS = 60_000;
/** How often a handed-off home checks on its copy when it has heard nothing (a copy that vanished). */
export const CHECK_COPY_MS = 60_000;
/** How often a handed-off home looks whether it has room for the job again (and recalls it if it waits abroad). */
export const RECALL_LOOK_MS = 15_000;
/** After a recall that was refused or unanswered, how soon the home looks whether the copy gave the job back after all. */
export const RECALL_DOUBT_CHECK_MS = 5_000;
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
  return followCopy(job, peer, e, abroad);
}

/**
 * While the job lives at the peer: forwards a cancel, takes a recall, and ends with the copy's
 * ending. When the home has room for the job again while its copy still waits in the peer's
 * queue, the home recalls it (the copy refuses once placed), so capacity idle at home does not
 * wait behind a peer's queue; the peer is then avoided for a while, so the job does not bounce.
 */
async function followCopy(job: JobRecord, peer: string, e: number, abroad: boolean): Promise<HandoffEnd> {
  const { status, jobId } = job;
  let forwarded = false;
  // Behind a patch: handed-off jobs that started following before it replay as they ran.
  const patchedFollow = patched('recall-when-home-has-room');
  const lookHome = !abroad && patchedFollow;
  let automatic = false;
  let checkCopyAt = Date.now() + CHECK_COPY_MS;
  let lookHomeAt = Date.now() + RECALL_LOOK_MS;
  for (;;) {
    // Unpatched, every wait is a fresh CHECK_COPY_MS and every timeout checks the copy, as it ran.
    if (!patchedFollow) checkCopyAt = Date.now() + CHECK_COPY_MS;
    const looking = lookHome && !status.pinned;
    await condition(
      () => job.peerEnded !== undefined || job.recalled !== undefined || (status.cancelRequested && !forwarded),
      Math.max(1, (looking ? Math.min(checkCopyAt, lookHomeAt) : checkCopyAt) - Date.now()),
    );
    if (job.peerEnded) return { kind: 'ended', result: job.peerEnded.result };
    if (job.recalled !== undefined) {
      // The copy gave the job back (it had not been placed there): home again, at a new epoch.
      // An operator's recall keeps it home; an automatic one only avoids this peer for a while.
      status.epoch = await acts.decideHandoff(jobId, e, 'recalled', `recalled from ${peer}: ${job.recalled}`, false);
      status.handoff = { peer, epoch: e, state: 'recalled', reason: job.recalled };
      if (automatic) job.avoid.set(peer, Date.now() + AVOID_PEER_MS);
      else status.pinned = true;
      job.recalled = undefined;
      log.info('recalled', { jobId, event: 'handoff.recalled', peer, epoch: e, automatic });
      return { kind: 'home' };
    }
    if (status.cancelRequested && !forwarded) {
      forwarded = true;
      await peerward.forwardCancel(peer, job.workflowId, `cancelled at ${status.region}`);
      continue;
    }
    if (looking && Date.now() >= lookHomeAt) {
      lookHomeAt = Date.now() + RECALL_LOOK_MS;
      const home = await acts.roomAtHome(job.spec);
      if (home.room) {
        const answer = await acts.recallFromPeer(peer, job.workflowId, `${status.region} has room for it again: ${home.reason}`);
        if (answer.ok && job.recalled === undefined && job.peerEnded === undefined) {
          automatic = true;
          job.recalled = `${status.region} has room for it again`;
        } else if (!answer.ok) {
          // Refused (placed there meanwhile) or unanswered: the copy may have given it back
          // without the answer reaching here, so look at the copy soon rather than in a minute.
          checkCopyAt = Math.min(checkCopyAt, Date.now() + RECALL_DOUBT_CHECK_MS);
        }
        continue;
      }
    }
    if (Date.now() < checkCopyAt) continue;
    checkCopyAt = Date.now() + CHECK_COPY_MS;
    // Heard nothing for a while: has the copy ended without telling (terminated, or its end signal lost)?
    const ended = await acts.peerCopyOutcome(peer, job.workflowId);
    if (ended?.givenBack && patchedFollow) {
      // The copy gave the job back (a recall whose answer was lost): home again, as agreed.
      automatic = !status.pinned;
      job.recalled = `${peer} gave it back`;
      continue;
    }
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
