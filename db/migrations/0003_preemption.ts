// Preemption and reservations: capacity nominated to a preemptor while its victims wind down,
// who preempted whom (no loops), and time-windowed capacity reservations per tenant and type.
import { Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE jobs ADD COLUMN preempted_by text[] NOT NULL DEFAULT '{}';

    -- Nodes whose capacity, as victims release it, is kept for one preemptor: the allocator
    -- places no other job there while the row exists.
    CREATE TABLE nominations (
      preemptor text NOT NULL REFERENCES jobs(id),
      victim text NOT NULL REFERENCES jobs(id),
      node_id integer NOT NULL REFERENCES nodes(id),
      created_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (preemptor, victim, node_id),
      CHECK (preemptor <> victim)
    );
    CREATE INDEX nominations_node ON nominations (node_id);
    CREATE INDEX nominations_victim ON nominations (victim);

    CREATE TABLE reservations (
      id text PRIMARY KEY,
      tenant text NOT NULL REFERENCES tenants(path),
      accelerator_type text NOT NULL REFERENCES accelerator_types(name),
      region text NOT NULL,
      devices integer NOT NULL CHECK (devices > 0),
      starts_at timestamptz NOT NULL,
      ends_at timestamptz NOT NULL,
      state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'active', 'ended', 'cancelled')),
      created_at timestamptz NOT NULL DEFAULT now(),
      CHECK (ends_at > starts_at)
    );
    CREATE INDEX reservations_live ON reservations (accelerator_type, starts_at) WHERE state IN ('pending', 'active');
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE reservations; DROP TABLE nominations; ALTER TABLE jobs DROP COLUMN preempted_by;`.execute(db);
}
