import {
  RecentMix,
  chooseAmongTypes,
  choosePlacement,
  fitWorker,
  fragmentFor,
  type CandidateNode,
  type WorkerShape,
} from '../../scheduling/placement';
import { PLACEMENT_POLICIES } from '../../api/types';
import type { ResourceRequest } from '../../api/types';

const node = (id: number, freeMilli: number[], rack = 'r0', pod = 'p0'): CandidateNode => ({ id, name: `n${id}`, rack, pod, freeMilli });
/** A node tracking host CPU and memory. */
const host = (id: number, freeMilli: number[], freeCpuMilli: number, freeMemoryMib = 1 << 20): CandidateNode => ({
  ...node(id, freeMilli),
  freeCpuMilli,
  freeMemoryMib,
});
const whole = (
  workers: number,
  devicesPerWorker: number,
  topology: ResourceRequest['topology'] = 'any',
  extra: Partial<ResourceRequest> = {},
): ResourceRequest => ({ acceleratorTypes: ['A100'], workers, devicesPerWorker, topology, ...extra });

describe('placement policy', () => {
  test('whole devices only use fully free devices', () => {
    expect(fitWorker({ freeMilli: [1000, 500, 1000, 1000] }, { devicesPerWorker: 2 })).toEqual([0, 2]);
    expect(fitWorker({ freeMilli: [1000, 500, 999] }, { devicesPerWorker: 2 })).toBeUndefined();
  });

  test('a share goes to the fullest device that still fits it', () => {
    expect(fitWorker({ freeMilli: [1000, 600, 300, 450] }, { devicesPerWorker: 0, milliPerWorker: 400 })).toEqual([3]);
    expect(fitWorker({ freeMilli: [1000, 100] }, { devicesPerWorker: 0, milliPerWorker: 400 })).toEqual([0]);
  });

  test('a worker fits only where the host has the CPU and memory it asks for', () => {
    const w: WorkerShape = { devicesPerWorker: 1, cpuMilliPerWorker: 8000, memoryMibPerWorker: 32768 };
    expect(fitWorker({ freeMilli: [1000], freeCpuMilli: 8000, freeMemoryMib: 32768 }, w)).toEqual([0]);
    expect(fitWorker({ freeMilli: [1000], freeCpuMilli: 7999, freeMemoryMib: 32768 }, w)).toBeUndefined();
    expect(fitWorker({ freeMilli: [1000], freeCpuMilli: 8000, freeMemoryMib: 32767 }, w)).toBeUndefined();
    // A node that does not track host resources has room for any.
    expect(fitWorker({ freeMilli: [1000] }, w)).toEqual([0]);
  });

  test.each(PLACEMENT_POLICIES)('%s never chooses a node without the CPU room the worker needs', (policy) => {
    // Node 1 is the fuller, lower-id node every policy would otherwise like; it has 2 cores left.
    const nodes = [host(1, [1000, 1000, 0, 0], 2000), host(2, [1000, 1000, 1000, 1000], 64000)];
    for (let seed = 0; seed < 20; seed++) {
      const r = choosePlacement(nodes, whole(1, 1, 'any', { cpuMilliPerWorker: 4000 }), policy, { rng: () => seed / 20 });
      expect(r.ok && r.workers[0].nodeId).toBe(2);
    }
    const none = choosePlacement([nodes[0]], whole(1, 1, 'any', { cpuMilliPerWorker: 4000 }), policy);
    expect(none.ok).toBe(false);
    expect(!none.ok && none.reason).toContain('with 4000m CPU each');
  });

  test('workers of a gang on one node share its CPU: the second does not fit where only the first has room', () => {
    const r = choosePlacement([host(1, [1000, 1000, 1000, 1000], 10000)], whole(2, 1, 'node', { cpuMilliPerWorker: 6000 }), 'best-fit');
    expect(r.ok).toBe(false);
    const ok = choosePlacement([host(1, [1000, 1000, 1000, 1000], 12000)], whole(2, 1, 'node', { cpuMilliPerWorker: 6000 }), 'best-fit');
    expect(ok.ok && ok.workers.map((w) => w.nodeId)).toEqual([1, 1]);
  });

  test('best-fit picks the node with the least room left', () => {
    const nodes = [node(1, [1000, 1000, 1000, 1000]), node(2, [1000, 1000, 0, 0]), node(3, [1000, 1000, 1000, 0])];
    const r = choosePlacement(nodes, whole(1, 2), 'best-fit');
    expect(r).toEqual({ ok: true, workers: [{ workerIdx: 0, nodeId: 2, deviceIdx: [0, 1], milli: 1000 }] });
  });

  test('first-fit picks the lowest node id that fits', () => {
    const nodes = [node(3, [1000, 1000]), node(1, [1000, 1000, 1000, 1000])];
    const r = choosePlacement(nodes, whole(1, 2), 'first-fit');
    expect(r.ok && r.workers[0].nodeId).toBe(1);
  });

  test('a gang that cannot fully fit places nothing', () => {
    const nodes = [node(1, [1000, 1000]), node(2, [1000, 0])];
    const r = choosePlacement(nodes, whole(2, 2), 'best-fit');
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toMatch(/no room for 2×2 of A100/);
  });

  test('a gang confined to one rack never spans racks', () => {
    const nodes = [node(1, [1000, 1000], 'r0'), node(2, [1000, 1000], 'r1'), node(3, [1000, 1000, 1000, 1000], 'r2')];
    const r = choosePlacement(nodes, whole(2, 2, 'rack'), 'best-fit');
    expect(r.ok && r.workers.map((w) => w.nodeId)).toEqual([3, 3]);
    const none = choosePlacement(nodes.slice(0, 2), whole(2, 2, 'rack'), 'best-fit');
    expect(none.ok).toBe(false);
  });

  test('anti-affinity puts each worker on its own node', () => {
    const nodes = [node(1, [1000, 1000, 1000, 1000]), node(2, [1000, 1000])];
    const r = choosePlacement(nodes, whole(2, 1, 'any', { antiAffinity: true }), 'best-fit');
    expect(r.ok && new Set(r.workers.map((w) => w.nodeId)).size).toBe(2);
  });

  test('workers of one gang never double-book a device on the same node', () => {
    const r = choosePlacement([node(1, [1000, 1000, 1000, 1000])], whole(2, 2), 'best-fit');
    expect(r.ok && r.workers.flatMap((w) => w.deviceIdx).sort()).toEqual([0, 1, 2, 3]);
  });
});

