// The run activity: launches a placed job's run through the executor and watches it until it
// ends, heartbeating its progress. A worker crash or a cancellation only stops the watching; the
// run itself lives in the executor, and a retry picks the same run up.
import { Context } from '@temporalio/activity';
import type { LaunchInput, Observation } from './executor';
import { finishJob, type Region } from './region';

/**
 * How long a run's watcher goes without heartbeating: under the 5 s heartbeat timeout, and the
 * longest a cancellation waits to reach it (the server answers cancellation through heartbeats).
 */
export const QUIET_HEARTBEAT_MS = 2000;

/**
 * How often a running job's watcher observes the executor (each observation is a write), and so
 * how soon it notices a lost node or a failure; it also wakes when the run is due to end.
 */
export const OBSERVE_EVERY_MS = 1000;

export type RunOutcome = Observation & { finished?: boolean };

export async function watchRun(region: Region, input: LaunchInput): Promise<RunOutcome> {
  const ctx = Context.current();
  const { jobId, epoch } = input;
  await region.executor.launch(input); // a no-op if an earlier attempt launched it, or it was stopped first
  // Only a placed job becomes running: a late launch must not revive a job that has ended.
  await region.db
    .updateTable('jobs')
    .set({ state: 'running', updated_at: new Date() })
    .where('id', '=', jobId)
    .where('epoch', '=', epoch)
    .where('state', '=', 'placed')
    .execute();
  if (ctx.info.attempt === 1)
    ctx.log.info('executor launched', { jobId, epoch, event: 'executor.launch', resumeFromMs: input.resumeFromMs });
  const watchStarted = Date.now();
  // A first attempt has just launched the run, so it knows where the run stands without asking:
  // its first look is one observation interval (or the whole run, if shorter) away.
  if (ctx.info.attempt === 1) await ctx.sleep(Math.max(20, Math.min(OBSERVE_EVERY_MS, input.durationMs - input.resumeFromMs)));
  for (let first = true; ; first = false) {
    const seen = await region.executor.observe(jobId, epoch);
    // The first heartbeat goes to the server at once (later ones are throttled), so a short
    // run finishes without one: it starts after QUIET_HEARTBEAT_MS, well inside the timeout.
    if (Date.now() - watchStarted >= QUIET_HEARTBEAT_MS) ctx.heartbeat(seen.progressMs);
    if (first && ctx.info.attempt > 1)
      ctx.log.info('executor watch resumed', {
        jobId,
        epoch,
        event: 'executor.watch-resumed',
        progressMs: seen.progressMs,
        attempt: ctx.info.attempt,
      });
    if (seen.state === 'succeeded') {
      // The common ending, done here: final state and release in the run's own activity,
      // which spares every job one more activity and workflow task.
      await finishJob(region, jobId, epoch, 'completed', null);
      return { ...seen, finished: true };
    }
    if (seen.state !== 'running') return seen;
    await ctx.sleep(Math.max(20, Math.min(OBSERVE_EVERY_MS, seen.durationMs - seen.progressMs)));
  }
}
