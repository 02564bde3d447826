// The allocator against the real PostgreSQL: placement, idempotency, epochs, bad requests, invariants.
import { sql } from 'kysely';
import { Allocator } from '../../activities/allocator';
import { checkInvariants } from '../../db/invariants';
import type { ResourceRequest } from '../../api/types';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { registerTestJob, seedFleet } from '../helpers/fleet';

let t: TestDatabase;
let allocator: Allocator;

beforeAll(async () => {
  t = await createTestDatabase('alloc');
  await seedFleet(t.db, { nodes: [['A100', 8, 4], ['T4', 4, 2]], nodesPerRack: 2 });
  allocator = new Allocator(t.db);
});
afterAll(() => t.drop());

const req = (o: Partial<ResourceRequest> = {}): ResourceRequest => ({ acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 2, topology: 'any', ...o });
const freeDevices = async (): Promise<number> =>
  Number((await sql<{ f: number }>`SELECT sum(free_whole)::int AS f FROM nodes`.execute(t.db)).rows[0].f);

describe('allocator on PostgreSQL', () => {
  afterEach(async () => {
    expect(await checkInvariants(t.db)).toEqual([]);
  });

  test('places a job on real devices and releases them', async () => {
    await registerTestJob(t.db, 'place-1');
    const before = await freeDevices();
    const r = await allocator.allocate({ jobId: 'place-1', epoch: 1, request: req() });
    expect(r.placed).toBe(true);
    expect(await freeDevices()).toBe(before - 2);
    await t.db.updateTable('jobs').set({ state: 'running' }).where('id', '=', 'place-1').execute();
    expect(await allocator.release('place-1', 1)).toEqual({ released: 2 });
    expect(await allocator.release('place-1', 1)).toEqual({ released: 0 });
    expect(await freeDevices()).toBe(before);
  });

  test('a retried allocate returns the same placement and holds devices once', async () => {
    await registerTestJob(t.db, 'retry-1');
    const before = await freeDevices();
    const a = await allocator.allocate({ jobId: 'retry-1', epoch: 1, request: req({ devicesPerWorker: 3 }) });
    const b = await allocator.allocate({ jobId: 'retry-1', epoch: 1, request: req({ devicesPerWorker: 3 }) });
    expect(b).toEqual(a);
    expect(await freeDevices()).toBe(before - 3);
    await allocator.release('retry-1', 1);
  });

  test('a stale epoch can neither allocate nor release', async () => {
    await registerTestJob(t.db, 'epoch-1', 2);
    await expect(allocator.allocate({ jobId: 'epoch-1', epoch: 1, request: req() })).rejects.toThrow('epoch 1 is stale (current epoch is 2)');
    const r = await allocator.allocate({ jobId: 'epoch-1', epoch: 2, request: req() });
    expect(r.placed).toBe(true);
    await expect(allocator.release('epoch-1', 1)).rejects.toThrow('epoch 1 is stale');
    expect(await allocator.release('epoch-1', 2)).toEqual({ released: 2 });
  });

  test.each<[string, Partial<ResourceRequest>, string]>([
    ['unknown type', { acceleratorTypes: ['H900'] }, 'unknown accelerator type "H900"'],
    ['zero devices and no share', { devicesPerWorker: 0 }, 'request.milliPerWorker'],
    ['negative workers', { workers: -1 }, 'request.workers: -1'],
    ['more devices than any node has', { devicesPerWorker: 9 }, 'needs 9 devices on one node, but the largest node of A100 has 8'],
    ['a one-node gang larger than any node', { workers: 3, devicesPerWorker: 4, topology: 'node' }, 'needs 12 devices on one node'],
  ])('%s is refused with a clear error and nothing written', async (_n, o, message) => {
    await registerTestJob(t.db, `bad-${_n.replace(/\W+/g, '-')}`);
    const before = await freeDevices();
    await expect(allocator.allocate({ jobId: `bad-${_n.replace(/\W+/g, '-')}`, epoch: 1, request: req(o) })).rejects.toThrow(message);
    expect(await freeDevices()).toBe(before);
  });

  test('a gang that cannot fully fit leaves nothing allocated', async () => {
    await registerTestJob(t.db, 'gang-big');
    const before = await freeDevices();
    const r = await allocator.allocate({ jobId: 'gang-big', epoch: 1, request: req({ workers: 5, devicesPerWorker: 8 }) });
    expect(r).toEqual({ placed: false, blockedBy: 'capacity', reason: expect.stringContaining('no room for 5×8 of A100') });
    expect(await freeDevices()).toBe(before);
    const job = await t.db.selectFrom('jobs').select('waiting_reason').where('id', '=', 'gang-big').executeTakeFirstOrThrow();
    expect(job.waiting_reason).toContain('no room for 5×8');
  });

  test('fractional shares pack onto one device before opening another', async () => {
    await registerTestJob(t.db, 'share-a');
    await registerTestJob(t.db, 'share-b');
    const a = await allocator.allocate({ jobId: 'share-a', epoch: 1, request: req({ acceleratorTypes: ['T4'], devicesPerWorker: 0, milliPerWorker: 400 }) });
    const b = await allocator.allocate({ jobId: 'share-b', epoch: 1, request: req({ acceleratorTypes: ['T4'], devicesPerWorker: 0, milliPerWorker: 500 }) });
    if (!a.placed || !b.placed) throw new Error('shares should fit');
    expect(b.placement.workers[0]).toMatchObject({ nodeId: a.placement.workers[0].nodeId, deviceIdx: a.placement.workers[0].deviceIdx, milli: 500 });
    await allocator.release('share-a', 1);
    await allocator.release('share-b', 1);
  });

  test('PostgreSQL itself refuses a device held twice, whatever the code does', async () => {
    await registerTestJob(t.db, 'direct-1');
    const node = await t.db.selectFrom('nodes').select('id').where('accelerator_type', '=', 'T4').orderBy('id').executeTakeFirstOrThrow();
    await t.db.insertInto('allocations').values({ job_id: 'direct-1', epoch: 1, node_id: node.id, device_idx: 3, milli: 1000, worker_idx: 0 }).execute();
    await expect(
      t.db.insertInto('allocations').values({ job_id: 'direct-1', epoch: 1, node_id: node.id, device_idx: 3, milli: 1, worker_idx: 1 }).execute(),
    ).rejects.toThrow(/check constraint|duplicate key/);
    await registerTestJob(t.db, 'direct-2');
    await expect(
      t.db.insertInto('allocations').values({ job_id: 'direct-2', epoch: 1, node_id: node.id, device_idx: 3, milli: 1, worker_idx: 0 }).execute(),
    ).rejects.toThrow(/check constraint/);
    await t.db.deleteFrom('allocations').where('job_id', '=', 'direct-1').execute();
  });

  test('concurrent allocators never hand out more devices than exist', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => `conc-${i}`);
    for (const id of ids) await registerTestJob(t.db, id);
    const results = await Promise.all(ids.map((id) => allocator.allocate({ jobId: id, epoch: 1, request: req({ devicesPerWorker: 1 }) })));
    const placed = results.filter((r) => r.placed).length;
    expect(placed).toBeGreaterThan(0);
    expect(placed).toBeLessThanOrEqual(32);
    expect(await checkInvariants(t.db)).toEqual([]);
    for (const id of ids) await allocator.release(id, 1);
  });

  test('the invariant checker catches planted corruption', async () => {
    await registerTestJob(t.db, 'plant-1');
    const r = await allocator.allocate({ jobId: 'plant-1', epoch: 1, request: req({ devicesPerWorker: 1 }) });
    if (!r.placed) throw new Error('should place');
    const nodeId = r.placement.workers[0].nodeId;
    // Free capacity that disagrees with the allocations.
    await sql`UPDATE nodes SET free_milli[8] = 0 WHERE id = ${nodeId} AND free_milli[8] = 1000`.execute(t.db);
    // An allocation whose job has already finished (a leak).
    await t.db.updateTable('jobs').set({ state: 'completed' }).where('id', '=', 'plant-1').execute();
    const rules = (await checkInvariants(t.db)).map((v) => v.rule).sort();
    expect(rules).toEqual(['allocation-without-live-job', 'free-capacity-drift']);
    await sql`UPDATE nodes SET free_milli[8] = 1000 WHERE id = ${nodeId}`.execute(t.db);
    await t.db.deleteFrom('allocations').where('job_id', '=', 'plant-1').execute();
  });
});

