// The service surface: who may call the HTTP API, what operators and admins did through it, the
// per-tenant limits on submissions, and the submissions it has taken (for idempotent submits).
// - api_keys: a key's secret is never stored, only the sha256 of the whole key; a key is bound to
//   a tenant subtree (`*`: every tenant) and a role, and revoked by setting revoked_at.
// - audit_log: one row per operator or admin action taken (who, what, when, target, reason,
//   outcome); append-only.
// - tenant_limits: max queued jobs and submissions per second (with a burst) for a tenant's
//   subtree; the nearest tenant with a row decides, else the API's defaults.
// - api_submissions: the spec hash a job id was first submitted with, so the same id with the
//   same spec gets the same answer and with another spec a conflict.
import { Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE api_keys (
      id text PRIMARY KEY CHECK (id ~ '^[a-z0-9]{8,32}$'),
      name text NOT NULL CHECK (length(name) BETWEEN 1 AND 120),
      tenant text NOT NULL CHECK (length(tenant) BETWEEN 1 AND 200),
      role text NOT NULL CHECK (role IN ('submitter', 'operator', 'admin')),
      secret_sha256 text NOT NULL CHECK (secret_sha256 ~ '^[0-9a-f]{64}$'),
      created_by text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      revoked_at timestamptz,
      revoked_by text
    );

    CREATE TABLE audit_log (
      id bigserial PRIMARY KEY,
      at timestamptz NOT NULL DEFAULT now(),
      actor text NOT NULL,
      actor_kind text NOT NULL CHECK (actor_kind IN ('api-key', 'oidc', 'bootstrap')),
      role text NOT NULL,
      action text NOT NULL,
      target text NOT NULL,
      tenant text,
      reason text NOT NULL CHECK (length(reason) BETWEEN 1 AND 4096),
      outcome text NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
      detail text,
      request jsonb NOT NULL DEFAULT '{}'
    );
    CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
    CREATE INDEX audit_log_tenant ON audit_log (tenant, id DESC);

    CREATE TABLE tenant_limits (
      tenant text PRIMARY KEY REFERENCES tenants(path),
      max_queued_jobs integer CHECK (max_queued_jobs >= 0),
      submit_per_second double precision CHECK (submit_per_second > 0),
      submit_burst integer CHECK (submit_burst >= 1),
      updated_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE api_submissions (
      job_id text PRIMARY KEY,
      tenant text NOT NULL,
      spec_sha256 text NOT NULL,
      submitted_by text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX api_submissions_tenant ON api_submissions (tenant, created_at);
    -- Listing a tenant subtree's jobs newest first, and counting its queue.
    CREATE INDEX jobs_tenant_created ON jobs (tenant, created_at DESC, id DESC);
    -- Counting a subtree's queue against its limit reads only the jobs not yet placed.
    CREATE INDEX jobs_tenant_queued ON jobs (tenant)
      WHERE state IN ('submitted', 'waiting', 'waiting-abroad', 'handing-off', 'pending');
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP INDEX jobs_tenant_queued; DROP INDEX jobs_tenant_created;
    DROP TABLE api_submissions; DROP TABLE tenant_limits; DROP TABLE audit_log; DROP TABLE api_keys;
  `.execute(db);
}
