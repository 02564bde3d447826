// The jobs table mirrors each job's lifecycle: its queue position and priority for the region
// scheduler, its state and epoch for the allocator and the invariant checker.
import { failpoint } from './failpoints';
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema';
import { PREPARED } from '../db/connection';
import { TERMINAL_STATES, type JobSpec, type StoredJobState } from '../api/types';
import { jobIdTaken, staleEpoch, unknownJob } from '../api/errors';

export interface Enqueued {
  epoch: number;
  state: StoredJobState;
  /** Queue position as epoch milliseconds. */
  enqueuedAt: number;
}

export const QUEUED_REASON = 'queued: waiting for the next scheduling cycle';

/**
 * Records a new job with its queue position. As `waiting` it is in the region's queue; as
 * `submitted` it is being placed on admission and no cycle or other admission sees it as queued
 * (see `joinQueue`). A retried call (same job) returns the existing row.
 *
 * A job id names one job in a region, once: an id held by another workflow (another tenant's
 * job), or by a job of this workflow id that has ended (an earlier run), is refused with a
 * non-retryable `JobIdTaken` that names neither the other job's tenant nor its workflow.
 */
export async function enqueueJob(
  db: Kysely<Database>,
  spec: JobSpec,
  region: string,
  workflowId: string,
  state: 'waiting' | 'submitted' | 'waiting-abroad' = 'waiting',
): Promise<Enqueued> {
  // Inserted, or (a retry, or the id taken) the row already there: one statement either way.
  // Prepared: by key only, so its generic plan is the custom one.
  const r = await sql<EnqueueRow>`${sql.raw(PREPARED)}
    WITH ins AS (
      INSERT INTO jobs (id, tenant, tier, priority, region, workflow_id, spec, state, epoch, waiting_reason)
      VALUES (${spec.jobId}, ${spec.tenant}, ${spec.tier}, ${spec.priority ?? 0}, ${region}, ${workflowId}, ${JSON.stringify(spec)}::jsonb,
              ${state}, 1, ${state === 'submitted' ? null : QUEUED_REASON})
      ON CONFLICT (id) DO NOTHING
      RETURNING epoch, state, enqueued_at, workflow_id)
    SELECT * FROM ins
    UNION ALL
    SELECT epoch, state, enqueued_at, workflow_id FROM jobs WHERE id = ${spec.jobId} AND NOT EXISTS (SELECT 1 FROM ins)`.execute(db);
  // A row another transaction inserted after this statement's snapshot: it waited for that
  // insert, so a fresh read sees it.
  const row =
    r.rows[0] ??
    (await db
      .selectFrom('jobs')
      .select(['epoch', 'state', 'enqueued_at', 'workflow_id'])
      .where('id', '=', spec.jobId)
      .executeTakeFirstOrThrow());
  return queueEntry(row, spec, region, workflowId);
}

/** The job's row as an insert or a read of it returns it. */
export interface EnqueueRow {
  epoch: number;
  state: StoredJobState;
  enqueued_at: Date;
  workflow_id: string;
}

/** The queue entry a row is for this workflow's job, or the refusal when the id is another job's (or an ended one's). */
export function queueEntry(row: EnqueueRow, spec: JobSpec, region: string, workflowId: string): Enqueued {
  if (row.workflow_id !== workflowId)
    throw jobIdTaken(
      `jobId: ${spec.jobId} is already taken in region ${region} by another job; job ids are unique in a region, choose another`,
    );
  // Admission runs in a run's first workflow task, before anything can end the job: an ended row is an earlier run's.
  if ((TERMINAL_STATES as readonly string[]).includes(row.state))
    throw jobIdTaken(`jobId: job ${spec.jobId} has already ${row.state} in region ${region}; a job id is used once, submit under a new id`);
  return { epoch: row.epoch, state: row.state, enqueuedAt: row.enqueued_at.getTime() };
}

/**
 * Takes back the row an admission that then refused the job inserted (`submitted`, holding
 * nothing, this workflow's): a refused job leaves nothing behind, and its id may be submitted
 * again. Idempotent.
 */
export async function withdrawSubmitted(db: Kysely<Database>, jobId: string, workflowId: string): Promise<void> {
  await db.deleteFrom('jobs').where('id', '=', jobId).where('workflow_id', '=', workflowId).where('state', '=', 'submitted').execute();
}

/** A job whose placement on admission did not happen joins the queue, keeping its position. */
export async function joinQueue(db: Kysely<Database>, jobId: string, reason: string): Promise<void> {
  await db
    .updateTable('jobs')
    .set({ state: 'waiting', waiting_reason: reason, updated_at: new Date() })
    .where('id', '=', jobId)
    .where('state', '=', 'submitted')
    .execute();
}

/** Whether the capacity this victim is asked to free is still wanted by `preemptor`. */
export async function preemptionStands(db: Kysely<Database>, victim: string, preemptor: string): Promise<boolean> {
  const row = await db
    .selectFrom('nominations')
    .select('node_id')
    .where('victim', '=', victim)
    .where('preemptor', '=', preemptor)
    .executeTakeFirst();
  return row !== undefined;
}

/**
 * After the caller released epoch `epoch`, puts the job back in the queue at epoch + 1 with its
 * original queue position. Idempotent: a retry after success returns the new epoch.
 */
export async function requeueJob(
  db: Kysely<Database>,
  jobId: string,
  epoch: number,
  attempt: number,
  reason: string,
  preemptedBy?: string,
): Promise<number> {
  await failpoint('job.requeue');
  const row = await db
    .updateTable('jobs')
    .set({
      epoch: epoch + 1,
      attempt,
      state: 'waiting',
      waiting_reason: `requeued: ${reason}`,
      placed_at: null,
      updated_at: new Date(),
      ...(preemptedBy ? { preempted_by: sql<string[]>`array_append(preempted_by, ${preemptedBy})` } : {}),
    })
    .where('id', '=', jobId)
    .where('epoch', '=', epoch)
    .returning('epoch')
    .executeTakeFirst();
  if (row) return row.epoch;
  const job = await db.selectFrom('jobs').select('epoch').where('id', '=', jobId).executeTakeFirst();
  if (!job) throw unknownJob(jobId);
  if (job.epoch === epoch + 1) return job.epoch;
  throw staleEpoch(jobId, epoch, job.epoch);
}

export async function setJobPriority(db: Kysely<Database>, jobId: string, priority: number): Promise<void> {
  const res = await db.updateTable('jobs').set({ priority, updated_at: new Date() }).where('id', '=', jobId).executeTakeFirst();
  if (res.numUpdatedRows === 0n) throw unknownJob(jobId);
}

/** Live jobs holding devices on a node, with their workflows: what a drain must move. */
export async function jobsOnNode(db: Kysely<Database>, nodeId: number): Promise<Array<{ id: string; workflowId: string; epoch: number }>> {
  const rows = await sql<{ id: string; workflow_id: string; epoch: number }>`
    SELECT DISTINCT j.id, j.workflow_id, j.epoch FROM allocations a JOIN jobs j ON j.id = a.job_id AND j.epoch = a.epoch
    WHERE a.node_id = ${nodeId} AND j.state IN ('placed', 'running') ORDER BY j.id`.execute(db);
  return rows.rows.map((r) => ({ id: r.id, workflowId: r.workflow_id, epoch: r.epoch }));
}
