// The global tier: jobs that move between regions, and what a region knows of its peers.
// - jobs gain the handoff states (`waiting-abroad`, `handing-off`, `handed-off` at home;
//   `pending` at a peer), the peer a home job was offered or handed to and at which epoch, and, on
//   a copy, its home region and the home's epoch of that handoff. None of the new states is in the
//   queue (`state = 'waiting'`) or placeable, so a job is schedulable in one region at a time.
// - peer_summaries keeps the newest inventory summary per peer region (by version) and when it
//   arrived; a summary older than its TTL is treated as absent by its readers.
// - summary_version numbers the summaries this region publishes.
import { Kysely, sql } from 'kysely';

const STATES_BEFORE = `'submitted','waiting','placed','running','completed','failed','cancelled','rejected'`;
const STATES_NOW = `${STATES_BEFORE},'waiting-abroad','handing-off','handed-off','pending'`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
    ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN (${sql.raw(STATES_NOW)}));
    ALTER TABLE jobs
      ADD COLUMN handoff_peer text,
      ADD COLUMN handoff_epoch integer,
      ADD COLUMN origin_region text,
      ADD COLUMN origin_epoch integer,
      ADD CONSTRAINT jobs_handoff_check CHECK (
        (state IN ('handing-off', 'handed-off')) <= (handoff_peer IS NOT NULL AND handoff_epoch IS NOT NULL)),
      ADD CONSTRAINT jobs_origin_check CHECK ((origin_region IS NULL) = (origin_epoch IS NULL));
    CREATE TABLE peer_summaries (
      region text PRIMARY KEY,
      version bigint NOT NULL CHECK (version > 0),
      received_at timestamptz NOT NULL DEFAULT now(),
      summary jsonb NOT NULL
    );
    CREATE SEQUENCE summary_version;
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP SEQUENCE summary_version;
    DROP TABLE peer_summaries;
    ALTER TABLE jobs DROP CONSTRAINT jobs_origin_check, DROP CONSTRAINT jobs_handoff_check,
      DROP COLUMN handoff_peer, DROP COLUMN handoff_epoch, DROP COLUMN origin_region, DROP COLUMN origin_epoch;
    ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
    ALTER TABLE jobs ADD CONSTRAINT jobs_state_check CHECK (state IN (${sql.raw(STATES_BEFORE)}));
  `.execute(db);
}
