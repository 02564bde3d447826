// Lifecycle schema: per-tenant admission policy, quota usage kept beside each quota rule, the
// queue position and priority of every job, the quota each live job is charged, and the
// executor's record of each run (so a run survives worker crashes and requeues).
import { Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    -- Admission policy, inherited down the tenant tree: the nearest tenant (self first) that
    -- sets a field decides it; NULL means "no rule here".
    ALTER TABLE tenants
      ADD COLUMN allowed_tiers text[],
      ADD COLUMN allowed_types text[],
      ADD COLUMN max_devices_per_job integer CHECK (max_devices_per_job > 0),
      ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

    -- Usage of the rule's whole subtree in milli-devices, changed only in the transaction that
    -- writes or deletes the allocations it counts.
    ALTER TABLE quotas ADD COLUMN used_milli bigint NOT NULL DEFAULT 0 CHECK (used_milli >= 0);

    ALTER TABLE jobs
      ADD COLUMN priority integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 1000),
      -- Queue position: set once at submission and kept across requeues.
      ADD COLUMN enqueued_at timestamptz NOT NULL DEFAULT now(),
      ADD COLUMN placed_at timestamptz,
      ADD COLUMN attempt integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
      -- Quota keys (tenant|type) charged for the current allocation, and by how much.
      ADD COLUMN quota_charge text[],
      ADD COLUMN quota_milli integer;
    -- Two workers of one gang may share one device (two shares); each holds its own row.
    ALTER TABLE allocations DROP CONSTRAINT allocations_job_id_epoch_node_id_device_idx_key;
    ALTER TABLE allocations ADD CONSTRAINT allocations_worker_device_key UNIQUE (job_id, epoch, node_id, device_idx, worker_idx);

    CREATE INDEX jobs_queue ON jobs (region, enqueued_at) WHERE state = 'waiting';
    CREATE INDEX jobs_live ON jobs (region) WHERE state IN ('placed', 'running');

    -- The simulated executor's runs, one per (job, epoch). Progress of a running run is
    -- progress_ms plus the time since resumed_at; checkpoint_ms is what a restart keeps.
    CREATE TABLE executions (
      job_id text NOT NULL REFERENCES jobs(id),
      epoch integer NOT NULL,
      state text NOT NULL CHECK (state IN ('running', 'succeeded', 'failed', 'lost', 'stopped')),
      duration_ms integer NOT NULL CHECK (duration_ms > 0),
      progress_ms integer NOT NULL DEFAULT 0 CHECK (progress_ms >= 0),
      checkpoint_ms integer NOT NULL DEFAULT 0 CHECK (checkpoint_ms >= 0),
      resumed_at timestamptz NOT NULL DEFAULT now(),
      fail_at_ms integer,
      detail text,
      PRIMARY KEY (job_id, epoch)
    );
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE executions;
    ALTER TABLE allocations DROP CONSTRAINT allocations_worker_device_key;
    ALTER TABLE allocations ADD CONSTRAINT allocations_job_id_epoch_node_id_device_idx_key UNIQUE (job_id, epoch, node_id, device_idx);
    DROP INDEX jobs_queue; DROP INDEX jobs_live;
    ALTER TABLE jobs DROP COLUMN priority, DROP COLUMN enqueued_at, DROP COLUMN placed_at, DROP COLUMN attempt,
      DROP COLUMN quota_charge, DROP COLUMN quota_milli;
    ALTER TABLE quotas DROP COLUMN used_milli;
    ALTER TABLE tenants DROP COLUMN allowed_tiers, DROP COLUMN allowed_types, DROP COLUMN max_devices_per_job, DROP COLUMN updated_at;
  `.execute(db);
}