describe('fragmentation measure', () => {
  test.each<[string, number[], WorkerShape, number]>([
    ['a node too small for the task is all fragment', [1000, 300], { devicesPerWorker: 2 }, 1300],
    ['partly used devices are fragment for whole-device tasks', [1000, 1000, 300], { devicesPerWorker: 2 }, 300],
    ['devices with less room than a share are fragment for it', [1000, 300, 600], { devicesPerWorker: 0, milliPerWorker: 500 }, 300],
    ['nothing is fragment when every device fits the share', [1000, 600], { devicesPerWorker: 0, milliPerWorker: 500 }, 0],
    ['a share that fits nowhere makes all free capacity fragment', [200, 300], { devicesPerWorker: 0, milliPerWorker: 500 }, 500],
  ])('%s', (_name, free, shape, expected) => {
    expect(fragmentFor({ freeMilli: free }, shape)).toBe(expected);
  });

  test.each<[string, { freeMilli: number[]; freeCpuMilli?: number; freeMemoryMib?: number }, WorkerShape, number]>([
    [
      'free devices behind exhausted CPU are all fragment',
      { freeMilli: [1000, 1000, 0], freeCpuMilli: 4000 },
      { devicesPerWorker: 1, cpuMilliPerWorker: 8000 },
      2000,
    ],
    [
      'free devices behind exhausted memory are all fragment',
      { freeMilli: [1000, 600], freeMemoryMib: 1024 },
      { devicesPerWorker: 0, milliPerWorker: 500, memoryMibPerWorker: 2048 },
      1600,
    ],
    [
      'with CPU to spare only too-small devices are fragment',
      { freeMilli: [1000, 300], freeCpuMilli: 16000 },
      { devicesPerWorker: 0, milliPerWorker: 500, cpuMilliPerWorker: 8000 },
      300,
    ],
    ['a task asking no CPU is not blocked by exhausted CPU', { freeMilli: [1000, 1000], freeCpuMilli: 0 }, { devicesPerWorker: 2 }, 0],
    [
      'a node that does not track CPU never strands devices for it',
      { freeMilli: [1000, 1000] },
      { devicesPerWorker: 1, cpuMilliPerWorker: 1_000_000 },
      0,
    ],
  ])('%s', (_name, free, shape, expected) => {
    expect(fragmentFor(free, shape)).toBe(expected);
  });

  test('fgd prefers the node where the task does not strand GPUs behind exhausted CPU', () => {
    // Both nodes have two free GPUs. On node 1 a 12-core task would leave 4 cores: the other GPU
    // could no longer take a typical 8-core task. Node 2 has the cores for both.
    const nodes = [host(1, [1000, 1000, 0, 0], 16000), host(2, [1000, 1000, 0, 0], 24000)];
    const mix = [{ devicesPerWorker: 1, cpuMilliPerWorker: 8000, weight: 1 }];
    const request = whole(1, 1, 'any', { cpuMilliPerWorker: 12000 });
    const fgd = choosePlacement(nodes, request, 'fgd', { mix });
    expect(fgd.ok && fgd.workers[0].nodeId).toBe(2);
    // GPU best-fit sees two equal nodes and takes the lower id, stranding node 1's other GPU.
    const best = choosePlacement(nodes, request, 'best-fit', { mix });
    expect(best.ok && best.workers[0].nodeId).toBe(1);
  });

  test('fgd breaks equal gradients at random, where best-fit always takes the fuller node', () => {
    // One 1-GPU task class with no CPU: a GPU taken on either node changes nothing for it.
    const nodes = [node(1, [1000, 1000, 1000, 1000]), node(2, [1000, 1000, 0, 0])];
    const mix = [{ devicesPerWorker: 1, weight: 1 }];
    // The draws go to node 1, then node 2.
    const pick = (policy: 'fgd' | 'best-fit', draws: number[]) => {
      let i = 0;
      const r = choosePlacement(nodes, whole(1, 1), policy, { mix, rng: () => draws[i++ % draws.length] });
      return r.ok ? r.workers[0].nodeId : undefined;
    };
    expect([pick('fgd', [0.1, 0.9]), pick('fgd', [0.9, 0.1])]).toEqual([1, 2]);
    expect([pick('best-fit', [0.1, 0.9]), pick('best-fit', [0.9, 0.1])]).toEqual([2, 2]);
    // A lower gradient wins whatever the draw: a 2-GPU class makes breaking node 2's pair worse.
    const pairs = [{ devicesPerWorker: 2, weight: 1 }];
    for (const draw of [0, 0.5, 0.999]) {
      const r = choosePlacement(nodes, whole(1, 1), 'fgd', { mix: pairs, rng: () => draw });
      expect(r.ok && r.workers[0].nodeId).toBe(1);
    }
  });

  test('fgd avoids breaking a whole device when a partly used one takes the share', () => {
    const nodes = [node(1, [1000, 1000, 1000, 1000]), node(2, [1000, 1000, 1000, 600])];
    const r = choosePlacement(
      nodes,
      { acceleratorTypes: ['T4'], workers: 1, devicesPerWorker: 0, milliPerWorker: 500, topology: 'any' },
      'fgd',
      {
        mix: [
          { devicesPerWorker: 1, weight: 0.5 },
          { devicesPerWorker: 0, milliPerWorker: 500, weight: 0.5 },
        ],
      },
    );
    expect(r).toEqual({ ok: true, workers: [{ workerIdx: 0, nodeId: 2, deviceIdx: [3], milli: 500 }] });
  });

  test('the recent mix weights shapes by how often they were asked for, within its window', () => {
    const mix = new RecentMix(4);
    for (const d of [1, 1, 8, 2, 2]) mix.add({ devicesPerWorker: d });
    expect(mix.shapes().sort((a, b) => a.devicesPerWorker - b.devicesPerWorker)).toEqual([
      { devicesPerWorker: 1, weight: 0.25 },
      { devicesPerWorker: 2, weight: 0.5 },
      { devicesPerWorker: 8, weight: 0.25 },
    ]);
  });

  test('the recent mix tells task classes apart by their CPU and memory', () => {
    const mix = new RecentMix(10);
    mix.add({ devicesPerWorker: 1, cpuMilliPerWorker: 8000 });
    mix.add({ devicesPerWorker: 1, cpuMilliPerWorker: 8000 });
    mix.add({ devicesPerWorker: 1, cpuMilliPerWorker: 16000, memoryMibPerWorker: 4096 });
    mix.add({ devicesPerWorker: 1 });
    expect(mix.shapes().sort((a, b) => (a.cpuMilliPerWorker ?? 0) - (b.cpuMilliPerWorker ?? 0))).toEqual([
      { devicesPerWorker: 1, weight: 0.25 },
      { devicesPerWorker: 1, cpuMilliPerWorker: 8000, weight: 0.5 },
      { devicesPerWorker: 1, cpuMilliPerWorker: 16000, memoryMibPerWorker: 4096, weight: 0.25 },
    ]);
  });
});

