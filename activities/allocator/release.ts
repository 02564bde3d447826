// Releasing a job's devices, and ending a job, each in one statement.
import { sql, type Kysely } from 'kysely';
import type { Database } from '../../db/schema';
import { PREPARED } from '../../db/connection';
import { withTransientRetry } from '../../db/transient';
import type { JobOutcome } from '../../api/types';
import { staleEpoch } from '../../api/errors';
import type { ReleaseResult } from './types';

/**
 * One statement, so one round trip: lock the job, delete its allocations (the trigger frees the
 * devices), give its quota charge back, and (when finishing) set the final state — unless the
 * first ending recorded stands — and drop capacity nominated to it. A statement reads the
 * snapshot it started with, so if the job row changed between that snapshot and the lock (a
 * placement of this job committing meanwhile), it changes nothing and runs again.
 */
export async function releaseJob(
  db: Kysely<Database>,
  jobId: string,
  epoch: number,
  final?: { state: JobOutcome; reason: string | null },
): Promise<ReleaseResult> {
  return withTransientRetry(async () => {
    for (let attempt = 1; ; attempt++) {
      // Prepared: lookups by key only, so its generic plan is as good as a custom one.
      const r = await sql<{
        found_epoch: number | null;
        moved: boolean | null;
        released: number;
        others_waiting: boolean | null;
      }>`${sql.raw(PREPARED)}
        WITH seen AS (SELECT xmin::text AS v FROM jobs WHERE id = ${jobId}),
        locked AS (SELECT id, epoch, region, quota_charge, quota_milli, xmin::text AS v FROM jobs WHERE id = ${jobId} FOR UPDATE),
        ok AS (SELECT l.* FROM locked l, seen s WHERE l.v = s.v AND l.epoch <= ${epoch}),
        del AS (DELETE FROM allocations a USING ok WHERE a.job_id = ok.id RETURNING 1),
        quota AS (
          UPDATE quotas SET used_milli = greatest(0, used_milli - ok.quota_milli) FROM ok
          WHERE ok.quota_milli IS NOT NULL AND quotas.tenant || '|' || quotas.accelerator_type = ANY(ok.quota_charge)
          RETURNING 1),
        job AS (
          UPDATE jobs j SET quota_charge = NULL, quota_milli = NULL,
            state = CASE WHEN ${final !== undefined} AND j.state NOT IN ('completed', 'failed', 'cancelled', 'rejected') THEN ${final?.state ?? null}::text ELSE j.state END,
            waiting_reason = CASE WHEN ${final !== undefined} AND j.state NOT IN ('completed', 'failed', 'cancelled', 'rejected') THEN ${final?.reason ?? null}::text ELSE j.waiting_reason END,
            updated_at = CASE WHEN ${final !== undefined} THEN now() ELSE j.updated_at END
          FROM ok WHERE j.id = ok.id AND (j.quota_charge IS NOT NULL OR ${final !== undefined})
          RETURNING 1),
        nom AS (DELETE FROM nominations WHERE ${final !== undefined} AND preemptor IN (SELECT id FROM ok) RETURNING 1)
        SELECT (SELECT epoch FROM locked) AS found_epoch,
               (SELECT l.v <> s.v FROM locked l, seen s) AS moved,
               (SELECT count(*)::int FROM del) AS released,
               -- Asked by finish only (whose caller wakes the scheduler on it): a probe of the queue
               -- index costs a plain release for nothing.
               CASE WHEN ${final !== undefined} THEN
                 EXISTS (SELECT 1 FROM jobs w, locked l WHERE w.region = l.region AND w.state = 'waiting' AND w.id <> l.id) END AS others_waiting`.execute(
        db,
      );
      const row = r.rows[0];
      if (row.found_epoch === null) return { released: 0 };
      if (row.found_epoch > epoch) throw staleEpoch(jobId, epoch, row.found_epoch);
      if (!row.moved)
        return row.others_waiting === null ? { released: row.released } : { released: row.released, othersWaiting: row.others_waiting };
      if (attempt >= 10) throw new Error(`release of job ${jobId}: its row kept changing under the release (10 attempts)`);
    }
  });
}
