// The messages a JobWorkflow answers: the status query, operator actions (cancel, requeue,
// setPriority, pin, recall; each update refuses with a reason, changing nothing, when it does not
// apply), the region scheduler's deliveries (placed, waiting, preempt) and the handoff protocol's
// messages between a home and a copy. Every update has a validator; every signal's argument is
// checked (api/validation.ts) and a malformed one is logged and ignored, never thrown: a handler
// that throws fails the workflow task on every replay and wedges the job with what it holds.
import { ApplicationFailure, log, patched, setHandler } from '@temporalio/workflow';
import {
  validateCancelReason,
  validateHandedJobEnded,
  validateHandoffDecision,
  validatePlacedDelivery,
  validatePreemptRequest,
  validatePriority,
  validateWaitingNotice,
} from '../api/validation';
import {
  cancelSignal,
  cancelUpdate,
  giveBackUpdate,
  handedJobEndedSignal,
  handoffDecisionQuery,
  handoffDecisionSignal,
  pinUpdate,
  placedSignal,
  preemptSignal,
  recallUpdate,
  requeueUpdate,
  setPriorityUpdate,
  statusQuery,
  waitingSignal,
} from '../api/messages';
import { acts, type JobRecord } from './job-record';

/**
 * Patch: signals with a malformed argument are ignored. Before it, a malformed argument either
 * threw (that task never completed, so nothing in any history depends on it) or was acted on;
 * a history in which a worker acted on one replays as it ran.
 */
export const CHECKED_MESSAGES = 'checked-job-messages';

const reasonText = (action: string, reason: unknown): void => {
  if (typeof reason !== 'string') throw new Error(`${action}: reason ${JSON.stringify(reason)} must be a string`);
};

