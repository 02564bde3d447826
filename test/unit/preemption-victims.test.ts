// Victim selection for preemption: who may be preempted, who is preferred, and that the chosen
// set is what the preemptor needs and no more.
import fc from 'fast-check';
import { chooseVictims, mayPreempt, type Preemptor, type RunningJob } from '../../scheduling/preemption';
import { choosePlacement, type CandidateNode } from '../../scheduling/placement';
import type { ResourceRequest, Tier } from '../../api/types';

const FULL = [0, 0, 0, 0, 0, 0, 0, 0];
const EMPTY = [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000];
const node = (id: number, freeMilli: number[] = FULL, rack = 'r0', pod = 'p0'): CandidateNode => ({
  id,
  name: `n${id}`,
  rack,
  pod,
  freeMilli: [...freeMilli],
});
/** Whole devices `devices` of node `nodeId`. */
const on = (nodeId: number, devices: number[]): RunningJob['holds'] => devices.map((deviceIdx) => ({ nodeId, deviceIdx, milli: 1000 }));
const ALL8 = [0, 1, 2, 3, 4, 5, 6, 7];
const LOW = [0, 1, 2, 3];
const HIGH = [4, 5, 6, 7];

const job = (jobId: string, holds: RunningJob['holds'], over: Partial<RunningJob> = {}): RunningJob => ({
  jobId,
  tier: 'basic',
  tenant: 'acme/ml',
  borrowing: true,
  workLostMs: 60_000,
  ranMs: 3_600_000,
  minRuntimeMs: 0,
  preemptedBy: [],
  holds,
  ...over,
});
const request = (
  workers: number,
  devicesPerWorker: number,
  topology: ResourceRequest['topology'] = 'node',
  extra: Partial<ResourceRequest> = {},
): ResourceRequest => ({
  acceleratorTypes: ['H100'],
  workers,
  devicesPerWorker,
  topology,
  ...extra,
});
const preemptor = (req: ResourceRequest, over: Partial<Preemptor> = {}): Preemptor => ({
  jobId: 'p',
  tier: 'premium',
  tenant: 'acme/research',
  request: req,
  withinNominal: false,
  preemptedBy: [],
  ...over,
});

describe('who may be preempted', () => {
  const p = (tier: Tier, withinNominal = false, preemptedBy: string[] = []): Preemptor =>
    preemptor(request(1, 8), { tier, withinNominal, preemptedBy });
  const v = (tier: Tier, borrowing: boolean, jobId = 'v'): RunningJob => job(jobId, on(1, ALL8), { tier, borrowing });

  test.each<[string, Preemptor, RunningJob, RegExp | null]>([
    [
      'a premium job is never preempted, even by premium work',
      p('premium', true),
      v('premium', true),
      /^premium job v is never preempted$/,
    ],
    [
      'a premium job is never preempted by a within-nominal preemptor',
      p('standard', true),
      v('premium', false),
      /^premium job v is never preempted$/,
    ],
    ['a job within its nominal quota is preempted for premium work', p('premium'), v('standard', false), null],
    [
      'a job within its nominal quota is not preempted for standard work',
      p('standard', true),
      v('basic', false),
      /^v is within its nominal quota; only premium work preempts it$/,
    ],
    ['a borrower is preempted by a higher tier', p('standard'), v('basic', true), null],
    ['a borrower is preempted by premium work', p('premium'), v('standard', true), null],
    [
      'a borrower is not preempted by its own tier outside nominal quota',
      p('standard'),
      v('standard', true),
      /v \(standard\) is borrowing, but p \(standard\) is neither of a higher tier nor within its nominal quota/,
    ],
    [
      'a borrower is not preempted by a lower tier outside nominal quota',
      p('basic'),
      v('standard', true),
      /neither of a higher tier nor within its nominal quota/,
    ],
    ['a same-tier preemptor within nominal quota reclaims from a borrower', p('standard', true), v('standard', true), null],
    ['a lower-tier preemptor within nominal quota reclaims from a borrower', p('basic', true), v('standard', true), null],
    ['a job never preempts itself', p('premium'), v('basic', true, 'p'), /^p cannot preempt itself$/],
    [
      'a job does not preempt the job it was preempted for',
      p('premium', true, ['v']),
      v('basic', true),
      /^p was preempted for v and may not preempt it back$/,
    ],
  ])('%s', (_name, pre, victim, refusal) => {
    const r = mayPreempt(pre, victim);
    if (refusal === null) expect(r).toEqual({ ok: true });
    else expect(!r.ok && r.reason).toMatch(refusal);
  });

  test('a job that preempted the preemptor earlier is left alone even when it holds the only room', () => {
    const nodes = [node(1)];
    const r = chooseVictims(preemptor(request(1, 8), { preemptedBy: ['a'] }), nodes, [job('a', on(1, ALL8))]);
    expect(r).toEqual({ ok: false, reason: 'no eligible victims for p: p was preempted for a and may not preempt it back' });
  });

  test('standard work outside its quota finds no victims among jobs within theirs', () => {
    const nodes = [node(1), node(2)];
    const running = [job('a', on(1, ALL8), { borrowing: false }), job('b', on(2, ALL8), { tier: 'premium' })];
    const r = chooseVictims(preemptor(request(1, 8), { tier: 'standard' }), nodes, running);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.reason).toBe(
      'no eligible victims for p: a is within its nominal quota; only premium work preempts it / premium job b is never preempted',
    );
  });
});

