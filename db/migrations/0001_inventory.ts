// First inventory schema: accelerator types, clusters, topology-tagged nodes with per-device free
// capacity, jobs, allocations, tenants and quotas. Device capacity is kept by a trigger on
// allocations, and CHECK constraints refuse any over-subscription, so no code path can hand one
// device (or more than its whole share) to two live allocations.
import { Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE accelerator_types (
      name text PRIMARY KEY,
      family text NOT NULL CHECK (family IN ('gpu', 'npu')),
      model text NOT NULL,
      memory_mib integer NOT NULL CHECK (memory_mib >= 0)
    );

    CREATE TABLE clusters (
      id serial PRIMARY KEY,
      region text NOT NULL,
      provider text NOT NULL,
      name text NOT NULL,
      UNIQUE (region, name)
    );

    CREATE TABLE nodes (
      id serial PRIMARY KEY,
      cluster_id integer NOT NULL REFERENCES clusters(id),
      name text NOT NULL UNIQUE,
      accelerator_type text NOT NULL REFERENCES accelerator_types(name),
      pod text NOT NULL,
      rack text NOT NULL,
      state text NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'cordoned', 'draining', 'down')),
      labels jsonb NOT NULL DEFAULT '{}',
      device_count smallint NOT NULL CHECK (device_count BETWEEN 1 AND 64),
      free_milli smallint[] NOT NULL,
      free_whole smallint NOT NULL,
      max_partial smallint NOT NULL,
      CHECK (cardinality(free_milli) = device_count),
      CHECK (0 <= ALL (free_milli) AND 1000 >= ALL (free_milli))
    );

    -- Derived columns are computed here, whoever writes free_milli.
    CREATE FUNCTION nodes_derive() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' AND NEW.free_milli IS NULL THEN
        NEW.free_milli := array_fill(1000::smallint, ARRAY[NEW.device_count]);
      END IF;
      SELECT count(*) FILTER (WHERE f = 1000),
             coalesce(max(f) FILTER (WHERE f > 0 AND f < 1000), 0)
        INTO NEW.free_whole, NEW.max_partial
        FROM unnest(NEW.free_milli) AS f;
      RETURN NEW;
    END $$;
    CREATE TRIGGER nodes_derive BEFORE INSERT OR UPDATE OF free_milli ON nodes
      FOR EACH ROW EXECUTE FUNCTION nodes_derive();

    -- Best-fit candidate search for whole devices and for shares: one index range scan each.
    CREATE INDEX nodes_whole_fit ON nodes (accelerator_type, free_whole, id) WHERE state = 'ready';
    CREATE INDEX nodes_share_fit ON nodes (accelerator_type, max_partial, id)
      WHERE state = 'ready' AND max_partial > 0;
    CREATE INDEX nodes_rack ON nodes (rack);

    CREATE TABLE tenants (
      path text PRIMARY KEY,
      parent text REFERENCES tenants(path),
      active boolean NOT NULL DEFAULT true
    );

    CREATE TABLE quotas (
      tenant text NOT NULL REFERENCES tenants(path),
      accelerator_type text NOT NULL REFERENCES accelerator_types(name),
      nominal integer NOT NULL CHECK (nominal >= 0),
      borrowing_limit integer CHECK (borrowing_limit >= 0),
      lending_limit integer CHECK (lending_limit >= 0),
      PRIMARY KEY (tenant, accelerator_type)
    );

    CREATE TABLE jobs (
      id text PRIMARY KEY,
      tenant text NOT NULL,
      tier text NOT NULL,
      region text NOT NULL,
      workflow_id text NOT NULL UNIQUE,
      spec jsonb NOT NULL,
      state text NOT NULL CHECK (state IN
        ('submitted','waiting','placed','running','completed','failed','cancelled','rejected')),
      epoch integer NOT NULL DEFAULT 1 CHECK (epoch >= 1),
      waiting_reason text,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX jobs_state ON jobs (state, created_at);

    CREATE TABLE allocations (
      id bigserial PRIMARY KEY,
      job_id text NOT NULL REFERENCES jobs(id),
      epoch integer NOT NULL,
      node_id integer NOT NULL REFERENCES nodes(id),
      device_idx smallint NOT NULL CHECK (device_idx >= 0),
      milli smallint NOT NULL CHECK (milli BETWEEN 1 AND 1000),
      worker_idx smallint NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL DEFAULT now(),
      UNIQUE (job_id, epoch, node_id, device_idx)
    );
    CREATE INDEX allocations_node ON allocations (node_id);

    -- The device's free share moves with every allocation row; the CHECK on nodes refuses
    -- a share that would go below zero, so over-allocation fails inside PostgreSQL.
    CREATE FUNCTION allocations_apply() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        IF NEW.device_idx >= (SELECT device_count FROM nodes WHERE id = NEW.node_id) THEN
          RAISE EXCEPTION 'device % does not exist on node %', NEW.device_idx, NEW.node_id
            USING ERRCODE = 'check_violation';
        END IF;
        UPDATE nodes SET free_milli[NEW.device_idx + 1] = free_milli[NEW.device_idx + 1] - NEW.milli
          WHERE id = NEW.node_id;
        RETURN NEW;
      ELSE
        UPDATE nodes SET free_milli[OLD.device_idx + 1] = free_milli[OLD.device_idx + 1] + OLD.milli
          WHERE id = OLD.node_id;
        RETURN OLD;
      END IF;
    END $$;
    CREATE TRIGGER allocations_apply AFTER INSERT OR DELETE ON allocations
      FOR EACH ROW EXECUTE FUNCTION allocations_apply();
    CREATE FUNCTION allocations_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'allocations are immutable: release and allocate again'
        USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TRIGGER allocations_immutable BEFORE UPDATE ON allocations
      FOR EACH ROW EXECUTE FUNCTION allocations_immutable();
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE allocations; DROP FUNCTION allocations_apply(); DROP FUNCTION allocations_immutable();
    DROP TABLE jobs; DROP TABLE quotas; DROP TABLE tenants; DROP TABLE nodes; DROP FUNCTION nodes_derive();
    DROP TABLE clusters; DROP TABLE accelerator_types;
  `.execute(db);
}