export function registerJobHandlers(job: JobRecord): void {
  const { status, jobId } = job;
  /** Where a job that lives in another region now is, for refusals that send the operator there. */
  const elsewhere = (): string | undefined =>
    status.phase === 'handed-off' || status.phase === 'handing-off'
      ? `it ${status.phase === 'handed-off' ? 'runs in' : 'is being handed to'} ${status.handoff?.peer}`
      : undefined;

  /** Whether to ignore a signal with these problems (logged once, with the message's name). */
  const malformed = (message: string, problems: string[]): boolean => {
    if (!problems.length || !patched(CHECKED_MESSAGES)) return false;
    log.warn('malformed message ignored', { jobId, event: 'job.message-ignored', message, problems });
    return true;
  };

  setHandler(statusQuery, () => status);
  setHandler(cancelSignal, (reason) => {
    if (malformed(cancelSignal.name, validateCancelReason(reason))) return;
    job.requestCancel(reason);
  });
  setHandler(
    cancelUpdate,
    (reason) => {
      job.requestCancel(reason);
      return status;
    },
    {
      validator: (reason) => {
        reasonText('cancel', reason);
        if (job.finished()) throw new Error(`cancel: job ${jobId} is already ${status.phase}`);
        if (status.cancelRequested) throw new Error(`cancel: job ${jobId} is already being cancelled`);
        if (status.phase === 'pending')
          throw new Error(`cancel: job ${jobId} is pending a handoff from ${status.origin?.region}; cancel it there, where it is decided`);
      },
    },
  );
  setHandler(
    requeueUpdate,
    (reason) => {
      job.requeueAsked = reason || 'operator requeue';
      log.info('requeue requested', { jobId, event: 'job.requeue-requested', reason: job.requeueAsked, phase: status.phase });
      job.runScope?.cancel();
      return status;
    },
    {
      validator: (reason) => {
        reasonText('requeue', reason);
        if (status.phase !== 'placed' && status.phase !== 'running')
          throw new Error(
            `requeue: job ${jobId} is ${status.phase}${elsewhere() ? ` (${elsewhere()})` : ''}; only a placed or running job can be requeued`,
          );
        if (status.cancelRequested) throw new Error(`requeue: job ${jobId} is being cancelled`);
        if (job.requeueAsked !== undefined) throw new Error(`requeue: job ${jobId} is already being requeued`);
      },
    },
  );
  setHandler(
    setPriorityUpdate,
    async (priority) => {
      await acts.setPriority(jobId, priority);
      status.priority = priority;
      log.info('priority changed', { jobId, event: 'job.priority', priority });
      return status;
    },
    {
      validator: (priority) => {
        const problems = validatePriority(priority);
        if (problems.length) throw new Error(`setPriority: ${problems.join('; ')}`);
        if (job.finished() || status.phase === 'validating' || status.phase === 'admitting' || status.phase === 'pending')
          throw new Error(`setPriority: job ${jobId} is ${status.phase}; only a queued, placed or running job has a priority to change`);
        if (elsewhere()) throw new Error(`setPriority: job ${jobId} is ${status.phase}: ${elsewhere()}; change its priority there`);
      },
    },
  );
  setHandler(preemptSignal, (p) => {
    if (malformed(preemptSignal.name, validatePreemptRequest(p))) return;
    if ((status.phase !== 'placed' && status.phase !== 'running') || job.preemptFor || status.cancelRequested) return;
    job.preemptFor = p;
    log.info('preemption requested', { jobId, event: 'job.preempt-requested', preemptor: p.preemptor, graceMs: p.graceMs });
  });
  // A well-formed placement is still only a claim: the run activity launches on the database's
  // placement of the job at that epoch, and one the database never made sends the job back to the queue.
  setHandler(placedSignal, (d) => {
    if (malformed(placedSignal.name, validatePlacedDelivery(d, jobId))) return;
    if (d.epoch >= status.epoch) job.deliveries.set(d.epoch, d);
  });
  setHandler(waitingSignal, (w) => {
    if (malformed(waitingSignal.name, validateWaitingNotice(w))) return;
    const { epoch, reason } = w;
    if (epoch === status.epoch && status.phase === 'waiting' && !job.deliveries.has(epoch) && reason !== status.waitingReason)
      job.enter('waiting', reason);
  });

  // --- handoff, at home ---
  setHandler(handoffDecisionQuery, (epoch) => job.decisionFor(epoch));
  setHandler(handedJobEndedSignal, (ended) => {
    if (malformed(handedJobEndedSignal.name, validateHandedJobEnded(ended))) return;
    if (status.phase === 'handed-off' && ended.epoch === status.handoff?.epoch) job.peerEnded = ended;
  });
  setHandler(
    pinUpdate,
    (reason) => {
      status.pinned = true;
      log.info('pinned to its region', { jobId, event: 'job.pinned', reason });
      return status;
    },
    {
      validator: (reason) => {
        reasonText('pin', reason);
        if (job.finished()) throw new Error(`pin: job ${jobId} is already ${status.phase}`);
        if (job.origin) throw new Error(`pin: job ${jobId} was handed over by ${job.origin.region}; pin it there`);
        if (elsewhere()) throw new Error(`pin: job ${jobId} is ${status.phase}: ${elsewhere()}; recall it first`);
        if (status.phase === 'waiting-abroad') throw new Error(`pin: job ${jobId} cannot run in its home region (${status.waitingReason})`);
      },
    },
  );
  setHandler(
    recallUpdate,
    async (reason) => {
      const h = status.handoff!;
      const answer = await acts.recallFromPeer(h.peer, job.workflowId, `recalled by ${status.region}: ${reason}`);
      // A handler's refusal must be an ApplicationFailure: any other error fails the workflow task instead of the update.
      if (!answer.ok) throw ApplicationFailure.nonRetryable(`recall: ${answer.reason}`, 'Refused');
      job.recalled = reason;
      return status;
    },
    {
      validator: (reason) => {
        reasonText('recall', reason);
        if (status.phase !== 'handed-off')
          throw new Error(`recall: job ${jobId} is ${status.phase}; only a handed-off job can be recalled`);
        if (status.cancelRequested) throw new Error(`recall: job ${jobId} is being cancelled`);
        if (job.recalled !== undefined) throw new Error(`recall: job ${jobId} is already being recalled`);
      },
    },
  );

  // --- handoff, as a copy at a peer ---
  setHandler(handoffDecisionSignal, (d) => {
    if (malformed(handoffDecisionSignal.name, validateHandoffDecision(d))) return;
    const { epoch, decision } = d;
    if (job.origin && epoch === job.origin.epoch && job.heard === undefined) job.heard = decision;
  });
  setHandler(
    giveBackUpdate,
    async (reason) => {
      // Asked again (the home did not hear the first answer): it was given back already.
      if (job.givenBack) return status;
      const withdrawn = await acts.withdrawCopy(jobId, job.origin!.epoch, `given back to ${job.origin!.region}: ${reason}`);
      if (!withdrawn)
        throw ApplicationFailure.nonRetryable(`giveBack: job ${jobId} has been placed in ${status.region} meanwhile`, 'Refused');
      job.givenBack = true;
      return status;
    },
    {
      validator: (reason) => {
        reasonText('giveBack', reason);
        if (!job.origin) throw new Error(`giveBack: job ${jobId} was not handed over by another region`);
        if (job.givenBack) return;
        if (status.phase !== 'pending' && status.phase !== 'waiting')
          throw new Error(`giveBack: job ${jobId} is ${status.phase} in ${status.region}; only a job not yet placed can be given back`);
        if (status.cancelRequested) throw new Error(`giveBack: job ${jobId} is already ending`);
      },
    },
  );
}