describe('which victims are preferred', () => {
  test('a preemptor that already fits preempts nothing', () => {
    const r = chooseVictims(preemptor(request(1, 8)), [node(1), node(2, EMPTY)], [job('a', on(1, ALL8))]);
    expect(r).toEqual({
      ok: true,
      victims: [],
      workers: [{ workerIdx: 0, nodeId: 2, deviceIdx: ALL8, milli: 1000 }],
      reason: 'p fits without preempting anything',
    });
  });

  test('basic work goes before standard work even when it loses more', () => {
    const running = [
      job('s', on(1, ALL8), { tier: 'standard', workLostMs: 1_000 }),
      job('b', on(2, ALL8), { tier: 'basic', workLostMs: 3_600_000 }),
    ];
    const r = chooseVictims(preemptor(request(1, 8)), [node(1), node(2)], running);
    expect(r.ok && r.victims).toEqual(['b']);
    expect(r.ok && r.workers.map((w) => w.nodeId)).toEqual([2]);
  });

  test('a borrower goes before a job within its quota even when it loses more', () => {
    const running = [
      job('q', on(1, ALL8), { tier: 'standard', borrowing: false, workLostMs: 1_000 }),
      job('x', on(2, ALL8), { tier: 'standard', borrowing: true, workLostMs: 600_000 }),
    ];
    const r = chooseVictims(preemptor(request(1, 8)), [node(1), node(2)], running);
    expect(r.ok && r.victims).toEqual(['x']);
  });

  test('among equals, the job losing least work goes first', () => {
    const running = [
      job('a', on(1, ALL8), { workLostMs: 120_000 }),
      job('b', on(2, ALL8), { workLostMs: 30_000 }),
      job('c', on(3, ALL8), { workLostMs: 90_000 }),
    ];
    const r = chooseVictims(preemptor(request(1, 8)), [node(1), node(2), node(3)], running);
    expect(r.ok && r.victims).toEqual(['b']);
  });

  test('stopping a victim frees its host CPU too: the victim whose node then has the cores is chosen', () => {
    // Node 1: 4 devices free but its 32 cores all held by 'a' (on its other devices). Node 2: full,
    // 'b' holds all devices and 8 cores, and 20 cores are free. The preemptor needs 4 devices and 24 cores.
    const nodes = [
      { ...node(1, [1000, 1000, 1000, 1000, 0, 0, 0, 0]), freeCpuMilli: 0 },
      { ...node(2), freeCpuMilli: 20000 },
    ];
    const a = job(
      'a',
      on(1, HIGH).map((h, k) => ({ ...h, cpuMilli: k === 0 ? 32000 : 0 })),
      { workLostMs: 1_000 },
    );
    const b = job(
      'b',
      on(2, ALL8).map((h, k) => ({ ...h, cpuMilli: k === 0 ? 8000 : 0 })),
      { workLostMs: 600_000 },
    );
    const r = chooseVictims(preemptor(request(1, 4, 'node', { cpuMilliPerWorker: 24000 })), nodes, [a, b]);
    // 'a' loses less work, and freeing it gives node 1 its cores back: that is enough.
    expect(r.ok && r.victims).toEqual(['a']);
    expect(r.ok && r.workers.map((w) => w.nodeId)).toEqual([1]);
    // Without 'a' eligible, stopping 'b' frees node 2's devices and its 8 cores: 28 in all.
    const onlyB = chooseVictims(preemptor(request(1, 4, 'node', { cpuMilliPerWorker: 24000 }), { preemptedBy: ['a'] }), nodes, [a, b]);
    expect(onlyB.ok && onlyB.victims).toEqual(['b']);
  });

  test('among equals, one 8-device victim beats two 4-device victims', () => {
    const running = [job('a', on(1, LOW)), job('b', on(1, HIGH)), job('c', on(2, ALL8))];
    for (const topology of ['node', 'any'] as const) {
      const r = chooseVictims(preemptor(request(1, 8, topology)), [node(1), node(2)], running);
      expect(r.ok && r.victims).toEqual(['c']);
    }
  });

  test('a victim taken on the way that turns out unnecessary is pruned', () => {
    // `a` is preferred and taken first, but only `c`'s node can hold the 8 devices.
    const nodes = [node(1, [1000, 1000, 0, 0, 0, 0, 0, 0]), node(2)];
    const running = [
      job('a', on(1, [2, 3]), { workLostMs: 1_000 }),
      job('x', on(1, HIGH), { tier: 'premium' }),
      job('c', on(2, ALL8), { workLostMs: 900_000 }),
    ];
    const r = chooseVictims(preemptor(request(1, 8)), nodes, running);
    expect(r.ok && r.victims).toEqual(['c']);
  });

  test('the reason counts the victims by kind and the work they lose', () => {
    // 4 devices × 15 s + 4 devices × 7.5 s = 1.5 device-minutes.
    const running = [
      job('a', on(1, HIGH), { borrowing: false, workLostMs: 15_000 }),
      job('b', on(1, LOW), { tier: 'standard', workLostMs: 7_500 }),
    ];
    const r = chooseVictims(preemptor(request(1, 8)), [node(1)], running);
    expect(r).toEqual({
      ok: true,
      victims: ['a', 'b'],
      workers: [{ workerIdx: 0, nodeId: 1, deviceIdx: ALL8, milli: 1000 }],
      reason: 'preempting 2 jobs (a, b) for p: 1 basic, 1 standard borrower, 1.5 device-minutes of work lost',
    });
  });
});

