// The run activity: checks the placement it was handed against the database, launches the run
// through the executor and watches it until it ends, heartbeating its progress. A worker crash or
// a cancellation only stops the watching; the run itself lives in the executor, and a retry picks
// the same run up. A launch that keeps failing, or an error no retry can mend, fails the attempt
// (a non-retryable `RunFailed`): the job then fails or retries as its spec says, and is released.
import { Context } from '@temporalio/activity';
import { sql } from 'kysely';
import type { Placement, StoredJobState, WorkerPlacement } from '../api/types';
import { PREPARED } from '../db/connection';
import { rootMessage, runFailed } from '../api/errors';
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

/**
 * Attempts of the run activity after which a launch that still fails gives the attempt up. With
 * the watcher's backoff (0.5 s doubling) that is about 8 s of trying. A lost database connection
 * does not count against it: the database comes back.
 */
export const MAX_LAUNCH_ATTEMPTS = 5;

/**
 * How a watch ended. `placement` is set when the database's placement differs from the one the
 * run was handed (the run used the database's). A placement the database never made ends as
 * `lost`, before anything is launched: the job goes back to the queue.
 */
export type RunOutcome = Observation & {
  finished?: boolean;
  placement?: Placement;
  /** Nothing was launched (the placement was not the database's): there is no run to stop. */
  notLaunched?: boolean;
};

export async function watchRun(region: Region, input: LaunchInput): Promise<RunOutcome> {
  const ctx = Context.current();
  const { jobId, epoch } = input;
  const checked = await placementOnRecord(region, input);
  if ('notPlaced' in checked) {
    ctx.log.warn('run refused: not placed', { jobId, epoch, event: 'run.not-placed', detail: checked.notPlaced });
    return { state: 'lost', progressMs: 0, durationMs: input.durationMs, detail: checked.notPlaced, notLaunched: true };
  }
  const { placement, corrected } = checked;
  if (corrected)
    ctx.log.warn('run placement corrected from the database', {
      jobId,
      epoch,
      event: 'run.placement-corrected',
      delivered: input.placement.workers.map((w) => w.nodeName),
      nodes: placement.workers.map((w) => w.nodeName),
    });
  try {
    await region.executor.launch({ ...input, placement }); // a no-op if an earlier attempt launched it, or it was stopped first
  } catch (err) {
    throw launchFailure(err, jobId, epoch, ctx.info.attempt);
  }
  try {
    const seen = await watchLaunched(region, { ...input, placement });
    return corrected ? { ...seen, placement } : seen;
  } catch (err) {
    if (permanentDatabaseError(err))
      throw runFailed(`watching the run of job ${jobId} (epoch ${epoch}) failed: ${rootMessage(err)}`, err as Error);
    throw err;
  }
}

