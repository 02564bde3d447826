// Capacity providers: every node belongs to a provider and carries its cost, and the simulated
// cloud keeps its state here, so a worker crash loses no request.
// - nodes gain their provider (default `owned`: the nodes there are the owned fleet), the offering
//   and provisioning request that made them, the price of a device-hour, whether they are spot,
//   and since when they hold nothing (kept by a trigger as their allocations come and go, for scale-in).
// - provision_requests: one row per request, keyed by the caller's request id (so a retried
//   provision is answered from the row, never made twice); its outcome is drawn when it is made
//   and revealed when it is due.
// - provider_nodes: the nodes a provider handed out, with their spot reclaim schedule.
// - provider_events: what providers report (node ready, provisioning failed, node lost, spot
//   reclaim notice), handled once by the autoscaler (handled_at).
// - autoscaler_settings: each region's limits and pause as its autoscaler last set them, for the
//   summary sent to peers.
import { Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE nodes
      ADD COLUMN provider text NOT NULL DEFAULT 'owned',
      ADD COLUMN offering text,
      ADD COLUMN provision_request text,
      ADD COLUMN price_per_device_hour double precision NOT NULL DEFAULT 0 CHECK (price_per_device_hour >= 0),
      ADD COLUMN spot boolean NOT NULL DEFAULT false,
      ADD COLUMN idle_since timestamptz;
    CREATE INDEX nodes_provider ON nodes (provider) WHERE provider <> 'owned';

    -- A provisioned node's idle_since is the moment its last allocation went (and NULL while it
    -- holds anything), so scale-in counts the idle limit from then, not from when it was seen.
    -- Runs after nodes_derive (BEFORE triggers fire by name), which has set free_whole.
    CREATE FUNCTION nodes_idle_since() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.free_whole = NEW.device_count THEN
        IF NEW.idle_since IS NULL THEN NEW.idle_since := clock_timestamp(); END IF;
      ELSE
        NEW.idle_since := NULL;
      END IF;
      RETURN NEW;
    END $$;
    CREATE TRIGGER nodes_idle_since BEFORE UPDATE OF free_milli ON nodes
      FOR EACH ROW WHEN (NEW.provision_request IS NOT NULL) EXECUTE FUNCTION nodes_idle_since();

    CREATE TABLE provision_requests (
      request_id text PRIMARY KEY,
      provider text NOT NULL,
      offering text NOT NULL,
      region text NOT NULL,
      count integer NOT NULL CHECK (count BETWEEN 1 AND 1000),
      state text NOT NULL CHECK (state IN ('provisioning', 'fulfilled', 'partial', 'failed')),
      -- Drawn when the request is made: nodes it will deliver (0: it fails) and why not all.
      outcome_granted integer NOT NULL CHECK (outcome_granted BETWEEN 0 AND count),
      outcome_error text,
      granted integer CHECK (granted BETWEEN 0 AND count),
      error text,
      requested_at timestamptz NOT NULL DEFAULT now(),
      ready_at timestamptz NOT NULL,
      settled_at timestamptz,
      CHECK ((state = 'provisioning') = (settled_at IS NULL))
    );
    CREATE INDEX provision_requests_open ON provision_requests (provider, ready_at) WHERE state = 'provisioning';

    CREATE TABLE provider_nodes (
      name text PRIMARY KEY,
      provider text NOT NULL,
      offering text NOT NULL,
      request_id text NOT NULL REFERENCES provision_requests(request_id),
      idx integer NOT NULL CHECK (idx >= 0),
      region text NOT NULL,
      state text NOT NULL CHECK (state IN ('running', 'released', 'reclaimed', 'lost')),
      ready_at timestamptz NOT NULL,
      notice_at timestamptz,
      reclaim_at timestamptz,
      noticed boolean NOT NULL DEFAULT false,
      ended_at timestamptz,
      UNIQUE (request_id, idx),
      CHECK ((notice_at IS NULL) = (reclaim_at IS NULL))
    );
    CREATE INDEX provider_nodes_running ON provider_nodes (provider, offering) WHERE state = 'running';

    CREATE TABLE provider_events (
      id bigserial PRIMARY KEY,
      provider text NOT NULL,
      region text NOT NULL,
      kind text NOT NULL CHECK (kind IN ('node-ready', 'provisioning-failed', 'node-lost', 'spot-reclaim-notice')),
      request_id text,
      node text,
      reclaim_at timestamptz,
      detail text,
      at timestamptz NOT NULL DEFAULT now(),
      handled_at timestamptz
    );
    CREATE INDEX provider_events_open ON provider_events (region, id) WHERE handled_at IS NULL;

    CREATE TABLE autoscaler_settings (
      region text PRIMARY KEY,
      limits jsonb NOT NULL,
      paused boolean NOT NULL,
      updated_at timestamptz NOT NULL DEFAULT now()
    );
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE autoscaler_settings; DROP TABLE provider_events; DROP TABLE provider_nodes; DROP TABLE provision_requests;
    DROP TRIGGER nodes_idle_since ON nodes; DROP FUNCTION nodes_idle_since();
    DROP INDEX nodes_provider;
    ALTER TABLE nodes DROP COLUMN provider, DROP COLUMN offering, DROP COLUMN provision_request,
      DROP COLUMN price_per_device_hour, DROP COLUMN spot, DROP COLUMN idle_since;
  `.execute(db);
}
