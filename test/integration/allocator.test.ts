// The allocator against the real PostgreSQL: placement, idempotency, epochs, bad requests, invariants.
import { sql } from 'kysely';
import { Allocator } from '../../activities/allocator';
import { checkInvariants } from '../../db/invariants';
import { PLACEMENT_POLICIES, type ResourceRequest } from '../../api/types';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { registerTestJob, seedFleet, seedTenants, setQuota } from '../helpers/fleet';

let t: TestDatabase;
let allocator: Allocator;

beforeAll(async () => {
  t = await createTestDatabase('alloc');
  await seedFleet(t.db, {
    nodes: [
      ['A100', 8, 4],
      ['T4', 4, 2],
    ],
    nodesPerRack: 2,
  });
  allocator = new Allocator(t.db);
});
afterAll(() => t.drop());

const req = (o: Partial<ResourceRequest> = {}): ResourceRequest => ({
  acceleratorTypes: ['A100'],
  workers: 1,
  devicesPerWorker: 2,
  topology: 'any',
  ...o,
});
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

  test('finishing a job says whether another job waits in its region (the freed devices may be theirs), so only then is the scheduler woken', async () => {
    const job = (id: string, state: 'waiting' | 'cancelled' = 'waiting') =>
      t.db
        .insertInto('jobs')
        .values({ id, tenant: 'acme', tier: 'standard', region: 'quiet', workflow_id: `job/acme/${id}`, spec: '{}', state, epoch: 1 })
        .execute();
    await job('quiet-1');
    expect((await allocator.allocate({ jobId: 'quiet-1', epoch: 1, request: req() })).placed).toBe(true);
    expect(await allocator.finish('quiet-1', 1, 'completed', null)).toEqual({ released: 2, othersWaiting: false });
    await job('quiet-3');
    expect((await allocator.allocate({ jobId: 'quiet-3', epoch: 1, request: req() })).placed).toBe(true);
    await job('quiet-2');
    expect(await allocator.finish('quiet-3', 1, 'completed', null)).toEqual({ released: 2, othersWaiting: true });
    await t.db.updateTable('jobs').set({ state: 'cancelled' }).where('id', '=', 'quiet-2').execute();
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
    await expect(allocator.allocate({ jobId: 'epoch-1', epoch: 1, request: req() })).rejects.toThrow(
      'epoch 1 is stale (current epoch is 2)',
    );
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
    const a = await allocator.allocate({
      jobId: 'share-a',
      epoch: 1,
      request: req({ acceleratorTypes: ['T4'], devicesPerWorker: 0, milliPerWorker: 400 }),
    });
    const b = await allocator.allocate({
      jobId: 'share-b',
      epoch: 1,
      request: req({ acceleratorTypes: ['T4'], devicesPerWorker: 0, milliPerWorker: 500 }),
    });
    if (!a.placed || !b.placed) throw new Error('shares should fit');
    expect(b.placement.workers[0]).toMatchObject({
      nodeId: a.placement.workers[0].nodeId,
      deviceIdx: a.placement.workers[0].deviceIdx,
      milli: 500,
    });
    await allocator.release('share-a', 1);
    await allocator.release('share-b', 1);
  });

  test('PostgreSQL itself refuses a device held twice, whatever the code does', async () => {
    await registerTestJob(t.db, 'direct-1');
    const node = await t.db.selectFrom('nodes').select('id').where('accelerator_type', '=', 'T4').orderBy('id').executeTakeFirstOrThrow();
    await t.db
      .insertInto('allocations')
      .values({ job_id: 'direct-1', epoch: 1, node_id: node.id, device_idx: 3, milli: 1000, worker_idx: 0 })
      .execute();
    await expect(
      t.db
        .insertInto('allocations')
        .values({ job_id: 'direct-1', epoch: 1, node_id: node.id, device_idx: 3, milli: 1, worker_idx: 1 })
        .execute(),
    ).rejects.toThrow(/check constraint|duplicate key/);
    await registerTestJob(t.db, 'direct-2');
    await expect(
      t.db
        .insertInto('allocations')
        .values({ job_id: 'direct-2', epoch: 1, node_id: node.id, device_idx: 3, milli: 1, worker_idx: 0 })
        .execute(),
    ).rejects.toThrow(/check constraint/);
    await t.db.deleteFrom('allocations').where('job_id', '=', 'direct-1').execute();
  });

  test('capacity moves once per statement: many rows on one node, oversubscription within one statement, a device the node lacks', async () => {
    await registerTestJob(t.db, 'stmt-1');
    await registerTestJob(t.db, 'stmt-2');
    const node = await t.db
      .selectFrom('nodes')
      .select(['id', 'device_count'])
      .where('accelerator_type', '=', 'A100')
      .where('free_whole', '=', 8)
      .orderBy('id')
      .executeTakeFirstOrThrow();
    const free = async () =>
      await t.db
        .selectFrom('nodes')
        .select(['free_milli', 'free_whole', 'max_partial'])
        .where('id', '=', node.id)
        .executeTakeFirstOrThrow();
    // One statement: three whole devices and two shares of a fourth, for two jobs.
    await t.db
      .insertInto('allocations')
      .values([
        ...[0, 1, 2].map((d) => ({ job_id: 'stmt-1', epoch: 1, node_id: node.id, device_idx: d, milli: 1000, worker_idx: 0 })),
        { job_id: 'stmt-1', epoch: 1, node_id: node.id, device_idx: 5, milli: 300, worker_idx: 1 },
        { job_id: 'stmt-2', epoch: 1, node_id: node.id, device_idx: 5, milli: 450, worker_idx: 0 },
      ])
      .execute();
    expect(await free()).toEqual({ free_milli: [0, 0, 0, 1000, 1000, 250, 1000, 1000], free_whole: 4, max_partial: 250 });
    // Two shares of one device that together exceed it, in one statement: refused whole.
    await registerTestJob(t.db, 'stmt-3');
    await expect(
      t.db
        .insertInto('allocations')
        .values([600, 600].map((milli, w) => ({ job_id: 'stmt-3', epoch: 1, node_id: node.id, device_idx: 6, milli, worker_idx: w })))
        .execute(),
    ).rejects.toThrow(/check constraint/);
    // A device index past the node's devices: refused with the node and device named.
    await expect(
      t.db
        .insertInto('allocations')
        .values({ job_id: 'stmt-3', epoch: 1, node_id: node.id, device_idx: node.device_count, milli: 1000, worker_idx: 0 })
        .execute(),
    ).rejects.toThrow(`device ${node.device_count} does not exist on node ${node.id}`);
    expect(await free()).toEqual({ free_milli: [0, 0, 0, 1000, 1000, 250, 1000, 1000], free_whole: 4, max_partial: 250 });
    // One release statement gives back every device of the job, and only the job's.
    await t.db.deleteFrom('allocations').where('job_id', '=', 'stmt-1').execute();
    expect(await free()).toEqual({ free_milli: [1000, 1000, 1000, 1000, 1000, 550, 1000, 1000], free_whole: 7, max_partial: 550 });
    await t.db.deleteFrom('allocations').where('job_id', '=', 'stmt-2').execute();
    expect(await free()).toEqual({ free_milli: Array(8).fill(1000), free_whole: 8, max_partial: 0 });
    expect(await checkInvariants(t.db)).toEqual([]);
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

  // Each statement reads the snapshot it started with. These two hold a job's row in another
  // transaction, let the allocator's statement start and queue for the lock, and commit a
  // placement of that job meanwhile: the allocator must see it, not its stale snapshot.
  const racingPlacement = async (jobId: string, during: () => Promise<unknown>): Promise<unknown> => {
    const node = await t.db
      .selectFrom('nodes')
      .select(['id', 'free_milli'])
      .where('accelerator_type', '=', 'A100')
      .where('free_whole', '=', 8)
      .orderBy('id')
      .executeTakeFirstOrThrow();
    const { pending } = await t.db.transaction().execute(async (trx) => {
      await trx.selectFrom('jobs').select('id').where('id', '=', jobId).forUpdate().execute();
      const pending = during();
      pending.catch(() => undefined);
      // Give the allocator's statement time to start and wait on the row lock.
      for (let i = 0; i < 50; i++) {
        const waiting = await sql<{
          n: number;
        }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`.execute(t.db);
        if (waiting.rows[0].n > 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      await trx
        .insertInto('allocations')
        .values([0, 1].map((d) => ({ job_id: jobId, epoch: 1, node_id: node.id, device_idx: d, milli: 1000, worker_idx: 0 })))
        .execute();
      await trx.updateTable('jobs').set({ state: 'placed' }).where('id', '=', jobId).execute();
      return { pending }; // wrapped: the commit must not wait for the call queued behind it
    });
    return pending;
  };

  test('a release queued behind a placement of its job releases what that placement took', async () => {
    await registerTestJob(t.db, 'race-release');
    const before = await freeDevices();
    const released = await racingPlacement('race-release', () => allocator.finish('race-release', 1, 'cancelled', 'raced'));
    expect(released).toMatchObject({ released: 2 });
    expect(await freeDevices()).toBe(before);
    expect((await t.db.selectFrom('jobs').select('state').where('id', '=', 'race-release').executeTakeFirstOrThrow()).state).toBe(
      'cancelled',
    );
  });

  test('an allocate queued behind a placement of its job returns that placement instead of placing again', async () => {
    await registerTestJob(t.db, 'race-place');
    const before = await freeDevices();
    const result = (await racingPlacement('race-place', () => allocator.allocate({ jobId: 'race-place', epoch: 1, request: req() }))) as {
      placed: boolean;
      placement?: { workers: Array<{ deviceIdx: number[] }> };
    };
    expect(result.placed).toBe(true);
    expect(result.placement?.workers.flatMap((w) => w.deviceIdx)).toEqual([0, 1]);
    expect(await freeDevices()).toBe(before - 2);
    expect(await allocator.release('race-place', 1)).toMatchObject({ released: 2 });
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
    expect(results.map((r) => (r.error ? 'error' : r.result?.placed ? 'placed' : 'waiting'))).toEqual([
      'placed',
      'placed',
      'waiting',
      'error',
    ]);
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
    const racks = await t.db
      .selectFrom('nodes')
      .select('rack')
      .where(
        'id',
        'in',
        r.placement.workers.map((w) => w.nodeId),
      )
      .execute();
    expect(new Set(racks.map((x) => x.rack)).size).toBe(1);
    // One device taken in each remaining rack leaves 7 free per rack: a 2×4 rack gang cannot fit.
    await registerTestJob(t.db, 'rack-2');
    await registerTestJob(t.db, 'rack-3');
    const other = await t.db
      .selectFrom('nodes')
      .select(['id', 'rack'])
      .where('accelerator_type', '=', 'L4')
      .where('rack', '<>', racks[0].rack)
      .execute();
    await t.db
      .insertInto('allocations')
      .values({ job_id: 'rack-2', epoch: 1, node_id: other[0].id, device_idx: 0, milli: 1000, worker_idx: 0 })
      .execute();
    const waits = await allocator.allocate({
      jobId: 'rack-3',
      epoch: 1,
      request: l4({ workers: 2, devicesPerWorker: 4, topology: 'rack' }),
    });
    expect(waits).toEqual({ placed: false, blockedBy: 'capacity', reason: expect.stringContaining('in one rack') });
    await allocator.release('rack-1', 1);
    await allocator.release('rack-2', 1);
  });

  test('anti-affinity spreads a gang over distinct nodes', async () => {
    await registerTestJob(t.db, 'spread-1');
    const r = await allocator.allocate({
      jobId: 'spread-1',
      epoch: 1,
      request: l4({ workers: 3, devicesPerWorker: 1, antiAffinity: true }),
    });
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
  const r = await allocator.allocate({
    jobId: 'nonode-2',
    epoch: 1,
    request: req({ acceleratorTypes: ['MI300', 'A100'], devicesPerWorker: 1 }),
  });
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

describe('host CPU and memory through the SQL path', () => {
  // Two H100 nodes of 8 devices: the first has 16 cores and 64 GiB, the second 64 cores and 256 GiB.
  let small = 0;
  let large = 0;
  beforeAll(async () => {
    [small, large] = await seedFleet(t.db, {
      nodes: [['H100', 8, 2]],
      host: (i) => (i === 0 ? { cpuMilli: 16000, memoryMib: 65536 } : { cpuMilli: 64000, memoryMib: 262144 }),
    });
  });
  afterEach(async () => {
    expect(await checkInvariants(t.db)).toEqual([]);
  });
  const h100 = (o: Partial<ResourceRequest>) => req({ acceleratorTypes: ['H100'], devicesPerWorker: 1, ...o });
  const hostFree = async (): Promise<Record<number, { cpu: number | null; memory: number | null }>> =>
    Object.fromEntries(
      (await t.db.selectFrom('nodes').select(['id', 'free_cpu_milli', 'free_memory_mib']).where('id', 'in', [small, large]).execute()).map(
        (n) => [n.id, { cpu: n.free_cpu_milli, memory: n.free_memory_mib }],
      ),
    );
  const untouched = (): Record<number, { cpu: number; memory: number }> => ({
    [small]: { cpu: 16000, memory: 65536 },
    [large]: { cpu: 64000, memory: 262144 },
  });

  test.each(PLACEMENT_POLICIES)('%s does not place a task on a node without its CPU, and says so when no node has it', async (policy) => {
    await registerTestJob(t.db, `cpu-fit-${policy}`);
    // Every policy would take the first node otherwise: it is the lower id and as empty as the other.
    const r = await allocator.allocate({ jobId: `cpu-fit-${policy}`, epoch: 1, request: h100({ cpuMilliPerWorker: 24000 }), policy });
    expect(r.placed && r.placement.workers[0].nodeId).toBe(large);
    expect(await hostFree()).toEqual({ ...untouched(), [large]: { cpu: 40000, memory: 262144 } });
    await registerTestJob(t.db, `cpu-none-${policy}`);
    const none = await allocator.allocate({ jobId: `cpu-none-${policy}`, epoch: 1, request: h100({ cpuMilliPerWorker: 48000 }), policy });
    expect(none).toEqual({ placed: false, blockedBy: 'capacity', reason: expect.stringContaining('1×1 of H100 with 48000m CPU each') });
    await allocator.release(`cpu-fit-${policy}`, 1);
    expect(await hostFree()).toEqual(untouched());
  });

  test('a task short of memory on a node is not placed there', async () => {
    await registerTestJob(t.db, 'mem-fit');
    const r = await allocator.allocate({ jobId: 'mem-fit', epoch: 1, request: h100({ memoryMibPerWorker: 100000 }), policy: 'first-fit' });
    expect(r.placed && r.placement.workers[0].nodeId).toBe(large);
    await allocator.release('mem-fit', 1);
  });

  test('a gang whose CPU does not fit in full places nothing; one that fits takes CPU for each worker', async () => {
    await registerTestJob(t.db, 'cpu-gang-big');
    // Three workers of 24 cores: only the 64-core node could take any, and only two.
    const big = await allocator.allocate({ jobId: 'cpu-gang-big', epoch: 1, request: h100({ workers: 3, cpuMilliPerWorker: 24000 }) });
    expect(big).toMatchObject({ placed: false, blockedBy: 'capacity' });
    expect(await hostFree()).toEqual(untouched());
    expect(await t.db.selectFrom('allocations').select('id').where('job_id', '=', 'cpu-gang-big').execute()).toEqual([]);
    await registerTestJob(t.db, 'cpu-gang');
    const gang = await allocator.allocate({
      jobId: 'cpu-gang',
      epoch: 1,
      request: h100({ workers: 2, devicesPerWorker: 2, cpuMilliPerWorker: 24000, memoryMibPerWorker: 1024 }),
    });
    expect(gang.placed && gang.placement.workers.map((w) => w.nodeId)).toEqual([large, large]);
    // CPU and memory are held once per worker, however many devices the worker has.
    expect(await hostFree()).toEqual({ ...untouched(), [large]: { cpu: 16000, memory: 260096 } });
    await allocator.release('cpu-gang', 1);
  });

  test('release and finish give host CPU and memory back', async () => {
    await registerTestJob(t.db, 'cpu-release');
    const a = await allocator.allocate({
      jobId: 'cpu-release',
      epoch: 1,
      request: h100({ devicesPerWorker: 4, cpuMilliPerWorker: 12000, memoryMibPerWorker: 32768 }),
    });
    if (!a.placed) throw new Error(a.reason);
    const at = a.placement.workers[0].nodeId;
    expect((await hostFree())[at]).toEqual({ cpu: untouched()[at].cpu - 12000, memory: untouched()[at].memory - 32768 });
    expect(await allocator.release('cpu-release', 1)).toMatchObject({ released: 4 });
    expect(await hostFree()).toEqual(untouched());
    await registerTestJob(t.db, 'cpu-finish');
    const b = await allocator.allocate({
      jobId: 'cpu-finish',
      epoch: 1,
      request: h100({ cpuMilliPerWorker: 8000, memoryMibPerWorker: 4096 }),
    });
    expect(b.placed).toBe(true);
    expect(await hostFree()).not.toEqual(untouched());
    await allocator.finish('cpu-finish', 1, 'completed', null);
    expect(await hostFree()).toEqual(untouched());
  });

  test.each<[string, Partial<ResourceRequest>, string]>([
    ['negative CPU', { cpuMilliPerWorker: -1000 }, 'request.cpuMilliPerWorker: -1000 must be an integer from 0'],
    ['fractional CPU', { cpuMilliPerWorker: 2.5 }, 'request.cpuMilliPerWorker: 2.5 must be an integer'],
    ['negative memory', { memoryMibPerWorker: -1 }, 'request.memoryMibPerWorker: -1 must be an integer from 0'],
    ['fractional memory', { memoryMibPerWorker: 0.5 }, 'request.memoryMibPerWorker: 0.5 must be an integer'],
  ])('%s is refused with a clear error and nothing written', async (name, o, message) => {
    const id = `bad-host-${name.replace(/\W+/g, '-')}`;
    await registerTestJob(t.db, id);
    await expect(allocator.allocate({ jobId: id, epoch: 1, request: h100(o) })).rejects.toThrow(message);
    expect(await hostFree()).toEqual(untouched());
    expect(await t.db.selectFrom('allocations').select('id').where('job_id', '=', id).execute()).toEqual([]);
  });

  test.each<[string, Partial<ResourceRequest>, string]>([
    [
      'more CPU than any node has',
      { cpuMilliPerWorker: 64001 },
      'request.cpuMilliPerWorker: 1×1 of H100 with 64001m CPU each needs 64001m CPU on one node, but the largest node of H100 has 64000m',
    ],
    [
      'more memory than any node has',
      { memoryMibPerWorker: 262145 },
      'request.memoryMibPerWorker: 1×1 of H100 with 262145 MiB each needs 262145 MiB on one node, but the largest node of H100 has 262144 MiB',
    ],
    [
      'a one-node gang with more CPU than any node has',
      { workers: 2, cpuMilliPerWorker: 40000, topology: 'node' },
      'needs 80000m CPU on one node, but the largest node of H100 has 64000m',
    ],
  ])('a request with %s is refused, naming the largest node, and nothing is written', async (name, o, message) => {
    const id = `never-${name.replace(/\W+/g, '-')}`;
    await registerTestJob(t.db, id);
    await expect(allocator.allocate({ jobId: id, epoch: 1, request: h100(o) })).rejects.toThrow(message);
    expect(await hostFree()).toEqual(untouched());
    expect(await t.db.selectFrom('allocations').select('id').where('job_id', '=', id).execute()).toEqual([]);
    const job = await t.db.selectFrom('jobs').select(['state', 'waiting_reason']).where('id', '=', id).executeTakeFirstOrThrow();
    expect(job).toEqual({ state: 'waiting', waiting_reason: null });
  });

  test('a request fits somewhere when one of its types has a node that does not track CPU', async () => {
    await registerTestJob(t.db, 'cpu-untracked');
    // A100 nodes track no host CPU: room for any.
    const r = await allocator.allocate({
      jobId: 'cpu-untracked',
      epoch: 1,
      request: h100({ acceleratorTypes: ['H100', 'A100'], cpuMilliPerWorker: 100000 }),
    });
    expect(r.placed && r.placement.acceleratorType).toBe('A100');
    await allocator.release('cpu-untracked', 1);
  });

  test('concurrent allocators never hand out more CPU than a node has', async () => {
    // 16 cores a task: the small node holds one, the large node four, though both have devices to spare.
    const ids = Array.from({ length: 12 }, (_, i) => `cpu-conc-${i}`);
    for (const id of ids) await registerTestJob(t.db, id);
    const results = await Promise.all(
      ids.map((id) => allocator.allocate({ jobId: id, epoch: 1, request: h100({ cpuMilliPerWorker: 16000 }) })),
    );
    const placed = results.filter((r) => r.placed).length;
    expect(placed).toBeGreaterThan(0);
    expect(placed).toBeLessThanOrEqual(5);
    const free = await hostFree();
    expect(free[small].cpu).toBeGreaterThanOrEqual(0);
    expect(free[large].cpu).toBeGreaterThanOrEqual(0);
    expect(await checkInvariants(t.db)).toEqual([]);
    for (const id of ids) await allocator.release(id, 1);
  });

  test('PostgreSQL itself refuses host CPU held beyond what the node has, whatever the code does', async () => {
    await registerTestJob(t.db, 'cpu-direct');
    await expect(
      t.db
        .insertInto('allocations')
        .values({ job_id: 'cpu-direct', epoch: 1, node_id: small, device_idx: 0, milli: 1000, worker_idx: 0, cpu_milli: 16001 })
        .execute(),
    ).rejects.toThrow(/check constraint/);
    expect(await hostFree()).toEqual(untouched());
  });

  test('the invariant checker catches planted corruption of free CPU', async () => {
    await registerTestJob(t.db, 'cpu-plant');
    const r = await allocator.allocate({ jobId: 'cpu-plant', epoch: 1, request: h100({ cpuMilliPerWorker: 4000 }) });
    if (!r.placed) throw new Error(r.reason);
    const at = r.placement.workers[0].nodeId;
    await sql`UPDATE nodes SET free_cpu_milli = free_cpu_milli + 4000 WHERE id = ${at}`.execute(t.db);
    const found = await checkInvariants(t.db);
    expect(found).toEqual([
      {
        rule: 'host-capacity-drift',
        detail: expect.stringContaining(`node ${at} free CPU ${untouched()[at].cpu} milli (expected ${untouched()[at].cpu - 4000})`),
      },
    ]);
    await sql`UPDATE nodes SET free_cpu_milli = free_cpu_milli - 4000 WHERE id = ${at}`.execute(t.db);
    await allocator.release('cpu-plant', 1);
  });
});

describe('accelerator types without preference', () => {
  // Type X1: one empty node of 4 devices with 64 cores. Type X2: one node of 4 devices, 2 of them
  // held by a filler job, with 8 cores free.
  let x1 = 0;
  let x2 = 0;
  beforeAll(async () => {
    [x1, x2] = await seedFleet(t.db, {
      nodes: [
        ['X1', 4, 1],
        ['X2', 4, 1],
      ],
      host: (i) => ({ cpuMilli: i === 0 ? 64000 : 8000 }),
    });
    await registerTestJob(t.db, 'x2-filler');
    await t.db
      .insertInto('allocations')
      .values([0, 1].map((d) => ({ job_id: 'x2-filler', epoch: 1, node_id: x2, device_idx: d, milli: 1000, worker_idx: d })))
      .execute();
    await seedTenants(t.db, ['acme', 'other']);
  });
  afterEach(async () => {
    await t.db.deleteFrom('quotas').execute();
    await t.db.deleteFrom('reservations').execute();
    expect(await checkInvariants(t.db)).toEqual([]);
  });
  const x = (o: Partial<ResourceRequest>) => req({ acceleratorTypes: ['X1', 'X2'], devicesPerWorker: 1, ...o });
  const placeAs = async (id: string, request: ResourceRequest, policy?: (typeof PLACEMENT_POLICIES)[number]) => {
    await registerTestJob(t.db, id);
    const r = await new Allocator(t.db).allocate({ jobId: id, epoch: 1, request, policy });
    await allocator.release(id, 1);
    return r;
  };

  test.each<[(typeof PLACEMENT_POLICIES)[number], string]>([
    ['best-fit', 'X2'],
    ['first-fit', 'X1'],
    ['fgd', 'X1'],
  ])('%s places a request of equally acceptable types on the type it scores best (%s)', async (policy, type) => {
    // 6 cores a task: on X2 it would strand X2's other free device behind 2 cores, which fgd counts
    // and best-fit does not (X2 is the fuller node); first-fit takes the lowest node id.
    const r = await placeAs(`none-${policy}`, x({ typePreference: 'none', cpuMilliPerWorker: 6000 }), policy);
    expect(r.placed && r.placement).toMatchObject({ acceleratorType: type, workers: [{ nodeId: type === 'X1' ? x1 : x2 }] });
    // Listed the other way round, the choice is the same: the order is no preference.
    const back = await placeAs(
      `none-back-${policy}`,
      x({ acceleratorTypes: ['X2', 'X1'], typePreference: 'none', cpuMilliPerWorker: 6000 }),
      policy,
    );
    expect(back.placed && back.placement.acceleratorType).toBe(type);
  });

  test.each(PLACEMENT_POLICIES)('%s still takes the first listed type with room when the list is ordered', async (policy) => {
    const r = await placeAs(`ordered-${policy}`, x({ acceleratorTypes: ['X2', 'X1'], cpuMilliPerWorker: 6000 }), policy);
    expect(r.placed && r.placement.acceleratorType).toBe('X2');
    const first = await placeAs(`ordered-x1-${policy}`, x({ typePreference: 'ordered', cpuMilliPerWorker: 6000 }), policy);
    expect(first.placed && first.placement.acceleratorType).toBe('X1');
  });

  test('quota is checked per type: a type over quota is passed over, and only the chosen type is charged', async () => {
    await setQuota(t.db, 'acme', 'X2', 0);
    await setQuota(t.db, 'acme', 'X1', 4);
    await registerTestJob(t.db, 'none-quota');
    // A rule starts at what the tenant already holds on its type (the earlier cases' jobs).
    const usage = async () =>
      (await t.db.selectFrom('quotas').select(['accelerator_type', 'used_milli']).orderBy('accelerator_type').execute()).map(
        (u) => [u.accelerator_type, Number(u.used_milli)] as const,
      );
    const before = new Map(await usage());
    const r = await allocator.allocate({ jobId: 'none-quota', epoch: 1, request: x({ typePreference: 'none' }), policy: 'best-fit' });
    expect(r.placed && r.placement.acceleratorType).toBe('X1');
    expect((await usage()).map(([type, used]) => [type, used - before.get(type)!])).toEqual([
      ['X1', 1000],
      ['X2', 0],
    ]);
    await allocator.release('none-quota', 1);
    // Over quota on both: it waits for quota, naming each type.
    await setQuota(t.db, 'acme', 'X1', 0);
    await registerTestJob(t.db, 'none-quota-both');
    const both = await allocator.allocate({
      jobId: 'none-quota-both',
      epoch: 1,
      request: x({ typePreference: 'none' }),
      policy: 'best-fit',
    });
    expect(both).toEqual({
      placed: false,
      blockedBy: 'quota',
      reason: expect.stringMatching(/^X1: over quota: acme .*; X2: over quota: acme /),
    });
  });

  test("a reservation keeps its type from others' standard work, which goes to another acceptable type", async () => {
    const now = Date.now();
    await t.db
      .insertInto('reservations')
      .values({
        id: 'keep-x2',
        tenant: 'other',
        accelerator_type: 'X2',
        region: 'test',
        devices: 2,
        starts_at: new Date(now - 60_000),
        ends_at: new Date(now + 3_600_000),
        state: 'active',
      })
      .execute();
    await registerTestJob(t.db, 'none-reserved');
    const r = await allocator.allocate({ jobId: 'none-reserved', epoch: 1, request: x({ typePreference: 'none' }), policy: 'best-fit' });
    expect(r.placed && r.placement.acceleratorType).toBe('X1');
    await allocator.release('none-reserved', 1);
    await registerTestJob(t.db, 'none-reserved-only');
    const only = await allocator.allocate({
      jobId: 'none-reserved-only',
      epoch: 1,
      request: x({ acceleratorTypes: ['X2'], typePreference: 'none' }),
      policy: 'best-fit',
    });
    expect(only).toEqual({
      placed: false,
      blockedBy: 'reserved',
      reason: expect.stringContaining('X2: capacity reserved: 2 X2 reserved for other'),
    });
  });
});