describe('minimum runtime', () => {
  test('a job that has not run its minimum is spared while another victim will do', () => {
    const running = [
      job('young', on(1, ALL8), { workLostMs: 1_000, ranMs: 60_000, minRuntimeMs: 600_000 }),
      job('old', on(2, ALL8), { tier: 'standard', workLostMs: 3_600_000 }),
    ];
    const r = chooseVictims(preemptor(request(1, 8)), [node(1), node(2)], running);
    expect(r.ok && r.victims).toEqual(['old']);
  });

  test('a job that has not run its minimum is preempted when nothing else makes room', () => {
    const running = [
      job('young', on(1, ALL8), { ranMs: 60_000, minRuntimeMs: 600_000 }),
      job('old', on(2, LOW), { tier: 'standard' }),
      job('x', on(2, HIGH), { tier: 'premium' }),
    ];
    const r = chooseVictims(preemptor(request(1, 8)), [node(1), node(2)], running);
    expect(r.ok && r.victims).toEqual(['young']);
    expect(r.ok && r.reason).toBe(
      'preempting 1 job (young) for p: 1 basic borrower, 1 before its minimum runtime, 8 device-minutes of work lost',
    );
  });

  test('in the second search, settled jobs are still used before young ones', () => {
    // A 2×4 gang: `old` frees 4 on node 2, and one young job must free the other 4.
    const nodes = [node(1), node(2)];
    const running = [
      job('y1', on(1, LOW), { workLostMs: 1_000, ranMs: 0, minRuntimeMs: 1 }),
      job('y2', on(1, HIGH), { workLostMs: 2_000, ranMs: 0, minRuntimeMs: 1 }),
      job('old', on(2, LOW), { tier: 'standard', workLostMs: 900_000 }),
      job('x', on(2, HIGH), { tier: 'premium' }),
    ];
    const r = chooseVictims(preemptor(request(2, 4, 'any')), nodes, running);
    expect(r.ok && r.victims).toEqual(['old', 'y1']);
  });
});

