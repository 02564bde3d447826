// Reliability: a run's times in milliseconds fit any valid spec. `durationMs` may be up to 30
// days (2.59e9 ms), beyond a 32-bit integer (2.15e9), so a run's duration, progress, checkpoint
// and failure point become bigint. pg reads bigint as a string: readers convert with Number()
// (exact, every value is far below 2^53).
import { Kysely, sql } from 'kysely';

const COLUMNS = ['duration_ms', 'progress_ms', 'checkpoint_ms', 'fail_at_ms'] as const;

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE executions ${sql.raw(COLUMNS.map((c) => `ALTER COLUMN ${c} TYPE bigint`).join(', '))}`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  // Refused (out of range) while a run longer than ~24.8 days is recorded: nothing is truncated.
  await sql`ALTER TABLE executions ${sql.raw(COLUMNS.map((c) => `ALTER COLUMN ${c} TYPE integer`).join(', '))}`.execute(db);
}
