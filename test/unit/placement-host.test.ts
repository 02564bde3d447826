import { hostAppetite, strandedMilli, strandingGrowth } from '../../scheduling/placement-host';
import { chooseAmongTypes, choosePlacement, type CandidateNode, type MixShape } from '../../scheduling/placement';
import type { ResourceRequest } from '../../api/types';

/** A node tracking host CPU (milli-cores) and memory (MiB), all devices free unless given. */
const node = (id: number, devices: number, cpuMilli: number, memoryMib = 1 << 20, freeMilli?: number[]): CandidateNode => ({
  id,
  name: `n${id}`,
  rack: 'r0',
  pod: 'p0',
  freeMilli: freeMilli ?? Array<number>(devices).fill(1000),
  freeCpuMilli: cpuMilli,
  freeMemoryMib: memoryMib,
});
const task = (devices: number, cpuMilli: number, extra: Partial<ResourceRequest> = {}): ResourceRequest => ({
  acceleratorTypes: ['G2'],
  workers: 1,
  devicesPerWorker: devices,
  cpuMilliPerWorker: cpuMilli,
  topology: 'any',
  ...extra,
});
/** An openb-like mix: mostly 1-GPU tasks with 8 cores, some with 32, and shares with 4. */
const MIX: MixShape[] = [
  { devicesPerWorker: 1, cpuMilliPerWorker: 8000, weight: 0.6 },
  { devicesPerWorker: 1, cpuMilliPerWorker: 32000, weight: 0.1 },
  { devicesPerWorker: 0, milliPerWorker: 500, cpuMilliPerWorker: 4000, weight: 0.3 },
];
const seeds = Array.from({ length: 20 }, (_, i) => () => i / 20);

describe('host-aware fragmentation (fgd-host)', () => {
  test("the mix's appetite is its host CPU and memory per milli-device, weighted by the GPU each class asks for", () => {
    const a = hostAppetite([
      { devicesPerWorker: 1, cpuMilliPerWorker: 8000, memoryMibPerWorker: 1000, weight: 0.5 },
      { devicesPerWorker: 0, milliPerWorker: 500, cpuMilliPerWorker: 2000, weight: 0.5 },
    ]);
    // (0.5·8000 + 0.5·2000) m over (0.5·1000 + 0.5·500) milli-devices; memory 500 MiB over 750.
    expect(a.cpuPerMilli).toBeCloseTo(10000 / 1500);
    expect(a.memoryPerMilli).toBeCloseTo(500 / 750);
    expect(hostAppetite([{ devicesPerWorker: 1, weight: 1 }])).toEqual({ cpuPerMilli: 0, memoryPerMilli: 0 });
  });

  test('free GPUs that the cores left cannot feed at the mix appetite count as stranded', () => {
    const appetite = { cpuPerMilli: 12, memoryPerMilli: 0 }; // 12 cores per GPU
    expect(strandedMilli(node(1, 8, 96000), appetite)).toBe(0);
    // 8 free GPUs and 48 cores: 4 GPUs' worth of cores, so 4 GPUs stranded.
    expect(strandedMilli(node(1, 8, 48000), appetite)).toBe(4000);
    // Memory strands the same way, whichever runs out first counts.
    expect(strandedMilli(node(1, 8, 96000, 2000), { cpuPerMilli: 12, memoryPerMilli: 1 })).toBe(6000);
    // No cores left (or fewer than none, on a dirty read): every free GPU.
    expect(strandedMilli(node(1, 2, -5), appetite)).toBe(2000);
  });

  test('a node that does not track host CPU or memory, or a mix that asks for none, strands nothing', () => {
    expect(strandedMilli({ freeMilli: [1000, 1000] }, { cpuPerMilli: 12, memoryPerMilli: 4 })).toBe(0);
    expect(strandedMilli(node(1, 8, 0), { cpuPerMilli: 0, memoryPerMilli: 0 })).toBe(0);
  });

  test('taking many cores for one GPU on a GPU-rich node grows stranding; the same task on a CPU-rich node does not', () => {
    const gpuRich = node(1, 8, 96000);
    const gpuRichAfter = node(1, 8, 64000, 1 << 20, [0, 1000, 1000, 1000, 1000, 1000, 1000, 1000]);
    expect(strandingGrowth(gpuRich, gpuRichAfter, MIX)).toBeGreaterThan(0);
    const cpuRich = node(2, 2, 104000);
    const cpuRichAfter = node(2, 2, 72000, 1 << 20, [0, 1000]);
    expect(strandingGrowth(cpuRich, cpuRichAfter, MIX)).toBe(0);
  });

  test('a CPU-heavy task goes to the CPU-rich node and leaves the GPU-rich node for GPU work', () => {
    // openb's G2 (8 GPUs, 96 cores) against T4 (2 GPUs, 104 cores), both empty.
    const nodes = [node(1, 8, 96000), node(2, 2, 104000)];
    for (const rng of seeds) {
      const r = choosePlacement(nodes, task(1, 32000), 'fgd-host', { rng, mix: MIX });
      expect(r.ok && r.workers[0].nodeId).toBe(2);
    }
  });

  test('across equally acceptable types it picks the type whose nodes have the cores', () => {
    const request = task(1, 32000, { acceleratorTypes: ['G2', 'T4'], typePreference: 'none' });
    for (const rng of seeds) {
      const r = chooseAmongTypes(
        [
          { type: 'G2', candidates: [node(1, 8, 96000)] },
          { type: 'T4', candidates: [node(2, 2, 104000)] },
        ],
        request,
        'fgd-host',
        { rng, mix: MIX },
      );
      expect(r.ok && r.type).toBe('T4');
    }
  });

  test('it still packs a share onto a partly used device, as FGD does', () => {
    const nodes = [node(1, 2, 64000, 1 << 20, [500, 1000]), node(2, 2, 64000)];
    const r = choosePlacement(nodes, task(0, 4000, { milliPerWorker: 500 }), 'fgd-host', { rng: () => 0.5, mix: MIX });
    expect(r).toEqual({ ok: true, workers: [{ workerIdx: 0, nodeId: 1, deviceIdx: [0], milli: 500 }] });
  });

  test('the same candidates, mix and random draws give the same placement', () => {
    const nodes = Array.from({ length: 12 }, (_, i) => node(i + 1, i % 2 ? 8 : 2, 40000 + 5000 * i));
    const once = () => choosePlacement(nodes, task(2, 16000), 'fgd-host', { rng: () => 0.25, mix: MIX });
    expect(once()).toEqual(once());
    expect(once().ok).toBe(true);
  });
});