describe('gangs and topology', () => {
  test('a gang victim is freed whole across its nodes', () => {
    const gang = job('g', [...on(1, ALL8), ...on(2, ALL8)]);
    const r = chooseVictims(preemptor(request(2, 8, 'any')), [node(1), node(2)], [gang]);
    expect(r.ok && r.victims).toEqual(['g']);
    expect(r.ok && r.workers.map((w) => w.nodeId).sort()).toEqual([1, 2]);
  });

  test('a gang victim counts all its devices as work lost, including those on other nodes', () => {
    const gang = job('g', [...on(1, LOW), ...on(9, ALL8)], { workLostMs: 60_000 });
    const nodes = [node(1, [0, 0, 0, 0, 1000, 1000, 1000, 1000])];
    const r = chooseVictims(preemptor(request(1, 8)), nodes, [gang, job('elsewhere', on(9, [0]))]);
    expect(r.ok && r.victims).toEqual(['g']);
    expect(r.ok && r.reason).toBe('preempting 1 job (g) for p: 1 basic borrower, 12 device-minutes of work lost');
  });

  test('jobs holding nothing on the candidate nodes are not victims', () => {
    const r = chooseVictims(preemptor(request(1, 8)), [node(1)], [job('away', on(7, ALL8))]);
    expect(r).toEqual({ ok: false, reason: 'no eligible victims for p: no running job holds capacity on the 1 candidate node' });
  });

  // Node 1 and 2 each: 4 devices of premium work, 4 of a basic borrower. Node 3: one standard borrower.
  const split = () => ({
    nodes: [node(1), node(2), node(3)],
    running: [
      job('x1', on(1, LOW), { tier: 'premium' }),
      job('a', on(1, HIGH)),
      job('x2', on(2, LOW), { tier: 'premium' }),
      job('b', on(2, HIGH)),
      job('c', on(3, ALL8), { tier: 'standard', workLostMs: 3_600_000 }),
    ],
  });

  test('eight devices on one node are not made of four on each of two nodes', () => {
    const { nodes, running } = split();
    const r = chooseVictims(preemptor(request(1, 8)), nodes, running);
    expect(r.ok && r.victims).toEqual(['c']);
    const gang = chooseVictims(preemptor(request(2, 4, 'node')), nodes, running);
    expect(gang.ok && gang.victims).toEqual(['c']);
    expect(gang.ok && gang.workers.map((w) => w.nodeId)).toEqual([3, 3]);
  });

  test('a gang free to span nodes takes the cheaper four and four', () => {
    const { nodes, running } = split();
    const r = chooseVictims(preemptor(request(2, 4, 'any')), nodes, running);
    expect(r.ok && r.victims).toEqual(['a', 'b']);
  });

  test('a rack-confined gang frees room within one rack', () => {
    // `b` is cheaper, but its rack also holds premium work; only rack r0 can be emptied.
    const nodes = [node(1, EMPTY, 'r0'), node(2, FULL, 'r0'), node(3, FULL, 'r1'), node(4, FULL, 'r1')];
    const running = [job('a', on(2, ALL8), { tier: 'standard' }), job('x', on(3, ALL8), { tier: 'premium' }), job('b', on(4, ALL8))];
    const r = chooseVictims(preemptor(request(2, 8, 'rack')), nodes, running);
    expect(r.ok && r.victims).toEqual(['a']);
    expect(r.ok && r.workers.map((w) => w.nodeId).sort()).toEqual([1, 2]);
    // Unconfined, the cheaper victim would do.
    const any = chooseVictims(preemptor(request(2, 8, 'any')), nodes, running);
    expect(any.ok && any.victims).toEqual(['b']);
  });

  test('no rack can be emptied: the reason says what would not fit', () => {
    const nodes = [node(1, FULL, 'r0'), node(2, FULL, 'r0'), node(3, FULL, 'r1'), node(4, FULL, 'r1')];
    const running = [
      job('a', on(1, ALL8)),
      job('x', on(2, ALL8), { tier: 'premium' }),
      job('b', on(3, ALL8)),
      job('y', on(4, ALL8), { tier: 'premium' }),
    ];
    const r = chooseVictims(preemptor(request(2, 8, 'rack')), nodes, running);
    expect(r).toEqual({ ok: false, reason: 'even preempting all 2 eligible jobs leaves no room for 2×8 of H100 in one rack' });
  });

  test('a single eligible job that is not enough is named as such', () => {
    const running = [job('a', on(1, LOW)), job('x', on(1, HIGH), { tier: 'premium' })];
    const r = chooseVictims(preemptor(request(1, 8)), [node(1)], running);
    expect(r).toEqual({ ok: false, reason: 'even preempting the only eligible job leaves no room for 1×8 of H100 in one node' });
  });
});

