// The queue in rank order, and when a preemption's victims were told.
//
// `jobs_queue_rank` serves a scheduling cycle's read of the head of a region's queue
// (activities/cycle.ts waitingQueueQuery): waiting jobs by queueKey (scheduling/queue.ts), the
// effective priority with its aging counted from a fixed instant, highest first. A cycle used to
// read the 2,000 oldest waiting jobs and rank only those, so a premium job behind 2,000 older
// jobs that could not be placed was never read. The expression carries the default queue
// settings (tier weight 1000, 50 points per 60,000 ms waited) as constants, written out here as
// a migration must be: other settings order the queue by their own expression, without this
// index, and changing the defaults needs a new index. `date_part` of an interval is used because
// the epoch of a timestamptz is not immutable in PostgreSQL, so it cannot be indexed.
//
// `nominations.told_at`: when the preempt signal for the row's victim was last delivered; NULL
// until one is. A cycle tells a victim again when a nomination stands with no tell recorded (the
// first was lost after the nominations committed), or long after the last one.
import { Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE INDEX jobs_queue_rank ON jobs (
      region,
      (CASE tier WHEN 'premium' THEN 2000 WHEN 'standard' THEN 1000 WHEN 'basic' THEN 0 ELSE 0 END + priority
        - date_part('epoch', enqueued_at - TIMESTAMPTZ '2000-01-01T00:00:00.000Z') * 50000 / 60000) DESC,
      enqueued_at,
      id
    ) WHERE state = 'waiting';

    ALTER TABLE nominations ADD COLUMN told_at timestamptz;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE nominations DROP COLUMN told_at; DROP INDEX jobs_queue_rank;`.execute(db);
}