describe('batch placement', () => {
  test('places an ordered batch in one call, each request seeing what earlier ones took, with a reason for each miss', async () => {
    const ids = ['batch-a', 'batch-b', 'batch-c', 'batch-d'];
    for (const id of ids) await registerTestJob(t.db, id);
    const before = await freeDevices();
    const results = await allocator.allocateBatch([
      { jobId: 'batch-a', epoch: 1, request: req({ devicesPerWorker: 8, workers: 3 }) },
      { jobId: 'batch-b', epoch: 1, request: req({ devicesPerWorker: 8 }) },
      { jobId: 'batch-c', epoch: 1, request: req({ devicesPerWorker: 1 }) },
      { jobId: 'batch-d', epoch: 1, request: req({ acceleratorTypes: ['nope'] }) },
    ]);
    expect(results.map((r) => (r.error ? 'error' : r.result?.placed ? 'placed' : 'waiting'))).toEqual(['placed', 'placed', 'waiting', 'error']);
    expect(results[2].result).toEqual({ placed: false, blockedBy: 'capacity', reason: expect.stringContaining('no room for 1×1 of A100') });
    expect(results[3].error).toContain('unknown accelerator type "nope"');
    expect(await freeDevices()).toBe(before - 32);
    // Retrying the batch is a no-op for what was placed.
    const again = await allocator.allocateBatch([{ jobId: 'batch-a', epoch: 1, request: req({ devicesPerWorker: 8, workers: 3 }) }]);
    expect(again[0].result).toEqual(results[0].result);
    expect(await checkInvariants(t.db)).toEqual([]);
    for (const id of ids) await allocator.release(id, 1);
    expect(await freeDevices()).toBe(before);
  });
});

