// How the allocator's writes move capacity on a fleet large enough that a scan of every node
// would show: each node by key, whatever a connection ran before. The plans are PostgreSQL's
// own (auto_explain, nested statements included: the capacity triggers), as an operator reads them.
import { Kysely, PostgresDialect, sql } from 'kysely';
import { Pool } from 'pg';
import { Allocator } from '../../activities/allocator';
import type { ResourceRequest } from '../../api/types';
import type { Database } from '../../db/schema';
import { checkInvariants } from '../../db/invariants';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { registerTestJob, seedFleet } from '../helpers/fleet';

let t: TestDatabase;
let explained: Kysely<Database>;
/** The plan of every statement run on `explained`'s one connection since the last reset. */
const plans: string[] = [];

beforeAll(async () => {
  t = await createTestDatabase('alloc_plans');
  // 3,000 nodes: enough that the planner prefers a node's key to a scan when it knows how few it needs.
  await seedFleet(t.db, { nodes: [['A100', 8, 3000]], nodesPerRack: 16 });
  await sql`ANALYZE nodes`.execute(t.db);
  const pool = new Pool({
    connectionString: t.url,
    max: 1,
    options:
      '-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=0 -c auto_explain.log_nested_statements=on -c client_min_messages=log',
  });
  pool.on('connect', (client) => client.on('notice', (n) => plans.push(n.message ?? '')));
  explained = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
});
afterAll(async () => {
  await explained.destroy();
  await t.drop();
});

const request = (devicesPerWorker: number): ResourceRequest => ({
  acceleratorTypes: ['A100'],
  workers: 1,
  devicesPerWorker,
  topology: 'any',
});

test('after a batch, the capacity bookkeeping of a single placement and its release updates nodes by key', async () => {
  const allocator = new Allocator(explained, 'best-fit');
  const batch = Array.from({ length: 200 }, (_, i) => `batch-${i}`);
  for (const id of [...batch, 'single']) await registerTestJob(t.db, id);
  // The batch first, on the same connection: 200 placements in one statement make the capacity
  // trigger's plan for a 200-row statement (which PL/pgSQL keeps for the connection).
  const placed = await allocator.allocateBatch(batch.map((jobId) => ({ jobId, epoch: 1, request: request(1) })));
  expect(placed.filter((r) => r.result?.placed)).toHaveLength(200);
  plans.length = 0;
  const single = await allocator.allocate({ jobId: 'single', epoch: 1, request: request(2) });
  expect(single.placed).toBe(true);
  // A retry reads the placement back through the job's allocations and their nodes.
  expect(await allocator.allocate({ jobId: 'single', epoch: 1, request: request(2) })).toEqual(single);
  expect(await allocator.release('single', 1)).toEqual({ released: 2 });
  const writes = plans.filter((p) => /Update on nodes/.test(p));
  expect(writes.length).toBeGreaterThanOrEqual(2); // the placement's and the release's
  expect(writes.filter((p) => /Seq Scan on nodes/.test(p))).toEqual([]);
  expect(await checkInvariants(t.db)).toEqual([]);
  for (const id of batch) await allocator.release(id, 1);
  expect(await checkInvariants(t.db)).toEqual([]);
});
