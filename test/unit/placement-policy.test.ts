import { RecentMix, choosePlacement, fitWorker, fragmentFor, type CandidateNode } from '../../activities/placement/policy';
import type { ResourceRequest } from '../../api/types';

const node = (id: number, freeMilli: number[], rack = 'r0', pod = 'p0'): CandidateNode => ({ id, name: `n${id}`, rack, pod, freeMilli });
const whole = (workers: number, devicesPerWorker: number, topology: ResourceRequest['topology'] = 'any', extra: Partial<ResourceRequest> = {}): ResourceRequest =>
  ({ acceleratorTypes: ['A100'], workers, devicesPerWorker, topology, ...extra });

describe('placement policy', () => {
  test('whole devices only use fully free devices', () => {
    expect(fitWorker([1000, 500, 1000, 1000], { devicesPerWorker: 2 })).toEqual([0, 2]);
    expect(fitWorker([1000, 500, 999], { devicesPerWorker: 2 })).toBeUndefined();
  });

  test('a share goes to the fullest device that still fits it', () => {
    expect(fitWorker([1000, 600, 300, 450], { devicesPerWorker: 0, milliPerWorker: 400 })).toEqual([3]);
    expect(fitWorker([1000, 100], { devicesPerWorker: 0, milliPerWorker: 400 })).toEqual([0]);
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
  test.each<[string, number[], { devicesPerWorker: number; milliPerWorker?: number }, number]>([
    ['a node too small for the task is all fragment', [1000, 300], { devicesPerWorker: 2 }, 1300],
    ['partly used devices are fragment for whole-device tasks', [1000, 1000, 300], { devicesPerWorker: 2 }, 300],
    ['devices with less room than a share are fragment for it', [1000, 300, 600], { devicesPerWorker: 0, milliPerWorker: 500 }, 300],
    ['nothing is fragment when every device fits the share', [1000, 600], { devicesPerWorker: 0, milliPerWorker: 500 }, 0],
    ['a share that fits nowhere makes all free capacity fragment', [200, 300], { devicesPerWorker: 0, milliPerWorker: 500 }, 500],
  ])('%s', (_name, free, shape, expected) => {
    expect(fragmentFor(free, shape)).toBe(expected);
  });

  test('fgd avoids breaking a whole device when a partly used one takes the share', () => {
    const nodes = [node(1, [1000, 1000, 1000, 1000]), node(2, [1000, 1000, 1000, 600])];
    const r = choosePlacement(nodes, { acceleratorTypes: ['T4'], workers: 1, devicesPerWorker: 0, milliPerWorker: 500, topology: 'any' }, 'fgd', {
      mix: [{ devicesPerWorker: 1, weight: 0.5 }, { devicesPerWorker: 0, milliPerWorker: 500, weight: 0.5 }],
    });
    expect(r).toEqual({ ok: true, workers: [{ workerIdx: 0, nodeId: 2, deviceIdx: [3], milli: 500 }] });
  });

  test('the recent mix weights shapes by how often they were asked for, within its window', () => {
    const mix = new RecentMix(4);
    for (const d of [1, 1, 8, 2, 2]) mix.add({ devicesPerWorker: d });
    expect(mix.shapes().sort((a, b) => a.devicesPerWorker - b.devicesPerWorker)).toEqual([
      { devicesPerWorker: 1, weight: 0.25 }, { devicesPerWorker: 2, weight: 0.5 }, { devicesPerWorker: 8, weight: 0.25 },
    ]);
  });
});
