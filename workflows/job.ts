// JobWorkflow: one job's lifecycle — admit, wait for placement, run, release — with the
// operator messages it answers declared beside it. Deterministic: all I/O is in activities.
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  defineQuery,
  defineSignal,
  isCancellation,
  log,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { SchedulerActivities } from '../activities';
import type { JobPhase, JobResult, JobSpec, JobStatus, Placement } from '../api/types';
import { validateSpec } from '../api/validation';
import { AcceleratorTypeKey, JobStateKey, WaitingReasonKey } from '../api/search-attributes';
import { ErrorTypes } from '../activities/errors';
import type { JobState } from '../db/schema';

export const cancelSignal = defineSignal<[reason?: string]>('cancel');
export const statusQuery = defineQuery<JobStatus>('status');

export interface JobWorkflowInput {
  spec: JobSpec;
  region: string;
}

const NON_RETRYABLE = Object.values(ErrorTypes);

const bookkeeping = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '200ms', maximumInterval: '10s', nonRetryableErrorTypes: NON_RETRYABLE },
});

const executor = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '30 days',
  // A worker that dies mid-run is noticed within seconds; the retry resumes from the last heartbeat.
  heartbeatTimeout: '5s',
  retry: { initialInterval: '500ms', maximumInterval: '10s', nonRetryableErrorTypes: NON_RETRYABLE },
});

/** Longest wait between placement attempts while the job cannot fit. */
const MAX_RETRY_WAIT_MS = 30_000;

export async function JobWorkflow({ spec }: JobWorkflowInput): Promise<JobResult> {
  const jobId = typeof spec?.jobId === 'string' ? spec.jobId : 'invalid';
  const epoch = 1;
  const status: JobStatus = { jobId, phase: 'validating', epoch, cancelRequested: false };
  let runScope: CancellationScope | undefined;

  setHandler(statusQuery, () => status);
  setHandler(cancelSignal, (reason) => {
    if (status.cancelRequested) return;
    status.cancelRequested = true;
    log.info('cancel requested', { jobId, event: 'job.cancel-requested', reason: reason ?? 'none given', phase: status.phase });
    runScope?.cancel();
  });

  const enter = (phase: JobPhase, waitingReason?: string): void => {
    status.phase = phase;
    status.waitingReason = waitingReason;
    upsertSearchAttributes([
      { key: JobStateKey, value: phase },
      { key: WaitingReasonKey, value: waitingReason ? waitingReason.slice(0, 250) : null },
    ]);
    log.info('job phase', { jobId, event: `job.${phase}`, waitingReason });
  };

  const problems = validateSpec(spec);
  if (problems.length) {
    const reason = `invalid spec: ${problems.join('; ')}`;
    enter('rejected', reason);
    return { jobId, outcome: 'rejected', reason };
  }

  await bookkeeping.registerJob(spec);
  let outcome: JobResult['outcome'] = 'completed';
  let reason: string | undefined;
  let placement: Placement | undefined;
  try {
    placement = await waitForPlacement(spec, epoch, status, enter);
    if (!placement) {
      outcome = 'cancelled';
    } else {
      status.placement = placement;
      upsertSearchAttributes([{ key: AcceleratorTypeKey, value: placement.acceleratorType }]);
      enter('running');
      await bookkeeping.setJobState(jobId, epoch, 'running');
      runScope = new CancellationScope();
      const p = placement;
      if (!status.cancelRequested) await runScope.run(() => executor.runSimulated({ jobId, placement: p, durationMs: spec.durationMs }));
      if (status.cancelRequested) outcome = 'cancelled';
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
      enter('releasing');
      await bookkeeping.release(jobId, epoch);
      const finalState: JobState = outcome;
      await bookkeeping.setJobState(jobId, epoch, finalState, reason);
      enter(outcome, reason);
    });
  }
  return { jobId, outcome, reason, placement };
}

/** Tries to place the job until it fits or is cancelled, backing off while nothing fits. */
async function waitForPlacement(
  spec: JobSpec,
  epoch: number,
  status: JobStatus,
  enter: (phase: JobPhase, reason?: string) => void,
): Promise<Placement | undefined> {
  let wait = 500;
  enter('waiting', 'placement pending');
  while (!status.cancelRequested) {
    const result = await bookkeeping.allocate({ jobId: spec.jobId, epoch, request: spec.request });
    if (result.placed) return result.placement;
    if (status.waitingReason !== result.reason) enter('waiting', result.reason);
    await condition(() => status.cancelRequested, wait);
    wait = Math.min(MAX_RETRY_WAIT_MS, wait * 2);
  }
  return undefined;
}
