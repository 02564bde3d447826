// The jobs table mirrors each job's lifecycle for queries and the invariant checker.
import type { Kysely } from 'kysely';
import type { Database, JobState } from '../db/schema';
import type { JobSpec } from '../api/types';
import { staleEpoch } from './errors';

export async function registerJob(db: Kysely<Database>, spec: JobSpec, region: string, workflowId: string): Promise<void> {
  // A retried registration (same job, same workflow) is a no-op.
  await db
    .insertInto('jobs')
    .values({
      id: spec.jobId, tenant: spec.tenant, tier: spec.tier, region, workflow_id: workflowId,
      spec: JSON.stringify(spec), state: 'waiting', epoch: 1,
    })
    .onConflict((oc) => oc.column('id').doNothing())
    .execute();
}

/** Moves a job to `state` unless a newer epoch owns it. */
export async function setJobState(
  db: Kysely<Database>,
  jobId: string,
  epoch: number,
  state: JobState,
  waitingReason: string | null = null,
): Promise<void> {
  const res = await db
    .updateTable('jobs')
    .set({ state, waiting_reason: waitingReason, updated_at: new Date() })
    .where('id', '=', jobId)
    .where('epoch', '<=', epoch)
    .executeTakeFirst();
  if (res.numUpdatedRows === 0n) {
    const job = await db.selectFrom('jobs').select('epoch').where('id', '=', jobId).executeTakeFirst();
    if (job) throw staleEpoch(jobId, epoch, job.epoch);
  }
}