describe('fractional shares', () => {
  // Device 0 of node 1: 300 free, `a` holds 250 (cheap), `b` holds 450; the rest is premium.
  const shared = () => ({
    nodes: [node(1, [300, 0, 0, 0, 0, 0, 0, 0])],
    running: [
      job('a', [{ nodeId: 1, deviceIdx: 0, milli: 250 }], { workLostMs: 1_000 }),
      job('b', [{ nodeId: 1, deviceIdx: 0, milli: 450 }], { workLostMs: 5_000 }),
      job('x', on(1, [1, 2, 3, 4, 5, 6, 7]), { tier: 'premium' }),
    ],
  });
  const share = (milliPerWorker: number) => request(1, 0, 'any', { milliPerWorker });

  test('a small share frees just the cheapest holder', () => {
    const { nodes, running } = shared();
    const r = chooseVictims(preemptor(share(500)), nodes, running);
    expect(r.ok && r.victims).toEqual(['a']);
    expect(r.ok && r.workers).toEqual([{ workerIdx: 0, nodeId: 1, deviceIdx: [0], milli: 500 }]);
  });

  test('a larger share keeps only the holder it needs', () => {
    const { nodes, running } = shared();
    const r = chooseVictims(preemptor(share(700)), nodes, running);
    expect(r.ok && r.victims).toEqual(['b']);
  });

  test('a whole device needs every share on it freed', () => {
    const { nodes, running } = shared();
    const r = chooseVictims(preemptor(request(1, 1)), nodes, running);
    expect(r.ok && r.victims).toEqual(['a', 'b']);
  });
});