describe('constraints through the SQL path', () => {
  beforeAll(async () => {
    // Four L4 nodes of 4 devices, two per rack; the second rack's nodes carry zone=b.
    await seedFleet(t.db, { nodes: [['L4', 4, 4]], nodesPerRack: 2, labels: (i) => ({ zone: i % 4 < 2 ? 'a' : 'b' }) });
  });
  const l4 = (o: Partial<ResourceRequest>) => req({ acceleratorTypes: ['L4'], ...o });

  test('node labels select only matching nodes', async () => {
    await registerTestJob(t.db, 'label-1');
    const r = await allocator.allocate({ jobId: 'label-1', epoch: 1, request: l4({ devicesPerWorker: 1, nodeLabels: { zone: 'b' } }) });
    if (!r.placed) throw new Error(r.reason);
    const node = await t.db.selectFrom('nodes').select('labels').where('id', '=', r.placement.workers[0].nodeId).executeTakeFirstOrThrow();
    expect(node.labels).toEqual({ zone: 'b' });
    await registerTestJob(t.db, 'label-2');
    const none = await allocator.allocate({ jobId: 'label-2', epoch: 1, request: l4({ devicesPerWorker: 1, nodeLabels: { zone: 'c' } }) });
    expect(none.placed).toBe(false);
    await allocator.release('label-1', 1);
  });

  test('a rack-confined gang lands in one rack, and waits rather than span racks', async () => {
    await registerTestJob(t.db, 'rack-1');
    const r = await allocator.allocate({ jobId: 'rack-1', epoch: 1, request: l4({ workers: 2, devicesPerWorker: 4, topology: 'rack' }) });
    if (!r.placed) throw new Error(r.reason);
    const racks = await t.db.selectFrom('nodes').select('rack').where('id', 'in', r.placement.workers.map((w) => w.nodeId)).execute();
    expect(new Set(racks.map((x) => x.rack)).size).toBe(1);
    // One device taken in each remaining rack leaves 7 free per rack: a 2×4 rack gang cannot fit.
    await registerTestJob(t.db, 'rack-2');
    await registerTestJob(t.db, 'rack-3');
    const other = await t.db.selectFrom('nodes').select(['id', 'rack']).where('accelerator_type', '=', 'L4').where('rack', '<>', racks[0].rack).execute();
    await t.db.insertInto('allocations').values({ job_id: 'rack-2', epoch: 1, node_id: other[0].id, device_idx: 0, milli: 1000, worker_idx: 0 }).execute();
    const waits = await allocator.allocate({ jobId: 'rack-3', epoch: 1, request: l4({ workers: 2, devicesPerWorker: 4, topology: 'rack' }) });
    expect(waits).toEqual({ placed: false, blockedBy: 'capacity', reason: expect.stringContaining('in one rack') });
    await allocator.release('rack-1', 1);
    await allocator.release('rack-2', 1);
  });

  test('anti-affinity spreads a gang over distinct nodes', async () => {
    await registerTestJob(t.db, 'spread-1');
    const r = await allocator.allocate({ jobId: 'spread-1', epoch: 1, request: l4({ workers: 3, devicesPerWorker: 1, antiAffinity: true }) });
    if (!r.placed) throw new Error(r.reason);
    expect(new Set(r.placement.workers.map((w) => w.nodeId)).size).toBe(3);
    await allocator.release('spread-1', 1);
  });
});

test('a request only for types with no node in the region is refused, saying so', async () => {
  await t.db.insertInto('accelerator_types').values({ name: 'MI300', family: 'gpu', model: 'MI300', memory_mib: 196608 }).execute();
  await registerTestJob(t.db, 'nonode-1');
  await expect(allocator.allocate({ jobId: 'nonode-1', epoch: 1, request: req({ acceleratorTypes: ['MI300'] }) })).rejects.toThrow(
    'no node of MI300 exists in this region',
  );
  await registerTestJob(t.db, 'nonode-2');
  const r = await allocator.allocate({ jobId: 'nonode-2', epoch: 1, request: req({ acceleratorTypes: ['MI300', 'A100'], devicesPerWorker: 1 }) });
  expect(r.placed && r.placement.acceleratorType).toBe('A100');
  await allocator.release('nonode-2', 1);
});

test('a batch needing more nodes than one candidate page still places everything that fits', async () => {
  const small = new Allocator(t.db, { policy: 'best-fit', candidateLimit: 1 });
  const ids = ['page-a', 'page-b', 'page-c', 'page-d'];
  for (const id of ids) await registerTestJob(t.db, id);
  const results = await small.allocateBatch(ids.map((jobId) => ({ jobId, epoch: 1, request: req({ devicesPerWorker: 8 }) })));
  expect(results.map((r) => r.result?.placed)).toEqual([true, true, true, true]);
  expect(new Set(results.map((r) => (r.result?.placed ? r.result.placement.workers[0].nodeId : 0))).size).toBe(4);
  expect(await checkInvariants(t.db)).toEqual([]);
  for (const id of ids) await small.release(id, 1);
});
