import { choosePlacement, fitWorker, type CandidateNode } from '../../activities/placement/policy';
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
