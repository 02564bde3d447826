// JobWorkflow: one job's lifecycle — validate, admit, queue, wait for the region scheduler to
// place it, run it through the executor, and release what it held — with the operator messages
// it answers (cancel, requeue, setPriority, status). A requeue (operator, drain, node loss, a
// failed attempt with retries left) releases the devices and queues the job again at a new epoch,
// keeping its original queue position. Deterministic: all I/O is in activities.
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  allHandlersFinished,
  condition,
  isCancellation,
  log,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { SchedulerActivities } from '../activities';
import { TERMINAL_STATES, type JobState, type JobResult, type JobStatus, type Placement } from '../api/types';
import { validatePriority, validateSpec } from '../api/validation';
import { AcceleratorTypeKey, JobStateKey, WaitingReasonKey } from '../api/search-attributes';
import { ErrorTypes, NON_RETRYABLE_ERROR_TYPES as NON_RETRYABLE } from '../api/errors';
import {
  cancelSignal,
  cancelUpdate,
  placedSignal,
  preemptSignal,
  requeueUpdate,
  setPriorityUpdate,
  statusQuery,
  waitingSignal,
  type JobWorkflowInput,
  type PlacedDelivery,
} from '../api/messages';

// Few, merged steps: each activity costs the server three events and a task dispatch. In the
// common case a job makes one: admission and placement run as a local activity inside its first
// workflow task, and the run activity records the ending itself.
const acts = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '200ms', maximumInterval: '10s', nonRetryableErrorTypes: NON_RETRYABLE },
});

/**
 * Admission and the placement tried on admission: short database work, run inside the first
 * workflow task (its result is a marker in history). A worker lost mid-way retries the whole task
 * on another worker, and the activity is idempotent.
 */
const local = proxyLocalActivities<SchedulerActivities>({
  startToCloseTimeout: '10s',
  retry: { initialInterval: '200ms', maximumInterval: '5s', nonRetryableErrorTypes: NON_RETRYABLE },
});

const watcher = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '30 days',
  // A worker that dies mid-run is noticed within seconds; the retry watches the same run.
  heartbeatTimeout: '5s',
  retry: { initialInterval: '500ms', maximumInterval: '10s', nonRetryableErrorTypes: NON_RETRYABLE },
});

/** How often a waiting job looks for a placement it may have missed, and re-kicks the scheduler. */
export const PLACEMENT_CHECK_MS = 30_000;
export const MAX_PLACEMENT_CHECK_MS = 5 * 60_000;

type RunEnd =
  | { kind: 'succeeded' }
  | { kind: 'cancelled' }
  | { kind: 'failed' | 'lost' | 'requeue'; detail: string }
  | { kind: 'preempted'; detail: string; preemptor: string };

