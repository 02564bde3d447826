// Capacity bookkeeping once per statement instead of once per allocation row. The row trigger of
// 0001/0004 ran two queries for every allocation row and updated a node once per device it took,
// so an 8-device worker wrote eight versions of its node row (and of every index on nodes). These
// statement triggers read the statement's inserted or deleted rows as a transition table, sum
// them per node and per device, and update each touched node once. The guarantees are unchanged:
// the nodes CHECKs refuse a share below zero (or above a whole device) and host CPU or memory
// below zero, and a device index the node does not have is refused, all inside the statement
// that wrote the allocation rows.
import { Kysely, sql } from 'kysely';

/** The UPDATE of nodes for a transition table of allocation rows; sign -1 takes capacity, +1 gives it back. */
const applyRows = (rows: 'new_rows' | 'old_rows', sign: -1 | 1) => `
      UPDATE nodes n SET
          free_milli = node_shares_moved(n.id, n.free_milli, t.devices, t.millis, ${sign}),
          free_cpu_milli = n.free_cpu_milli + ${sign} * t.cpu,
          free_memory_mib = n.free_memory_mib + ${sign} * t.mem
        FROM (
          SELECT node_id, array_agg(device_idx) AS devices, array_agg(milli) AS millis,
                 sum(cpu_milli) AS cpu, sum(memory_mib) AS mem
          FROM ${rows} GROUP BY node_id
        ) t
        WHERE n.id = t.node_id;`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql
    .raw(
      `
    DROP TRIGGER allocations_apply ON allocations;
    DROP FUNCTION allocations_apply();

    -- A node's device shares after moving share millis[k] on device devices[k], for each k.
    CREATE FUNCTION node_shares_moved(node integer, free smallint[], devices smallint[], millis smallint[], sign integer)
    RETURNS smallint[] LANGUAGE plpgsql IMMUTABLE AS $$
    BEGIN
      FOR k IN 1 .. cardinality(devices) LOOP
        IF devices[k] >= cardinality(free) THEN
          RAISE EXCEPTION 'device % does not exist on node %', devices[k], node USING ERRCODE = 'check_violation';
        END IF;
        free[devices[k] + 1] := free[devices[k] + 1] + sign * millis[k];
      END LOOP;
      RETURN free;
    END $$;

    CREATE FUNCTION allocations_take() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      ${applyRows('new_rows', -1)}
      RETURN NULL;
    END $$;
    CREATE TRIGGER allocations_take AFTER INSERT ON allocations
      REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION allocations_take();

    CREATE FUNCTION allocations_give_back() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      ${applyRows('old_rows', 1)}
      RETURN NULL;
    END $$;
    CREATE TRIGGER allocations_give_back AFTER DELETE ON allocations
      REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION allocations_give_back();
  `,
    )
    .execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TRIGGER allocations_take ON allocations; DROP FUNCTION allocations_take();
    DROP TRIGGER allocations_give_back ON allocations; DROP FUNCTION allocations_give_back();
    DROP FUNCTION node_shares_moved(integer, smallint[], smallint[], smallint[], integer);
    CREATE FUNCTION allocations_apply() RETURNS trigger LANGUAGE plpgsql AS $$
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
    CREATE TRIGGER allocations_apply AFTER INSERT OR DELETE ON allocations
      FOR EACH ROW EXECUTE FUNCTION allocations_apply();
  `.execute(db);
}
