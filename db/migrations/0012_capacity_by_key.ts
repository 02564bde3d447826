// The capacity triggers of 0005 update each touched node by key, whatever the statement's size.
// They ran one set UPDATE of nodes joined to the statement's transition table; PL/pgSQL plans it
// once per connection, with the row count of the first call, so a connection whose first insert
// placed a batch kept a hash join over a sequential scan of every node, and paid it on each later
// single placement and release (a scan of the whole fleet per write, growing with it). Now the
// rows are summed per node as before and each node is updated through its primary key, in node
// order (so concurrent writers lock shared nodes in one order). The guarantees are unchanged: the
// nodes CHECKs and `node_shares_moved` refuse what they refused, in the statement that wrote.
import { Kysely, sql } from 'kysely';

/** A trigger function that moves capacity for the transition table `rows`; sign -1 takes, +1 gives back. */
const byKey = (name: string, rows: 'new_rows' | 'old_rows', sign: -1 | 1) => `
    CREATE OR REPLACE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      t record;
    BEGIN
      FOR t IN
        SELECT node_id, array_agg(device_idx) AS devices, array_agg(milli) AS millis,
               sum(cpu_milli) AS cpu, sum(memory_mib) AS mem
        FROM ${rows} GROUP BY node_id ORDER BY node_id
      LOOP
        UPDATE nodes n SET
            free_milli = node_shares_moved(n.id, n.free_milli, t.devices, t.millis, ${sign}),
            free_cpu_milli = n.free_cpu_milli + ${sign} * t.cpu,
            free_memory_mib = n.free_memory_mib + ${sign} * t.mem
          WHERE n.id = t.node_id;
      END LOOP;
      RETURN NULL;
    END $$;`;

/** 0005's set-based form, restored by `down`. */
const joined = (name: string, rows: 'new_rows' | 'old_rows', sign: -1 | 1) => `
    CREATE OR REPLACE FUNCTION ${name}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      UPDATE nodes n SET
          free_milli = node_shares_moved(n.id, n.free_milli, t.devices, t.millis, ${sign}),
          free_cpu_milli = n.free_cpu_milli + ${sign} * t.cpu,
          free_memory_mib = n.free_memory_mib + ${sign} * t.mem
        FROM (
          SELECT node_id, array_agg(device_idx) AS devices, array_agg(milli) AS millis,
                 sum(cpu_milli) AS cpu, sum(memory_mib) AS mem
          FROM ${rows} GROUP BY node_id
        ) t
        WHERE n.id = t.node_id;
      RETURN NULL;
    END $$;`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql.raw(byKey('allocations_take', 'new_rows', -1) + byKey('allocations_give_back', 'old_rows', 1)).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql.raw(joined('allocations_take', 'new_rows', -1) + joined('allocations_give_back', 'old_rows', 1)).execute(db);
}