describe('choosing among accelerator types', () => {
  // Type A has an empty node; type B a node with one device left, whose host has 8 cores free.
  const groups = () => [
    { type: 'A', candidates: [host(1, [1000, 1000, 1000, 1000], 64000)] },
    { type: 'B', candidates: [host(2, [1000, 0, 0, 0], 8000)] },
  ];
  const oneGpu = (typePreference?: ResourceRequest['typePreference'], extra: Partial<ResourceRequest> = {}): ResourceRequest =>
    whole(1, 1, 'any', { acceleratorTypes: ['A', 'B'], ...(typePreference ? { typePreference } : {}), ...extra });

  test.each([undefined, 'ordered'] as const)('with typePreference %s the first type with room wins, whatever the policy', (pref) => {
    for (const policy of PLACEMENT_POLICIES) {
      const r = chooseAmongTypes(groups(), oneGpu(pref), policy, { rng: () => 0.5 });
      expect(r).toEqual({ ok: true, type: 'A', workers: [{ workerIdx: 0, nodeId: 1, deviceIdx: [0], milli: 1000 }] });
    }
  });

  test('with an ordered list a later type is used only when earlier ones have no room', () => {
    const full = [{ type: 'A', candidates: [host(1, [0, 0, 0, 0], 64000)] }, groups()[1]];
    expect(chooseAmongTypes(full, oneGpu('ordered'), 'best-fit')).toMatchObject({ ok: true, type: 'B' });
  });

  test('with typePreference none best-fit takes the fullest node of any type', () => {
    expect(chooseAmongTypes(groups(), oneGpu('none'), 'best-fit')).toEqual({
      ok: true,
      type: 'B',
      workers: [{ workerIdx: 0, nodeId: 2, deviceIdx: [0], milli: 1000 }],
    });
  });

  test('with typePreference none fgd weighs the types by the fragmentation a placement adds', () => {
    // A 6-core task on B would leave B's other free device behind 2 cores, useless to the mix's
    // 6-core tasks; on A nothing is stranded.
    const b = { type: 'B', candidates: [host(2, [1000, 1000, 0, 0], 8000)] };
    const request = oneGpu('none', { cpuMilliPerWorker: 6000 });
    const mix = [{ devicesPerWorker: 1, cpuMilliPerWorker: 6000, weight: 1 }];
    expect(chooseAmongTypes([groups()[0], b], request, 'fgd', { mix })).toMatchObject({ ok: true, type: 'A' });
    // Best-fit sees only that B is fuller.
    expect(chooseAmongTypes([groups()[0], b], request, 'best-fit', { mix })).toMatchObject({ ok: true, type: 'B' });
  });

  test('with typePreference none random-fit draws over the candidates of every type', () => {
    const seen = new Set<string>();
    let i = 0;
    const draws = [0.1, 0.9, 0.9, 0.1];
    for (let k = 0; k < 2; k++) {
      const r = chooseAmongTypes(groups(), oneGpu('none'), 'random-fit', { rng: () => draws[i++ % draws.length] });
      if (r.ok) seen.add(r.type);
    }
    expect(seen).toEqual(new Set(['A', 'B']));
  });

  test('when no type has room, each says why', () => {
    const r = chooseAmongTypes(groups(), oneGpu('none', { devicesPerWorker: 5 }), 'fgd');
    expect(r).toEqual({
      ok: false,
      reasons: [
        { type: 'A', reason: expect.stringContaining('no room for 1×5 of A|B') },
        { type: 'B', reason: expect.stringContaining('(1 candidate node checked)') },
      ],
    });
  });
});