export async function JobWorkflow({ spec }: JobWorkflowInput): Promise<JobResult> {
  const jobId = typeof spec?.jobId === 'string' ? spec.jobId : 'invalid';
  const status: JobStatus = {
    jobId,
    phase: 'validating',
    epoch: 1,
    attempt: 0,
    tier: spec?.tier,
    priority: spec?.priority,
    cancelRequested: false,
    checkpointMs: 0,
  };
  /** Placements delivered by the scheduler, by epoch: one for the next epoch can arrive before the requeue that starts it returns. */
  const deliveries = new Map<number, PlacedDelivery>();
  let requeueAsked: string | undefined;
  let runScope: CancellationScope | undefined;
  /** The run activity already recorded completion and released the devices. */
  let finishedByRun = false;
  /** A preemption asked of this job, and the preemptor once its grace period ran out. */
  let preemptFor: { preemptor: string; graceMs: number } | undefined;
  let preemptedFor: string | undefined;

  /** Moves to `phase`, keeping the search attributes current in one upsert (one history event). */
  const enter = (phase: JobState, waitingReason?: string, acceleratorType?: string): void => {
    status.phase = phase;
    status.waitingReason = waitingReason;
    upsertSearchAttributes([
      { key: JobStateKey, value: phase },
      { key: WaitingReasonKey, value: waitingReason ? waitingReason.slice(0, 250) : null },
      ...(acceleratorType ? [{ key: AcceleratorTypeKey, value: acceleratorType }] : []),
    ]);
    log.info('job phase', { jobId, event: `job.${phase}`, epoch: status.epoch, waitingReason });
  };
  const finished = (): boolean => (TERMINAL_STATES as readonly JobState[]).includes(status.phase) || status.phase === 'releasing';
  const requestCancel = (reason?: string): void => {
    if (status.cancelRequested) return;
    status.cancelRequested = true;
    log.info('cancel requested', { jobId, event: 'job.cancel-requested', reason: reason ?? 'none given', phase: status.phase });
    runScope?.cancel();
  };

  setHandler(statusQuery, () => status);
  setHandler(cancelSignal, requestCancel);
  setHandler(
    cancelUpdate,
    (reason) => {
      requestCancel(reason);
      return status;
    },
    {
      validator: (reason) => {
        if (typeof reason !== 'string') throw new Error(`cancel: reason ${JSON.stringify(reason)} must be a string`);
        if (finished()) throw new Error(`cancel: job ${jobId} is already ${status.phase}`);
        if (status.cancelRequested) throw new Error(`cancel: job ${jobId} is already being cancelled`);
      },
    },
  );
  setHandler(
    requeueUpdate,
    (reason) => {
      requeueAsked = reason || 'operator requeue';
      log.info('requeue requested', { jobId, event: 'job.requeue-requested', reason: requeueAsked, phase: status.phase });
      runScope?.cancel();
      return status;
    },
    {
      validator: (reason) => {
        if (typeof reason !== 'string') throw new Error(`requeue: reason ${JSON.stringify(reason)} must be a string`);
        if (status.phase !== 'placed' && status.phase !== 'running')
          throw new Error(`requeue: job ${jobId} is ${status.phase}; only a placed or running job can be requeued`);
        if (status.cancelRequested) throw new Error(`requeue: job ${jobId} is being cancelled`);
        if (requeueAsked !== undefined) throw new Error(`requeue: job ${jobId} is already being requeued`);
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
        if (finished() || status.phase === 'validating' || status.phase === 'admitting')
          throw new Error(`setPriority: job ${jobId} is ${status.phase}; only a queued, placed or running job has a priority to change`);
      },
    },
  );
  setHandler(preemptSignal, (p) => {
    if ((status.phase !== 'placed' && status.phase !== 'running') || preemptFor || status.cancelRequested) return;
    preemptFor = p;
    log.info('preemption requested', { jobId, event: 'job.preempt-requested', preemptor: p.preemptor, graceMs: p.graceMs });
  });
  setHandler(placedSignal, (d) => {
    if (d.epoch >= status.epoch) deliveries.set(d.epoch, d);
  });
  setHandler(waitingSignal, ({ epoch, reason }) => {
    if (epoch === status.epoch && status.phase === 'waiting' && !deliveries.has(epoch) && reason !== status.waitingReason)
      enter('waiting', reason);
  });

  const finish = async (result: JobResult): Promise<JobResult> => {
    await condition(allHandlersFinished);
    return result;
  };

  const problems = validateSpec(spec);
  if (problems.length) {
    const reason = `invalid spec: ${problems.join('; ')}`;
    enter('rejected', reason);
    return finish({ jobId, outcome: 'rejected', reason });
  }
  // The client set the submitted state at start; this task's own changes go out in one upsert below.
  status.phase = 'admitting' as JobState; // (widened: handlers change it too)
  const entry = await local.admitAndPlace(spec);
  if (!entry.admitted) {
    const reason = `not admitted: ${entry.problems.join('; ')}`;
    enter('rejected', reason);
    return finish({ jobId, outcome: 'rejected', reason });
  }
  status.epoch = entry.epoch;
  const waitDeadline = spec.maxWaitMs ? Date.now() + spec.maxWaitMs : undefined;
  let outcome: JobResult['outcome'] = 'completed';
  let reason: string | undefined;
  let placement: Placement | undefined;

  /** Waits for the scheduler's delivery (or finds the placement itself); undefined when cancelled or out of time. */
  const waitForPlacement = async (deadline?: number): Promise<Placement | 'cancelled' | 'timeout'> => {
    // The self-check backs off, so a job that waits for days keeps a short history.
    for (let every = PLACEMENT_CHECK_MS; ; every = Math.min(MAX_PLACEMENT_CHECK_MS, every * 2)) {
      const left = deadline === undefined ? every : Math.min(every, deadline - Date.now());
      if (left > 0) await condition(() => deliveries.has(status.epoch) || status.cancelRequested, left);
      if (status.cancelRequested) return 'cancelled';
      const delivered = deliveries.get(status.epoch);
      if (delivered) return delivered.placement;
      // Missed delivery, or a scheduler that stopped: look for ourselves (the check wakes it).
      const found = await acts.checkPlacement(jobId, status.epoch);
      if (found) return found;
      if (deadline !== undefined && Date.now() >= deadline) return 'timeout';
    }
  };

  const run = async (p: Placement): Promise<RunEnd> => {
    const epoch = status.epoch;
    status.attempt++;
    const failAtMs = status.attempt <= (spec.simulatedFailures ?? 0) ? Math.max(1, Math.floor(spec.durationMs / 2)) : undefined;
    const launch = { jobId, epoch, placement: p, durationMs: spec.durationMs, resumeFromMs: status.checkpointMs, failAtMs };
    enter('running', undefined, p.acceleratorType);
    runScope = new CancellationScope();
    let runDone = false;
    // Preemption: after the grace period (a durable timer) the run is stopped with a checkpoint,
    // unless the preemptor no longer wants the capacity by then.
    const graceWatch = async (): Promise<void> => {
      while (!runDone) {
        await condition(() => runDone || preemptFor !== undefined);
        if (runDone || !preemptFor) return;
        const p = preemptFor;
        status.waitingReason = `preempted for ${p.preemptor}: releasing after a ${p.graceMs} ms grace period`;
        upsertSearchAttributes([{ key: WaitingReasonKey, value: status.waitingReason.slice(0, 250) }]);
        await condition(() => runDone, p.graceMs);
        if (runDone) return;
        if (await acts.preemptionStands(jobId, p.preemptor)) {
          preemptedFor = p.preemptor;
          log.info('preempted', { jobId, event: 'job.preempted', preemptor: p.preemptor, victim: jobId });
          runScope?.cancel();
          return;
        }
        log.info('preemption dropped: the preemptor left', { jobId, event: 'job.preempt-dropped', preemptor: p.preemptor });
        preemptFor = undefined;
        status.waitingReason = undefined;
        upsertSearchAttributes([{ key: WaitingReasonKey, value: null }]);
      }
    };
    void graceWatch();
    try {
      if (status.cancelRequested || requeueAsked !== undefined) runScope.cancel();
      const seen = await runScope.run(() => watcher.runJob(launch));
      if (seen.state === 'succeeded') {
        finishedByRun = seen.finished === true;
        return { kind: 'succeeded' };
      }
      if (seen.state === 'lost') return { kind: 'lost', detail: seen.detail ?? 'node lost' };
      return { kind: 'failed', detail: seen.detail ?? `run ended ${seen.state}` };
    } catch (err) {
      if (!isCancellation(err)) throw err;
      const cancelling = status.cancelRequested;
      const preemptor = cancelling ? undefined : preemptedFor;
      const detail = cancelling ? 'cancelled' : preemptor ? `preempted for ${preemptor}` : `requeue: ${requeueAsked}`;
      const keep = !cancelling && spec.checkpointable === true;
      const stopped = await CancellationScope.nonCancellable(() => acts.stopRun(jobId, epoch, detail, keep));
      if (keep) status.checkpointMs = Math.max(status.checkpointMs, stopped.checkpointMs);
      if (cancelling) return { kind: 'cancelled' };
      if (stopped.state === 'succeeded') return { kind: 'succeeded' };
      if (preemptor) return { kind: 'preempted', detail, preemptor };
      return { kind: 'requeue', detail: requeueAsked ?? 'requeue' };
    } finally {
      runDone = true;
      runScope = undefined;
    }
  };

  try {
    let deadline = waitDeadline;
    // Placed on admission: straight to running, no waiting state and no scheduler round trip.
    if (entry.placement) deliveries.set(entry.epoch, { epoch: entry.epoch, placement: entry.placement });
    for (;;) {
      const ready = status.cancelRequested ? undefined : deliveries.get(status.epoch);
      if (!ready && status.phase !== 'waiting')
        enter(
          'waiting',
          status.lastRequeue ? `requeued: ${status.lastRequeue}` : (entry.waitingReason ?? 'queued: waiting for the next scheduling cycle'),
        );
      const got = ready ? ready.placement : await waitForPlacement(deadline);
      deadline = undefined;
      if (got === 'cancelled') {
        outcome = 'cancelled';
        break;
      }
      if (got === 'timeout') {
        outcome = 'failed';
        reason = `not placed within maxWaitMs ${spec.maxWaitMs}: ${status.waitingReason ?? 'waiting'}`;
        break;
      }
      placement = got;
      status.placement = got;
      status.phase = 'placed' as JobState;
      log.info('job placed', { jobId, event: 'job.placed', epoch: status.epoch, acceleratorType: got.acceleratorType });
      const end = await run(got);
      if (end.kind === 'succeeded') break;
      if (end.kind === 'cancelled') {
        outcome = 'cancelled';
        break;
      }
      if (end.kind === 'failed' && status.attempt >= (spec.maxAttempts ?? 1)) {
        outcome = 'failed';
        reason = `attempt ${status.attempt} of ${spec.maxAttempts ?? 1} failed: ${end.detail}`;
        break;
      }
      // Back to the queue, same position, new epoch.
      const why = end.kind === 'failed' ? `attempt ${status.attempt} failed: ${end.detail}` : end.kind === 'lost' ? end.detail : end.detail;
      enter('releasing');
      await CancellationScope.nonCancellable(async () => {
        status.epoch = await acts.requeue(jobId, status.epoch, status.attempt, why, end.kind === 'preempted' ? end.preemptor : undefined);
      });
      status.lastRequeue = why;
      status.placement = undefined;
      requeueAsked = undefined;
      preemptFor = undefined;
      preemptedFor = undefined;
      if (status.cancelRequested) {
        outcome = 'cancelled';
        break;
      }
    }
  } catch (err) {
    if (isCancellation(err)) outcome = 'cancelled';
    else if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.type === ErrorTypes.badRequest) {
      outcome = 'rejected';
      reason = err.cause.message;
    } else {
      outcome = 'failed';
      reason = err instanceof Error ? err.message : String(err);
    }
  } finally {
    // Release always runs, even when the workflow itself is being cancelled.
    await CancellationScope.nonCancellable(async () => {
      // Final state and release in one transaction: no cycle places it afterwards, and nothing
      // ever sees a finished job holding devices. A run that completed has done it already.
      if (!(finishedByRun && outcome === 'completed')) {
        enter('releasing');
        await acts.finish(jobId, status.epoch, outcome, reason ?? null);
      }
      enter(outcome, reason);
    });
  }
  return finish({ jobId, outcome, reason, placement: outcome === 'completed' ? placement : (status.placement ?? placement) });
}
