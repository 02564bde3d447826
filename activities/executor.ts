// The executor interface the lifecycle drives — launch, observe, stop, checkpoint — and the
// simulated executor behind it. The simulation keeps each run in the `executions` table, so a run
// outlives the worker that launched it: progress is time spent running, a checkpoint keeps
// progress across a requeue (for checkpointable jobs), a node marked down loses the run, and a
// job can be told to fail some attempts halfway (to exercise the retry policy).
import { sql, type Kysely } from 'kysely';
import type { Database, ExecutionState } from '../db/schema';
import { PREPARED } from '../db/connection';
import type { Placement } from '../api/types';

export interface LaunchInput {
  jobId: string;
  epoch: number;
  placement: Placement;
  durationMs: number;
  /** Progress to resume from (a checkpoint of an earlier attempt). */
  resumeFromMs: number;
  /** Fail when progress reaches this point (simulation only). */
  failAtMs?: number;
}

export interface Observation {
  state: ExecutionState;
  progressMs: number;
  durationMs: number;
  detail?: string;
}

export interface Executor {
  /** Starts the run; launching an already launched (job, epoch) is a no-op. */
  launch(input: LaunchInput): Promise<void>;
  /** Current state of the run; terminal states are succeeded, failed, lost, stopped. */
  observe(jobId: string, epoch: number): Promise<Observation>;
  /** Stops the run, keeping its last checkpoint; idempotent. */
  stop(jobId: string, epoch: number, detail: string): Promise<Observation>;
  /** Saves the run's progress so a later attempt resumes from it. */
  checkpoint(jobId: string, epoch: number): Promise<number>;
}

export class SimulatedExecutor implements Executor {
  constructor(private readonly db: Kysely<Database>) {}

  async launch(input: LaunchInput): Promise<void> {
    // Prepared: one insert by key, for every run.
    await sql`${sql.raw(PREPARED)}
      INSERT INTO executions (job_id, epoch, state, duration_ms, progress_ms, checkpoint_ms, fail_at_ms)
      VALUES (${input.jobId}, ${input.epoch}, 'running', ${input.durationMs}, ${Math.min(input.resumeFromMs, input.durationMs)},
              ${input.resumeFromMs}, ${input.failAtMs ?? null})
      ON CONFLICT (job_id, epoch) DO NOTHING`.execute(this.db);
  }

  /**
   * Advances a running run to now and settles it: succeeded at its duration, failed at its
   * failure point, lost when one of its nodes is down. One statement, so concurrent observers
   * agree.
   */
  async observe(jobId: string, epoch: number): Promise<Observation> {
    // bigint columns come back as strings (see db/schema.ts). Prepared: by key only, so the
    // generic plan is the custom one, and a running job's watcher runs it every second.
    const r = await sql<{ state: ExecutionState; progress_ms: string; duration_ms: string; detail: string | null }>`${sql.raw(PREPARED)}
      WITH cur AS (
        SELECT e.job_id, e.epoch, e.state, e.duration_ms, e.fail_at_ms,
               LEAST(e.duration_ms, e.progress_ms + (EXTRACT(EPOCH FROM clock_timestamp() - e.resumed_at) * 1000)::bigint) AS progress,
               (SELECT string_agg(DISTINCT n.name, ',') FROM allocations a JOIN nodes n ON n.id = a.node_id
                 WHERE a.job_id = e.job_id AND a.epoch = e.epoch AND n.state = 'down') AS down_nodes
        FROM executions e WHERE e.job_id = ${jobId} AND e.epoch = ${epoch} FOR UPDATE
      )
      UPDATE executions e SET
        progress_ms = CASE WHEN cur.state = 'running' THEN
                        CASE WHEN cur.fail_at_ms IS NOT NULL THEN LEAST(cur.progress, cur.fail_at_ms) ELSE cur.progress END
                      ELSE e.progress_ms END,
        resumed_at = clock_timestamp(),
        state = CASE
          WHEN cur.state <> 'running' THEN cur.state
          WHEN cur.down_nodes IS NOT NULL THEN 'lost'
          WHEN cur.fail_at_ms IS NOT NULL AND cur.progress >= cur.fail_at_ms THEN 'failed'
          WHEN cur.progress >= cur.duration_ms THEN 'succeeded'
          ELSE 'running' END,
        detail = CASE
          WHEN cur.state <> 'running' THEN e.detail
          WHEN cur.down_nodes IS NOT NULL THEN 'node down: ' || cur.down_nodes
          WHEN cur.fail_at_ms IS NOT NULL AND cur.progress >= cur.fail_at_ms THEN 'simulated failure at ' || cur.fail_at_ms || ' ms'
          ELSE e.detail END
      FROM cur WHERE e.job_id = cur.job_id AND e.epoch = cur.epoch
      RETURNING e.state, e.progress_ms, e.duration_ms, e.detail`.execute(this.db);
    const row = r.rows[0];
    if (!row) throw new Error(`no run of job ${jobId} epoch ${epoch} was launched`);
    return { state: row.state, progressMs: Number(row.progress_ms), durationMs: Number(row.duration_ms), detail: row.detail ?? undefined };
  }

  private async launched(jobId: string, epoch: number): Promise<boolean> {
    return (
      (await this.db.selectFrom('executions').select('state').where('job_id', '=', jobId).where('epoch', '=', epoch).executeTakeFirst()) !==
      undefined
    );
  }

  async stop(jobId: string, epoch: number, detail: string): Promise<Observation> {
    if (!(await this.launched(jobId, epoch))) {
      // Stopped before it was launched (cancelled while its launch was still queued): record the
      // run as stopped, so a launch arriving late finds it stopped and does nothing.
      await this.db
        .insertInto('executions')
        .values({ job_id: jobId, epoch, state: 'stopped', duration_ms: 1, detail: `stopped before launch: ${detail}` })
        .onConflict((oc) => oc.columns(['job_id', 'epoch']).doNothing())
        .execute();
    }
    const seen = await this.observe(jobId, epoch);
    if (seen.state !== 'running') return seen;
    await this.db
      .updateTable('executions')
      .set({ state: 'stopped', detail })
      .where('job_id', '=', jobId)
      .where('epoch', '=', epoch)
      .where('state', '=', 'running')
      .execute();
    return { ...seen, state: 'stopped', detail };
  }

  async checkpoint(jobId: string, epoch: number): Promise<number> {
    if (!(await this.launched(jobId, epoch))) return 0;
    const seen = await this.observe(jobId, epoch);
    await this.db
      .updateTable('executions')
      .set({ checkpoint_ms: seen.progressMs })
      .where('job_id', '=', jobId)
      .where('epoch', '=', epoch)
      .execute();
    return seen.progressMs;
  }
}
