// One run of a placed job: the executor launched and watched by the run activity, with a
// preemption's grace period on a durable timer and operator cancels and requeues reaching the run
// through a cancellation scope. Returns how the run ended; the lifecycle decides what follows.
import { CancellationScope, condition, isCancellation, log, patched, upsertSearchAttributes } from '@temporalio/workflow';
import type { Placement } from '../api/types';
import { WaitingReasonKey } from '../api/search-attributes';
import { ErrorTypes, findDomainError } from '../api/errors';
import { acts, local, watcher, type JobRecord } from './job-record';

/**
 * Patch: a run that could not be launched or watched (the run activity's non-retryable
 * `RunFailed`, after its bounded retries) is a failed attempt, retried or failed by the spec's
 * `maxAttempts` with the executor's reason. Runs started before it ended `failed` with the bare
 * activity failure.
 */
export const RUN_FAILURE_IS_AN_ATTEMPT = 'run-failure-is-an-attempt';

/** Patch: a run that ended lost or failed is stopped at the executor before its devices are released. */
export const STOP_AFTER_FAILED_RUN = 'stop-after-failed-run';

/**
 * Patch: a victim yields through local activities (the stand check at the end of its grace, the
 * stop and the requeue run inside its workflow task, not as three dispatched activities), so its
 * preemptor's room frees a few task round trips sooner. Victims before it yield as they began.
 */
export const LOCAL_YIELD = 'preempt-yield-local';

export type RunEnd =
  | { kind: 'succeeded' }
  | { kind: 'cancelled' }
  | { kind: 'failed' | 'lost' | 'requeue'; detail: string }
  | { kind: 'preempted'; detail: string; preemptor: string };

export async function runPlaced(job: JobRecord, p: Placement): Promise<RunEnd> {
  const { status, spec, jobId } = job;
  const epoch = status.epoch;
  status.attempt++;
  const failAtMs = status.attempt <= (spec.simulatedFailures ?? 0) ? Math.max(1, Math.floor(spec.durationMs / 2)) : undefined;
  const launch = { jobId, epoch, placement: p, durationMs: spec.durationMs, resumeFromMs: status.checkpointMs, failAtMs };
  job.enter('running', undefined, p.acceleratorType);
  const runScope = new CancellationScope();
  job.runScope = runScope;
  let runDone = false;
  // Preemption: after the grace period (a durable timer) the run is stopped with a checkpoint,
  // unless the preemptor no longer wants the capacity by then.
  const graceWatch = async (): Promise<void> => {
    while (!runDone) {
      await condition(() => runDone || job.preemptFor !== undefined);
      if (runDone || !job.preemptFor) return;
      const p = job.preemptFor;
      status.waitingReason = `preempted for ${p.preemptor}: releasing after a ${p.graceMs} ms grace period`;
      upsertSearchAttributes([{ key: WaitingReasonKey, value: status.waitingReason.slice(0, 250) }]);
      await condition(() => runDone, p.graceMs);
      if (runDone) return;
      if (await (patched(LOCAL_YIELD) ? local : acts).preemptionStands(jobId, p.preemptor)) {
        job.preemptedFor = p.preemptor;
        log.info('preempted', { jobId, event: 'job.preempted', preemptor: p.preemptor, victim: jobId });
        job.runScope?.cancel();
        return;
      }
      log.info('preemption dropped: the preemptor left', { jobId, event: 'job.preempt-dropped', preemptor: p.preemptor });
      job.preemptFor = undefined;
      status.waitingReason = undefined;
      upsertSearchAttributes([{ key: WaitingReasonKey, value: null }]);
    }
  };
  void graceWatch();
  try {
    if (status.cancelRequested || job.requeueAsked !== undefined) runScope.cancel();
    const seen = await runScope.run(() => watcher.runJob(launch));
    // The run went by the database's placement where the delivered one differed.
    if (seen.placement) status.placement = seen.placement;
    if (seen.state === 'succeeded') {
      job.finishedByRun = seen.finished === true;
      return { kind: 'succeeded' };
    }
    const end: RunEnd =
      seen.state === 'lost'
        ? { kind: 'lost', detail: seen.detail ?? 'node lost' }
        : { kind: 'failed', detail: seen.detail ?? `run ended ${seen.state}` };
    // A run lost or failed on one worker may go on on the others (a gang's survivors): stop it
    // before its devices are released and given to another job.
    if (!seen.notLaunched && patched(STOP_AFTER_FAILED_RUN))
      await CancellationScope.nonCancellable(() =>
        acts.stopRun(jobId, epoch, end.kind === 'lost' ? `lost: ${end.detail}` : `failed: ${end.detail}`, false),
      );
    return end;
  } catch (err) {
    if (!isCancellation(err)) {
      const failed = findDomainError(err, ErrorTypes.runFailed);
      if (failed && patched(RUN_FAILURE_IS_AN_ATTEMPT)) return { kind: 'failed', detail: failed.message };
      throw err;
    }
    const cancelling = status.cancelRequested;
    const preemptor = cancelling ? undefined : job.preemptedFor;
    const detail = cancelling ? 'cancelled' : preemptor ? `preempted for ${preemptor}` : `requeue: ${job.requeueAsked}`;
    const keep = !cancelling && spec.checkpointable === true;
    const stopper = preemptor && patched(LOCAL_YIELD) ? local : acts;
    const stopped = await CancellationScope.nonCancellable(() => stopper.stopRun(jobId, epoch, detail, keep));
    if (keep) status.checkpointMs = Math.max(status.checkpointMs, stopped.checkpointMs);
    if (cancelling) return { kind: 'cancelled' };
    if (stopped.state === 'succeeded') return { kind: 'succeeded' };
    if (preemptor) return { kind: 'preempted', detail, preemptor };
    return { kind: 'requeue', detail: job.requeueAsked ?? 'requeue' };
  } finally {
    runDone = true;
    job.runScope = undefined;
  }
}