async function watchLaunched(region: Region, input: LaunchInput): Promise<RunOutcome> {
  const ctx = Context.current();
  const { jobId, epoch } = input;
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

/**
 * The placement to run, from the database: the job's allocation rows at its epoch. A placement
 * delivered by a message is only a claim; the allocator's rows are the truth. A job that has
 * already ended at this epoch is a retry after the run finished (its rows are released): the
 * executor answers for it.
 *
 * One round trip, which also moves a job placed at this epoch (holding its allocation) to
 * `running`: only a placed job becomes running, so a late launch never revives a job that has
 * ended, and `placed` and `running` are alike to everything else (both live, both holding). A
 * launch that then fails fails the attempt, which requeues or ends the job either way.
 */
async function placementOnRecord(
  region: Region,
  input: LaunchInput,
): Promise<{ placement: Placement; corrected: boolean } | { notPlaced: string }> {
  const { jobId, epoch } = input;
  // Prepared: every table is reached by key, so the generic plan is the custom one.
  const r = await sql<{
    state: StoredJobState;
    epoch: number;
    accelerator_type: string | null;
    workers: WorkerPlacement[] | null;
  }>`${sql.raw(PREPARED)}
    WITH held AS (
      SELECT a.worker_idx, a.node_id, n.name, n.accelerator_type, min(a.milli) AS milli,
             array_agg(a.device_idx ORDER BY a.device_idx) AS devices
      FROM allocations a JOIN nodes n ON n.id = a.node_id
      WHERE a.job_id = ${jobId} AND a.epoch = ${epoch}
      GROUP BY a.worker_idx, a.node_id, n.name, n.accelerator_type),
    running AS (
      UPDATE jobs SET state = 'running', updated_at = now()
      WHERE id = ${jobId} AND epoch = ${epoch} AND state = 'placed' AND EXISTS (SELECT 1 FROM held)
      RETURNING 1)
    SELECT j.state, j.epoch,
      (SELECT min(accelerator_type) FROM held) AS accelerator_type,
      (SELECT json_agg(json_build_object('workerIdx', worker_idx, 'nodeId', node_id, 'nodeName', name, 'deviceIdx', devices, 'milli', milli)
                       ORDER BY worker_idx) FROM held) AS workers
    FROM jobs j WHERE j.id = ${jobId}`.execute(region.db);
  const job = r.rows[0];
  const held: Placement | undefined =
    job?.workers && job.accelerator_type !== null
      ? { jobId, epoch, acceleratorType: job.accelerator_type, workers: job.workers }
      : undefined;
  if (job && job.epoch === epoch && (job.state === 'placed' || job.state === 'running') && held)
    return { placement: held, corrected: !samePlacement(held, input.placement) };
  if (job && job.epoch === epoch && (job.state === 'completed' || job.state === 'failed' || job.state === 'cancelled'))
    return { placement: input.placement, corrected: false };
  const where = job ? `it is ${job.state} at epoch ${job.epoch}` : 'it is not registered';
  return {
    notPlaced: `not placed: the database holds no placement of job ${jobId} at epoch ${epoch} (${where}); the placement delivered to it was not the allocator's`,
  };
}

/** The same devices for the same workers (the node names and type follow from the node ids). */
function samePlacement(held: Placement, delivered: Placement): boolean {
  const key = (p: Placement) =>
    JSON.stringify(
      p.workers
        .map((w) => [w.workerIdx, w.nodeId, [...w.deviceIdx].sort((x, y) => x - y), w.milli])
        .sort((x, y) => Number(x[0]) - Number(y[0])),
    );
  try {
    return key(held) === key(delivered);
  } catch {
    return false; // a delivered placement of the wrong shape (sent before messages were checked) is not the one held
  }
}

/**
 * What a failed launch becomes: retried while it may still succeed; a non-retryable `RunFailed`
 * once it cannot (a database refusal of the data), or after MAX_LAUNCH_ATTEMPTS attempts. A lost
 * database connection is always retried.
 */
function launchFailure(err: unknown, jobId: string, epoch: number, attempt: number): unknown {
  if (transientDatabaseError(err)) return err;
  if (!permanentDatabaseError(err) && attempt < MAX_LAUNCH_ATTEMPTS) return err;
  const tries = attempt > 1 ? ` on ${attempt} attempts` : '';
  return runFailed(`launch of job ${jobId} (epoch ${epoch}) failed${tries}: ${rootMessage(err)}`, err instanceof Error ? err : undefined);
}

const sqlState = (err: unknown): string | undefined => {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
};

/** PostgreSQL refused the data or the statement (data exception, constraint, syntax or schema): the same statement fails again. */
export function permanentDatabaseError(err: unknown): boolean {
  const code = sqlState(err);
  return code !== undefined && /^(22|23|42)[0-9A-Z]{3}$/.test(code);
}

/** The connection to PostgreSQL was lost or refused, or the server is restarting: worth retrying. */
export function transientDatabaseError(err: unknown): boolean {
  const code = sqlState(err);
  if (code === undefined) return err instanceof Error && /Connection terminated/.test(err.message);
  return (
    /^(08|53|57P)/.test(code) || code === '40001' || code === '40P01' || ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE'].includes(code)
  );
}
