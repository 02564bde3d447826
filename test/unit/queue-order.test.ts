// Queue order and the backfill gate: who goes first, and who may slip past a blocked job.
import fc from 'fast-check';
import {
  BackfillGate,
  DEFAULT_QUEUE_CONFIG,
  effectivePriority,
  mayRankAhead,
  queueKey,
  rankQueue,
  type Holding,
  type QueuedJob,
} from '../../scheduling/queue';
import { TIERS } from '../../api/types';

const NOW = 1_700_000_000_000;
/** A reason's start time: ISO to the second. */
const iso = (ms: number): string => new Date(ms).toISOString().replace('.000Z', 'Z');

const job = (jobId: string, extra: Partial<QueuedJob> = {}): QueuedJob => ({
  jobId,
  tier: 'standard',
  priority: 500,
  enqueuedAt: NOW,
  acceleratorTypes: ['H100'],
  milli: 1000,
  durationMs: 60_000,
  ...extra,
});

const ids = (jobs: readonly QueuedJob[]): string[] => jobs.map((j) => j.jobId);
const hold = (acceleratorType: string, milli: number, endsInMs: number): Holding => ({
  acceleratorType,
  milli,
  expectedEnd: NOW + endsInMs,
});

describe('queue ranking', () => {
  test('a fresh premium job outranks a standard job of any priority, and standard outranks basic', () => {
    const queue = [
      job('basic-top', { tier: 'basic', priority: 1000 }),
      job('standard-top', { tier: 'standard', priority: 1000 }),
      job('premium-low', { tier: 'premium', priority: 0 }),
    ];
    expect(ids(rankQueue(queue, NOW))).toEqual(['premium-low', 'standard-top', 'basic-top']);
  });

  test('within a tier, higher priority goes first', () => {
    const queue = [job('p10', { priority: 10 }), job('p900', { priority: 900 }), job('p500', { priority: 500 })];
    expect(ids(rankQueue(queue, NOW))).toEqual(['p900', 'p500', 'p10']);
  });

  test('at equal effective priority the older job goes first, then the smaller job id', () => {
    const queue = [job('b', { enqueuedAt: NOW - 10 }), job('c', { enqueuedAt: NOW - 20 }), job('a', { enqueuedAt: NOW - 10 })];
    expect(ids(rankQueue(queue, NOW))).toEqual(['c', 'a', 'b']);
  });

  test('an old basic job overtakes a fresh standard job exactly when its aging covers the tier gap', () => {
    const cfg = DEFAULT_QUEUE_CONFIG;
    const standard = job('fresh-standard', { tier: 'standard', priority: 510, enqueuedAt: NOW });
    const basicPriority = 500;
    // The basic job must gain more than the tier step plus the priority gap (a tie would also
    // favour it, being older, so the crossover is the first step that reaches strictly above).
    const gap = cfg.tierWeight + standard.priority - basicPriority;
    const stepsNeeded = Math.floor(gap / cfg.agingStep) + 1;
    const crossoverAge = stepsNeeded * cfg.agingIntervalMs;
    expect(crossoverAge).toBe(21 * 60_000);

    const basicAged = (age: number): QueuedJob => job('old-basic', { tier: 'basic', priority: basicPriority, enqueuedAt: NOW - age });
    expect(ids(rankQueue([standard, basicAged(crossoverAge - 1)], NOW))).toEqual(['fresh-standard', 'old-basic']);
    expect(ids(rankQueue([standard, basicAged(crossoverAge)], NOW))).toEqual(['old-basic', 'fresh-standard']);
    expect(effectivePriority(basicAged(crossoverAge - 1), NOW)).toBeLessThan(effectivePriority(standard, NOW));
    expect(effectivePriority(basicAged(crossoverAge), NOW)).toBeGreaterThan(effectivePriority(standard, NOW));
  });

  test('a job stamped in the future is not penalised below its tier and priority', () => {
    expect(effectivePriority(job('ahead', { enqueuedAt: NOW + 5 * 60_000 }), NOW)).toBe(1000 + 500);
  });

  test('ranking returns a new array and leaves the input as it was', () => {
    const queue = Object.freeze([job('low', { priority: 1 }), job('high', { priority: 999 })]);
    const ranked = rankQueue(queue, NOW);
    expect(ids(ranked)).toEqual(['high', 'low']);
    expect(ids(queue)).toEqual(['low', 'high']);
    expect(ranked).not.toBe(queue);
  });

  test('for any queue, the ranking is a permutation with non-increasing effective priority', () => {
    const queuedJob = fc.record({
      jobId: fc.string({ maxLength: 4 }),
      tier: fc.constantFrom(...TIERS),
      priority: fc.integer({ min: 0, max: 1000 }),
      enqueuedAt: fc.integer({ min: NOW - 3_600_000, max: NOW + 60_000 }),
      acceleratorTypes: fc.subarray(['H100', 'A100', 'T4'], { minLength: 1 }),
      milli: fc.integer({ min: 0, max: 64_000 }),
      durationMs: fc.integer({ min: 0, max: 3_600_000 }),
    });
    fc.assert(
      fc.property(fc.array(queuedJob, { maxLength: 30 }), (generated) => {
        // Tag each job with its input position so the permutation check does not rely on ids being unique.
        const queue = generated.map((j, position) => ({ ...j, position }));
        const ranked = rankQueue(queue, NOW);
        expect(ranked.map((j) => j.position).sort((a, b) => a - b)).toEqual(queue.map((j) => j.position));
        for (let i = 1; i < ranked.length; i++) {
          expect(effectivePriority(ranked[i - 1], NOW)).toBeGreaterThanOrEqual(effectivePriority(ranked[i], NOW));
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('queue key (the order the database reads the queue in)', () => {
  test('a fresh premium job keys above basic and standard jobs that have not aged past the tier gap', () => {
    const premium = job('premium-new', { tier: 'premium', priority: 0 });
    const standard = job('standard-18min', { tier: 'standard', priority: 0, enqueuedAt: NOW - 18 * 60_000 });
    const basic = job('basic-39min', { tier: 'basic', priority: 0, enqueuedAt: NOW - 39 * 60_000 });
    expect(queueKey(premium)).toBeGreaterThan(queueKey(standard));
    expect(queueKey(premium)).toBeGreaterThan(queueKey(basic));
    // The basic job has aged past the standard one: both orders agree.
    expect(queueKey(basic)).toBeGreaterThan(queueKey(standard));
    expect(ids(rankQueue([standard, premium, basic], NOW))).toEqual(['premium-new', 'basic-39min', 'standard-18min']);
  });

  test('the key does not change while a job waits, and the rank it stands for grows with its wait', () => {
    const waiting = job('w', { enqueuedAt: NOW - 5 * 60_000 });
    const cfg = DEFAULT_QUEUE_CONFIG;
    // rank = key + agingStep × (now − epoch) / agingIntervalMs, up to the rounding to whole steps.
    for (const now of [NOW, NOW + 60_000, NOW + 3_600_000]) {
      const continuous = queueKey(waiting) + (cfg.agingStep * (now - Date.UTC(2000, 0, 1))) / cfg.agingIntervalMs;
      expect(effectivePriority(waiting, now)).toBeLessThanOrEqual(continuous + 1e-6);
      expect(effectivePriority(waiting, now)).toBeGreaterThan(continuous - cfg.agingStep);
    }
  });

  test('for any two jobs enqueued by now, one keyed at least one aging step higher ranks ahead', () => {
    const queuedJob = fc.record({
      jobId: fc.string({ maxLength: 4 }),
      tier: fc.constantFrom(...TIERS),
      priority: fc.integer({ min: 0, max: 1000 }),
      enqueuedAt: fc.integer({ min: NOW - 6 * 3_600_000, max: NOW }),
      acceleratorTypes: fc.constant<string[]>(['H100']),
      milli: fc.constant(1000),
      durationMs: fc.constant(60_000),
    });
    fc.assert(
      fc.property(queuedJob, queuedJob, (a, b) => {
        fc.pre(queueKey(a) >= queueKey(b) + DEFAULT_QUEUE_CONFIG.agingStep);
        expect(effectivePriority(a, NOW)).toBeGreaterThan(effectivePriority(b, NOW));
        expect(rankQueue([b, a], NOW)[0]).toBe(a);
      }),
      { numRuns: 500 },
    );
  });
});

describe('backfill gate', () => {
  test('a blocked job starts when enough holdings on its type have ended, in order of their end', () => {
    const free = new Map([['H100', 2000]]);
    const gate = new BackfillGate(NOW, free, [hold('H100', 3000, 30_000), hold('H100', 1000, 10_000), hold('H100', 2000, 60_000)]);
    // 2000 free + 1000 at 10s = 3000 < 5000; + 3000 at 30s = 6000 ≥ 5000.
    gate.block(job('big', { milli: 5000 }));
    expect(gate.shadowOf('big')).toBe(NOW + 30_000);
  });

  test('the shadow time is the earliest across the job’s accelerator types', () => {
    const gate = new BackfillGate(
      NOW,
      new Map([
        ['H100', 2000],
        ['A100', 0],
      ]),
      [hold('H100', 3000, 30_000), hold('A100', 8000, 20_000)],
    );
    gate.block(job('either', { milli: 5000, acceleratorTypes: ['H100', 'A100'] }));
    expect(gate.shadowOf('either')).toBe(NOW + 20_000);
  });

  describe('with j-17 needing 8 H100 in 41.5 s', () => {
    const gateWithJ17 = (): BackfillGate => {
      const gate = new BackfillGate(NOW, new Map([['H100', 0]]), [hold('H100', 8000, 41_500)]);
      gate.block(job('j-17', { milli: 8000 }));
      return gate;
    };

    test('a job that finishes by then may backfill', () => {
      expect(gateWithJ17().admits(job('short', { durationMs: 41_500 }))).toEqual({ ok: true, types: ['H100'] });
    });

    test('a job that would still be running is held, and the reason says for whom and why', () => {
      expect(gateWithJ17().admits(job('long', { durationMs: 120_000 }))).toEqual({
        ok: false,
        reason: `held for higher-ranked job j-17 (needs 8 H100, expected to start by ${iso(NOW + 42_000)}); this job's 120s would delay it`,
      });
      expect(gateWithJ17().admits(job('just-over', { durationMs: 41_501 })).ok).toBe(false);
    });

    test('a job on another accelerator type is not held, however long it runs', () => {
      expect(gateWithJ17().admits(job('elsewhere', { acceleratorTypes: ['A100'], durationMs: 86_400_000 }))).toEqual({
        ok: true,
        types: ['A100'],
      });
    });

    test('a job that accepts the reserved type and others may run now on the others only', () => {
      expect(gateWithJ17().admits(job('either', { acceleratorTypes: ['H100', 'A100'], durationMs: 86_400_000 }))).toEqual({
        ok: true,
        types: ['A100'],
      });
    });
  });

  test('fractional device needs are shown with up to three decimals', () => {
    const gate = new BackfillGate(NOW, new Map([['T4', 0]]), [hold('T4', 1000, 5_000)]);
    gate.block(job('share', { acceleratorTypes: ['T4'], milli: 250 }));
    const r = gate.admits(job('long', { acceleratorTypes: ['T4'], durationMs: 9_000 }));
    expect(r.ok === false && r.reason).toBe(
      `held for higher-ranked job share (needs 0.25 T4, expected to start by ${iso(NOW + 5_000)}); this job's 9s would delay it`,
    );
  });

  test('a job that cannot fit even when everything ends reserves nothing', () => {
    const gate = new BackfillGate(NOW, new Map([['H100', 1000]]), [hold('H100', 7000, 10_000)]);
    gate.block(job('too-big', { milli: 16_000 }));
    expect(gate.shadowOf('too-big')).toBeUndefined();
    expect(gate.admits(job('long', { durationMs: 86_400_000 }))).toEqual({ ok: true, types: ['H100'] });
  });

  test('capacity taken in this cycle pushes a later shadow time back', () => {
    const holdings = [hold('H100', 4000, 60_000)];
    const before = new BackfillGate(NOW, new Map([['H100', 4000]]), holdings);
    before.block(job('x', { milli: 6000 }));
    expect(before.shadowOf('x')).toBe(NOW + 60_000);

    const after = new BackfillGate(NOW, new Map([['H100', 4000]]), holdings);
    after.took('H100', 4000, NOW + 300_000);
    after.block(job('x', { milli: 6000 }));
    expect(after.shadowOf('x')).toBe(NOW + 300_000);
  });

  test('a backfill job may use a reserved type only if it finishes before the job reserving it starts', () => {
    const gate = new BackfillGate(
      NOW,
      new Map([
        ['H100', 0],
        ['A100', 0],
      ]),
      [hold('H100', 2000, 30_000), hold('H100', 6000, 100_000), hold('A100', 4000, 50_000)],
    );
    gate.block(job('j-1', { milli: 8000 })); // H100 at 100 s
    gate.block(job('j-2', { milli: 2000 })); // H100 at 30 s
    gate.block(job('j-3', { milli: 4000, acceleratorTypes: ['A100'] })); // A100 at 50 s
    expect([gate.shadowOf('j-1'), gate.shadowOf('j-2'), gate.shadowOf('j-3')]).toEqual([NOW + 100_000, NOW + 30_000, NOW + 50_000]);

    const h100For60s = gate.admits(job('b-1', { durationMs: 60_000 }));
    expect(h100For60s.ok === false && h100For60s.reason).toMatch(/^held for higher-ranked job j-2 \(/);
    expect(gate.admits(job('b-2', { durationMs: 30_000 }))).toEqual({ ok: true, types: ['H100'] });
    expect(gate.admits(job('b-3', { acceleratorTypes: ['A100'], durationMs: 45_000 }))).toEqual({ ok: true, types: ['A100'] });
    // H100 is closed to it (j-2 starts there at 30 s), A100 is open (j-3 starts there at 50 s).
    expect(gate.admits(job('b-4', { acceleratorTypes: ['A100', 'H100'], durationMs: 45_000 }))).toEqual({ ok: true, types: ['A100'] });
    const both = gate.admits(job('b-5', { acceleratorTypes: ['A100', 'H100'], durationMs: 60_000 }));
    expect(both.ok === false && both.reason).toMatch(/^held for higher-ranked job j-2 \(needs 2 H100/);
  });

  test('a job blocked although enough is free (its shape does not fit the free pieces) waits for a holding to end, not for nothing', () => {
    const gate = new BackfillGate(NOW, new Map([['H100', 8000]]), [hold('H100', 2000, 20_000), hold('H100', 4000, 90_000)]);
    gate.block(job('whole-node', { milli: 8000 }));
    expect(gate.shadowOf('whole-node')).toBe(NOW + 20_000);
    expect(gate.admits(job('short', { durationMs: 20_000 })).ok).toBe(true);
    expect(gate.admits(job('long', { durationMs: 20_001 })).ok).toBe(false);
    // Nothing held on the type: nothing will change by waiting, so it reserves nothing.
    const idle = new BackfillGate(NOW, new Map([['H100', 8000]]), []);
    idle.block(job('whole-node', { milli: 8000 }));
    expect(idle.shadowOf('whole-node')).toBeUndefined();
  });

  test('a blocked job reserves the one type it is expected to start on, the one that frees first', () => {
    const gate = new BackfillGate(
      NOW,
      new Map([
        ['H100', 0],
        ['A100', 0],
      ]),
      [hold('H100', 8000, 60_000), hold('A100', 8000, 20_000)],
    );
    gate.block(job('either', { milli: 8000, acceleratorTypes: ['H100', 'A100'] }));
    expect(gate.reservedTypeOf('either')).toBe('A100');
    expect(gate.admits(job('on-h100', { acceleratorTypes: ['H100'], durationMs: 86_400_000 }))).toEqual({ ok: true, types: ['H100'] });
  });

  test('negative capacity is rejected, naming the argument', () => {
    expect(() => new BackfillGate(NOW, new Map([['H100', -1]]), [])).toThrow(/free milli for H100 .*≥ 0, got -1/);
    expect(() => new BackfillGate(NOW, new Map(), [hold('H100', 1000, 1), hold('H100', -5, 1)])).toThrow(/holdings\[1\]\.milli/);
    const gate = new BackfillGate(NOW, new Map(), []);
    expect(() => gate.took('H100', -1000, NOW)).toThrow(/^milli must be .*≥ 0, got -1000$/);
  });
});

describe('who a new job may not overtake (placement on admission)', () => {
  const I = DEFAULT_QUEUE_CONFIG.agingIntervalMs;
  const arrival = (extra: Partial<QueuedJob> = {}): QueuedJob => job('new', { tier: 'premium', priority: 0, ...extra });

  test('a basic job that has not aged to the tier gap does not hold back a fresh premium job; one within a minute of it does', () => {
    expect(mayRankAhead(job('b-39', { tier: 'basic', priority: 0, enqueuedAt: NOW - 39 * I }), arrival())).toBe(false);
    // 39½ minutes: half a minute from now its aging reaches the gap while the new job's has not moved.
    expect(mayRankAhead(job('b-39.5', { tier: 'basic', priority: 0, enqueuedAt: NOW - 39.5 * I }), arrival())).toBe(true);
  });

  test('an equal job queued a moment earlier holds a new one back, and so does a lead of less than one aging step', () => {
    const earlier = job('p-early', { tier: 'premium', priority: 0, enqueuedAt: NOW - 1000 });
    expect(mayRankAhead(earlier, arrival())).toBe(true);
    // It gains its first aging step a minute before the new job does.
    expect(mayRankAhead(earlier, arrival({ priority: DEFAULT_QUEUE_CONFIG.agingStep - 1 }))).toBe(true);
    expect(mayRankAhead(earlier, arrival({ priority: DEFAULT_QUEUE_CONFIG.agingStep + 1 }))).toBe(false);
  });

  test('for any two jobs: one said not to rank ahead never does, and one said to may at some moment', () => {
    const queuedJob = (id: string) =>
      fc.record({
        jobId: fc.constant(id),
        tier: fc.constantFrom(...TIERS),
        priority: fc.integer({ min: 0, max: 1000 }),
        enqueuedAt: fc.integer({ min: NOW - 2 * 3_600_000, max: NOW }),
        acceleratorTypes: fc.constant<string[]>(['H100']),
        milli: fc.constant(1000),
        durationMs: fc.constant(60_000),
      });
    fc.assert(
      fc.property(
        queuedJob('w'),
        queuedJob('a'),
        fc.array(fc.integer({ min: 0, max: 3 * 3_600_000 }), { maxLength: 20 }),
        (w, a, later) => {
          const from = Math.max(w.enqueuedAt, a.enqueuedAt);
          // Just before the arrival's aging steps, when the waiting job's lead is largest, and any other moments.
          const edges = [0, 1, 2, 5, 60].map((m) => a.enqueuedAt + (m + 1) * I - 1).filter((t) => t >= from);
          const moments = [from, ...edges, ...later.map((x) => from + x)];
          const atOrAhead = (t: number): boolean => effectivePriority(w, t) >= effectivePriority(a, t);
          if (mayRankAhead(w, a)) expect(moments.some(atOrAhead)).toBe(true);
          else for (const t of moments) expect(rankQueue([a, w], t)[0]).toBe(a);
          // The index bound admission reads by: a job that may rank ahead is keyed less than one step below.
          if (mayRankAhead(w, a)) expect(queueKey(w)).toBeGreaterThan(queueKey(a) - DEFAULT_QUEUE_CONFIG.agingStep);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