describe('any decision, on random small fleets', () => {
  const DEVICES = 4;
  type Fleet = { nodes: CandidateNode[]; running: RunningJob[]; p: Preemptor };

  /** The nodes with `victims` stopped, computed independently of the module. */
  const freedBy = (nodes: CandidateNode[], victims: RunningJob[]): CandidateNode[] =>
    nodes.map((n) => {
      const free = [...n.freeMilli];
      for (const v of victims) for (const h of v.holds) if (h.nodeId === n.id) free[h.deviceIdx] += h.milli;
      return { ...n, freeMilli: free };
    });

  const tier = fc.constantFrom<Tier>('premium', 'standard', 'basic');
  const jobShape = fc.record({
    tier,
    borrowing: fc.boolean(),
    workLostMs: fc.integer({ min: 0, max: 5 }).map((m) => m * 60_000),
    young: fc.boolean(),
    holds: fc.array(fc.record({ node: fc.nat(3), device: fc.nat(DEVICES - 1), milli: fc.constantFrom(250, 500, 1000, 1000) }), {
      minLength: 1,
      maxLength: 6,
    }),
  });
  type JobShape = typeof jobShape extends fc.Arbitrary<infer T> ? T : never;
  const fleet: fc.Arbitrary<Fleet> = fc
    .record({
      nodeCount: fc.integer({ min: 2, max: 4 }),
      jobs: fc.array(jobShape, { maxLength: 8 }),
      // Per node, maybe a job taking whatever is left on it, so that most fleets are full.
      fillers: fc.array(fc.option(jobShape, { nil: undefined, freq: 4 }), { minLength: 4, maxLength: 4 }),
      // Capacity held by work outside `running` (other types of holder); it can never be freed.
      background: fc.array(fc.constantFrom(0, 0, 0, 250, 1000), { minLength: 4 * DEVICES, maxLength: 4 * DEVICES }),
      p: fc.record({
        tier: fc.constantFrom<Tier>('premium', 'premium', 'standard', 'basic'),
        withinNominal: fc.boolean(),
        preemptedBy: fc.subarray(['j0', 'j1', 'j2', 'j3']),
        workers: fc.integer({ min: 1, max: 2 }),
        devicesPerWorker: fc.integer({ min: 0, max: DEVICES }),
        milliPerWorker: fc.constantFrom(250, 500, 750),
        topology: fc.constantFrom<ResourceRequest['topology']>('any', 'node', 'rack'),
        antiAffinity: fc.boolean(),
      }),
    })
    .map(({ nodeCount, jobs, fillers, background, p }) => {
      // Holds are carved out of each device's capacity, so free + held never exceeds a device.
      const used = Array.from({ length: nodeCount }, (_, n) => background.slice(n * DEVICES, (n + 1) * DEVICES));
      const attrs = (j: JobShape) => ({
        tier: j.tier,
        borrowing: j.borrowing,
        workLostMs: j.workLostMs,
        ranMs: 100,
        minRuntimeMs: j.young ? 1_000 : 0,
      });
      const running: RunningJob[] = jobs.map((j, i) => {
        const holds: RunningJob['holds'] = [];
        for (const h of j.holds) {
          const n = h.node % nodeCount;
          if (holds.some((x) => x.nodeId === n + 1 && x.deviceIdx === h.device)) continue;
          const milli = Math.min(h.milli, 1000 - used[n][h.device]);
          if (milli <= 0) continue;
          used[n][h.device] += milli;
          holds.push({ nodeId: n + 1, deviceIdx: h.device, milli });
        }
        return job(`j${i}`, holds, attrs(j));
      });
      fillers.slice(0, nodeCount).forEach((j, n) => {
        if (!j) return;
        const holds = used[n].flatMap((u, d) => (u < 1000 ? [{ nodeId: n + 1, deviceIdx: d, milli: 1000 - u }] : []));
        used[n] = used[n].map(() => 1000);
        if (holds.length) running.push(job(`f${n}`, holds, attrs(j)));
      });
      const nodes = used.map((u, n) =>
        node(
          n + 1,
          u.map((x) => 1000 - x),
          `r${n % 2}`,
        ),
      );
      const req = request(p.workers, p.devicesPerWorker, p.topology, {
        antiAffinity: p.antiAffinity,
        ...(p.devicesPerWorker === 0 ? { milliPerWorker: p.milliPerWorker } : {}),
      });
      return { nodes, running, p: preemptor(req, { tier: p.tier, withinNominal: p.withinNominal, preemptedBy: p.preemptedBy }) };
    });

  const fitsWith = (f: Fleet, victims: RunningJob[]) => choosePlacement(freedBy(f.nodes, victims), f.p.request, 'best-fit');

  test('victims are eligible, make room, and none could be spared', () => {
    fc.assert(
      fc.property(fleet, (f) => {
        const r = chooseVictims(f.p, f.nodes, f.running);
        const eligible = f.running.filter((v) => mayPreempt(f.p, v).ok && v.holds.length > 0);
        if (!r.ok) {
          // Nothing was missed: even every eligible job together leaves no room.
          expect(fitsWith(f, eligible).ok).toBe(false);
          return;
        }
        const victims = r.victims.map((id) => f.running.find((v) => v.jobId === id)!);
        expect(new Set(r.victims).size).toBe(r.victims.length);
        for (const v of victims) {
          expect(mayPreempt(f.p, v)).toEqual({ ok: true });
          expect(v.holds.length).toBeGreaterThan(0);
        }
        const placed = fitsWith(f, victims);
        expect(placed.ok).toBe(true);
        expect(placed.ok && placed.workers).toEqual(r.workers);
        for (const v of victims)
          expect(
            fitsWith(
              f,
              victims.filter((x) => x !== v),
            ).ok,
          ).toBe(false);
        // A job short of its minimum runtime is only taken when the settled ones cannot make room.
        if (victims.some((v) => v.ranMs < v.minRuntimeMs)) {
          expect(
            fitsWith(
              f,
              eligible.filter((v) => v.ranMs >= v.minRuntimeMs),
            ).ok,
          ).toBe(false);
        }
      }),
      { numRuns: 400 },
    );
  });
});
