// Host CPU and memory beside the accelerators: a node may record its CPU (milli-cores) and memory
// (MiB), and an allocation the CPU and memory its worker holds. Like device shares, the free
// amounts move with the allocation rows inside PostgreSQL and CHECK constraints refuse going
// below zero, so concurrent allocators can never oversubscribe a host. A node without totals
// (NULL) does not track them: it has room for any CPU or memory, as every node had before.
import { Kysely, sql } from 'kysely';

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE nodes
      ADD COLUMN cpu_milli integer CHECK (cpu_milli >= 0),
      ADD COLUMN free_cpu_milli integer,
      ADD COLUMN memory_mib integer CHECK (memory_mib >= 0),
      ADD COLUMN free_memory_mib integer,
      ADD CONSTRAINT nodes_free_cpu CHECK ((cpu_milli IS NULL) = (free_cpu_milli IS NULL) AND free_cpu_milli BETWEEN 0 AND cpu_milli),
      ADD CONSTRAINT nodes_free_memory CHECK ((memory_mib IS NULL) = (free_memory_mib IS NULL) AND free_memory_mib BETWEEN 0 AND memory_mib);

    -- A worker's CPU and memory sit on one of its allocation rows (its first device); the other
    -- rows of that worker carry 0.
    ALTER TABLE allocations
      ADD COLUMN cpu_milli integer NOT NULL DEFAULT 0 CHECK (cpu_milli >= 0),
      ADD COLUMN memory_mib integer NOT NULL DEFAULT 0 CHECK (memory_mib >= 0);

    -- Free amounts follow the totals, whoever sets them: totals minus what allocations hold.
    CREATE FUNCTION nodes_host_free() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE held_cpu bigint; held_mem bigint;
    BEGIN
      SELECT coalesce(sum(cpu_milli), 0), coalesce(sum(memory_mib), 0) INTO held_cpu, held_mem
        FROM allocations WHERE node_id = NEW.id;
      NEW.free_cpu_milli := NEW.cpu_milli - held_cpu;
      NEW.free_memory_mib := NEW.memory_mib - held_mem;
      RETURN NEW;
    END $$;
    CREATE TRIGGER nodes_host_free BEFORE INSERT OR UPDATE OF cpu_milli, memory_mib ON nodes
      FOR EACH ROW EXECUTE FUNCTION nodes_host_free();

    -- One UPDATE per allocation row moves the device share and the host's CPU and memory
    -- together (NULL free amounts stay NULL: untracked).
    CREATE OR REPLACE FUNCTION allocations_apply() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        IF NEW.device_idx >= (SELECT device_count FROM nodes WHERE id = NEW.node_id) THEN
          RAISE EXCEPTION 'device % does not exist on node %', NEW.device_idx, NEW.node_id
            USING ERRCODE = 'check_violation';
        END IF;
        UPDATE nodes SET free_milli[NEW.device_idx + 1] = free_milli[NEW.device_idx + 1] - NEW.milli,
            free_cpu_milli = free_cpu_milli - NEW.cpu_milli,
            free_memory_mib = free_memory_mib - NEW.memory_mib
          WHERE id = NEW.node_id;
        RETURN NEW;
      ELSE
        UPDATE nodes SET free_milli[OLD.device_idx + 1] = free_milli[OLD.device_idx + 1] + OLD.milli,
            free_cpu_milli = free_cpu_milli + OLD.cpu_milli,
            free_memory_mib = free_memory_mib + OLD.memory_mib
          WHERE id = OLD.node_id;
        RETURN OLD;
      END IF;
    END $$;

    -- Candidate search for requests that need CPU or memory stays on the fit indexes (the
    -- host columns are filters on the range scan); nothing new to index.
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE OR REPLACE FUNCTION allocations_apply() RETURNS trigger LANGUAGE plpgsql AS $$
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
    DROP TRIGGER nodes_host_free ON nodes; DROP FUNCTION nodes_host_free();
    ALTER TABLE allocations DROP COLUMN cpu_milli, DROP COLUMN memory_mib;
    ALTER TABLE nodes DROP COLUMN cpu_milli, DROP COLUMN free_cpu_milli, DROP COLUMN memory_mib, DROP COLUMN free_memory_mib;
  `.execute(db);
}
