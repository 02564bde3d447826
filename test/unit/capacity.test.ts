// The autoscaler's pure decisions: which waits are for capacity, how many nodes a gang needs on an
// offering, the cheapest plan within quotas, provider limits and budget, scale-in, what scaling
// could add, the placement cost term, and the checks on provider configuration and limits.
import {
  capacityBlockedTypes,
  chooseScaleIn,
  nextIdleDeadline,
  costScore,
  nodesForGang,
  planScaleUp,
  scalableDevices,
  seededRandom,
  tierMayUse,
  type ScaleUpInput,
  type WaitingDemand,
} from '../../scheduling/capacity';
import { choosePlacement, type CandidateNode } from '../../scheduling/placement';
import { DEFAULT_AUTOSCALER_LIMITS, applyLimits, parseProviders, type Offering } from '../../api/autoscaler';
import type { ResourceRequest } from '../../api/types';

const offering = (o: Partial<Offering> & Pick<Offering, 'name'>): Offering => ({
  provider: 'cloud',
  acceleratorType: 'A100',
  devicesPerNode: 8,
  nodesPerRack: 4,
  region: 'r1',
  pricePerDeviceHour: 2,
  spot: false,
  provisioningMs: 1000,
  quota: 10,
  ...o,
});

const req = (r: Partial<ResourceRequest> = {}): ResourceRequest => ({
  acceleratorTypes: ['A100'],
  workers: 1,
  devicesPerWorker: 1,
  topology: 'any',
  ...r,
});

const demand = (jobId: string, r: Partial<ResourceRequest> = {}, tier: WaitingDemand['tier'] = 'standard'): WaitingDemand => {
  const request = req(r);
  return { jobId, tier, request, types: request.acceleratorTypes };
};

const input = (o: Partial<ScaleUpInput>): ScaleUpInput => ({
  demand: [],
  offerings: [],
  existing: { free: [], inFlight: [] },
  limits: { budgetPerHour: 1000, providers: {}, maxNodesPerDecision: 16 },
  offeringNodes: new Map(),
  providerNodes: new Map(),
  costPerHour: 0,
  ...o,
});

describe('waiting reasons', () => {
  test('a job short of room waits for capacity on that type; one over quota does not', () => {
    expect(capacityBlockedTypes('A100: no room for 1×8 of A100 (3 candidate nodes checked)', ['A100'])).toEqual(['A100']);
    expect(capacityBlockedTypes('A100: over quota: acme/a uses 8 of nominal 8 A100, borrowing limit 0 reached', ['A100'])).toEqual([]);
  });
  test('mixed reasons keep only the types short of room, in the job order', () => {
    const r =
      'A100: over quota: acme uses 8 of nominal 8 A100 and has no cohort to borrow from; H100: no room for 1×8 of H100 (1 candidate node checked)';
    expect(capacityBlockedTypes(r, ['A100', 'H100'])).toEqual(['H100']);
  });
  test('a held job waits for capacity on all its types; queued, preempting and no reason are not demand', () => {
    expect(capacityBlockedTypes('held for higher-ranked job j-1 (needs 8 A100, …)', ['A100', 'H100'])).toEqual(['A100', 'H100']);
    expect(capacityBlockedTypes('queued: waiting for the next scheduling cycle', ['A100'])).toEqual([]);
    expect(capacityBlockedTypes('preempting j-2: placed once they release (grace period)', ['A100'])).toEqual([]);
    expect(capacityBlockedTypes(null, ['A100'])).toEqual([]);
  });
});

describe('a gang on an offering', () => {
  test('a gang that must share one node fits only an offering whose node holds it whole', () => {
    const gang = req({ workers: 2, devicesPerWorker: 4, topology: 'node' });
    expect(nodesForGang(offering({ name: 'x4', devicesPerNode: 4 }), gang, 'standard')).toEqual({
      reason: 'cloud/x4 holds 1 of the 2 workers that must share one node',
    });
    expect(nodesForGang(offering({ name: 'x8' }), gang, 'standard')).toEqual({ nodes: 1 });
  });
  test('a rack gang needs its nodes within one rack of the offering', () => {
    const gang = req({ workers: 6, devicesPerWorker: 8, topology: 'rack' });
    expect(nodesForGang(offering({ name: 'a', nodesPerRack: 4 }), gang, 'standard')).toMatchObject({
      reason: expect.stringContaining('racks hold 4'),
    });
    expect(nodesForGang(offering({ name: 'b', nodesPerRack: 8 }), gang, 'standard')).toEqual({ nodes: 6 });
  });
  test('shares, CPU and anti-affinity set how many workers one node takes', () => {
    expect(
      nodesForGang(offering({ name: 's', devicesPerNode: 2 }), req({ workers: 9, devicesPerWorker: 0, milliPerWorker: 250 }), 'basic'),
    ).toEqual({ nodes: 2 });
    expect(nodesForGang(offering({ name: 'c', cpuMilli: 16000 }), req({ workers: 4, cpuMilliPerWorker: 8000 }), 'basic')).toEqual({
      nodes: 2,
    });
    expect(nodesForGang(offering({ name: 'aa' }), req({ workers: 3, antiAffinity: true }), 'basic')).toEqual({ nodes: 3 });
  });
  test('premium work is never sized onto spot offerings', () => {
    expect(nodesForGang(offering({ name: 'sp', spot: true }), req(), 'premium')).toMatchObject({ reason: expect.stringContaining('spot') });
    expect(tierMayUse('premium', { spot: true })).toBe(false);
    expect(tierMayUse('basic', { spot: true })).toBe(true);
    expect(tierMayUse('premium', {})).toBe(true);
  });
});

describe('the scale-up plan', () => {
  const cheap4 = offering({ name: 'x4', devicesPerNode: 4, pricePerDeviceHour: 1 });
  const dear8 = offering({ name: 'x8', devicesPerNode: 8, pricePerDeviceHour: 3 });
  const spot8 = offering({ name: 'spot8', devicesPerNode: 8, pricePerDeviceHour: 0.5, spot: true });

  test('a gang that must share a node gets the offering that holds it whole, not the cheaper smaller one', () => {
    const plan = planScaleUp(
      input({ demand: [demand('g', { workers: 2, devicesPerWorker: 4, topology: 'node' })], offerings: [cheap4, dear8] }),
    );
    expect(plan.requests).toEqual([{ offering: dear8, count: 1, costPerHour: 24, forJobs: ['g'] }]);
    expect(plan.unmet).toEqual([]);
  });

  test('small jobs share the nodes requested for them: the cheapest per hour for what they need', () => {
    const plan = planScaleUp(
      input({ demand: [demand('a', { devicesPerWorker: 2 }), demand('b', { devicesPerWorker: 2 })], offerings: [cheap4, dear8] }),
    );
    expect(plan.requests.map((r) => [r.offering.name, r.count, r.forJobs])).toEqual([['x4', 1, ['a']]]);
    expect(plan.covered).toEqual(['b']);
  });

  test('basic work goes to spot when it is cheapest; premium work never does', () => {
    const plan = planScaleUp(
      input({
        demand: [demand('p', { devicesPerWorker: 8 }, 'premium'), demand('b', { devicesPerWorker: 8 }, 'basic')],
        offerings: [spot8, dear8],
      }),
    );
    expect(plan.requests.map((r) => [r.offering.name, r.forJobs])).toEqual([
      ['x8', ['p']],
      ['spot8', ['b']],
    ]);
  });

  test('free room and requests in flight are used before new nodes', () => {
    const free: ScaleUpInput['existing']['free'] = [
      { id: 1, name: 'n1', pod: 'p', rack: 'r', type: 'A100', spot: false, freeMilli: [1000, 1000, 0, 0] },
    ];
    const plan = planScaleUp(
      input({
        demand: [demand('a', { devicesPerWorker: 2 }), demand('b', { devicesPerWorker: 8 }), demand('c', { devicesPerWorker: 4 })],
        offerings: [dear8],
        existing: { free, inFlight: [{ requestId: 'r-1', offering: dear8, count: 1 }] },
      }),
    );
    expect(plan.covered).toEqual(['a', 'b']);
    expect(plan.requests.map((r) => [r.offering.name, r.count, r.forJobs])).toEqual([['x8', 1, ['c']]]);
  });

  test('the budget is respected, and what it leaves out is said', () => {
    const plan = planScaleUp(
      input({
        demand: [demand('a', { devicesPerWorker: 8 }), demand('b', { devicesPerWorker: 8 })],
        offerings: [dear8],
        limits: { budgetPerHour: 50, providers: {}, maxNodesPerDecision: 16 },
        costPerHour: 10,
      }),
    );
    expect(plan.requests.map((r) => r.count)).toEqual([1]);
    expect(plan.unmet).toEqual([expect.stringContaining('b (1×8 of A100): cloud/x8: 1 node(s) cost 24/h, 16/h of the 50/h budget left')]);
  });

  test('offering quotas and provider limits are respected', () => {
    const q = offering({ name: 'q', quota: 3 });
    const byQuota = planScaleUp(
      input({ demand: [demand('a', { devicesPerWorker: 8, workers: 2 })], offerings: [q], offeringNodes: new Map([['cloud/q', 2]]) }),
    );
    expect(byQuota.requests).toEqual([]);
    expect(byQuota.unmet[0]).toContain('quota of 3 nodes leaves 1, the gang needs 2');
    const byProvider = planScaleUp(
      input({
        demand: [demand('a', { devicesPerWorker: 8 }), demand('b', { devicesPerWorker: 8 })],
        offerings: [q],
        limits: { budgetPerHour: 1000, providers: { cloud: { maxNodes: 4 } }, maxNodesPerDecision: 16 },
        providerNodes: new Map([['cloud', 3]]),
      }),
    );
    expect(byProvider.requests.map((r) => r.count)).toEqual([1]);
    expect(byProvider.unmet[0]).toContain('cloud: at its limit of 4 nodes');
  });

  test('a rack gang gets a request of its own, sized to land in one rack', () => {
    const o = offering({ name: 'r', nodesPerRack: 2 });
    const plan = planScaleUp(
      input({
        demand: [demand('s', { devicesPerWorker: 4 }), demand('g', { workers: 2, devicesPerWorker: 8, topology: 'rack' })],
        offerings: [o],
      }),
    );
    expect(plan.requests.map((r) => [r.count, r.forJobs])).toEqual([
      [1, ['s']],
      [2, ['g']],
    ]);
  });

  test('shares on nodes not yet here count as whole devices; on free room now, as shares', () => {
    const two = offering({ name: 'x2', devicesPerNode: 2, pricePerDeviceHour: 1 });
    const shares = ['a', 'b', 'c'].map((j) => demand(j, { devicesPerWorker: 0, milliPerWorker: 250 }));
    expect(planScaleUp(input({ demand: shares, offerings: [two] })).requests.map((r) => r.count)).toEqual([2]);
    const free: ScaleUpInput['existing']['free'] = [
      { id: 1, name: 'n1', pod: 'p', rack: 'r', type: 'A100', spot: false, freeMilli: [1000] },
    ];
    expect(planScaleUp(input({ demand: shares, offerings: [two], existing: { free, inFlight: [] } }))).toMatchObject({
      requests: [],
      covered: ['a', 'b', 'c'],
    });
  });

  test('nothing is planned when no job waits for capacity', () => {
    expect(planScaleUp(input({ offerings: [dear8] }))).toEqual({ requests: [], covered: [], unmet: [] });
  });
});

describe('scale-in', () => {
  const node = (name: string, o: Partial<Parameters<typeof chooseScaleIn>[0][number]> = {}) => ({
    name,
    provider: 'cloud',
    state: 'ready',
    allocations: 0,
    premiumJobs: 0,
    idleSince: 0,
    ...o,
  });
  test('only provider nodes idle past the limit are released, never owned ones, busy ones or ones holding premium work', () => {
    const nodes = [
      node('idle-long'),
      node('idle-short', { idleSince: 50_000 }),
      node('busy', { allocations: 2, idleSince: undefined }),
      node('premium', { allocations: 8, premiumJobs: 1, idleSince: 0 }),
      node('owned', { provider: 'owned' }),
      node('draining', { state: 'draining' }),
      node('half-released', { state: 'cordoned' }),
    ];
    expect(chooseScaleIn(nodes, 60_000, 30_000, new Set(['owned']))).toEqual(['half-released', 'idle-long']);
  });
  test('the next decision is due when the next idle node reaches the limit, not a period later', () => {
    const nodes = [
      node('a', { idleSince: 50_000 }),
      node('b', { idleSince: 40_000 }),
      node('busy', { allocations: 1, idleSince: undefined }),
      node('past'),
    ];
    expect(nextIdleDeadline(nodes, 60_000, 30_000, new Set())).toBe(70_000);
    expect(nextIdleDeadline([node('busy', { allocations: 1, idleSince: undefined })], 60_000, 30_000, new Set())).toBeUndefined();
  });
});

describe('what scaling could add', () => {
  test('offerings times remaining quota, within provider limits and the budget left', () => {
    const a = offering({ name: 'a', quota: 4, pricePerDeviceHour: 1 });
    const b = offering({ name: 'b', quota: 10, pricePerDeviceHour: 2 });
    const h = offering({ name: 'h', acceleratorType: 'H100', quota: 2, pricePerDeviceHour: 4 });
    const got = scalableDevices([a, b, h], { budgetPerHour: 100, providers: {} }, new Map([['cloud/a', 1]]), new Map(), 20);
    // 80/h left: 3 × a (24/h) then 3 × b (48/h) for A100; H100 on its own: 2 × 32/h = 64/h.
    expect(got).toEqual(
      new Map([
        ['A100', 48],
        ['H100', 16],
      ]),
    );
    expect(scalableDevices([a], { budgetPerHour: 100, providers: { cloud: { maxNodes: 0 } } }, new Map(), new Map(), 0).get('A100')).toBe(
      0,
    );
  });
});

describe('placement prefers cheaper capacity', () => {
  const nodes: CandidateNode[] = [
    { id: 1, name: 'cloud', pod: 'p', rack: 'r', freeMilli: [1000, 1000], pricePerDeviceHour: 3 },
    { id: 2, name: 'owned', pod: 'p', rack: 'r', freeMilli: [1000, 1000, 1000, 1000] },
  ];
  test('with the cost objective the owned node wins although best-fit would pick the fuller cloud node', () => {
    expect(choosePlacement(nodes, req(), 'best-fit', { objective: 'cost' })).toMatchObject({ ok: true, workers: [{ nodeId: 2 }] });
    expect(choosePlacement(nodes, req(), 'best-fit', { objective: 'packing' })).toMatchObject({ ok: true, workers: [{ nodeId: 1 }] });
  });
  test('a gang that must share a node goes to the cheapest node that holds it', () => {
    expect(choosePlacement(nodes, req({ workers: 2, topology: 'node' }), 'best-fit', {})).toMatchObject({
      ok: true,
      workers: [{ nodeId: 2 }, { nodeId: 2 }],
    });
  });
  test('without prices the cost term is zero', () => {
    expect(costScore({}, 8, 'cost')).toBe(0);
    expect(costScore({ pricePerDeviceHour: 2 }, 8, 'packing')).toBe(0);
    expect(costScore({ pricePerDeviceHour: 2 }, 8, undefined)).toBeGreaterThan(0);
  });
});

describe('seeded randomness', () => {
  test('the same seed and key give the same stream; another key another', () => {
    const a = seededRandom(7, 'req-1');
    const b = seededRandom(7, 'req-1');
    const c = seededRandom(7, 'req-2');
    const xs = [a(), a(), a()];
    expect([b(), b(), b()]).toEqual(xs);
    expect(c()).not.toBe(xs[0]);
    for (const x of xs) expect(x >= 0 && x < 1).toBe(true);
  });
});

describe('configuration is checked', () => {
  test('a good provider list is read with defaults', () => {
    const { providers, problems } = parseProviders([
      { name: 'owned', kind: 'owned' },
      {
        name: 'cloud-a',
        kind: 'simulated',
        seed: 1,
        offerings: [
          {
            name: 'a100x8',
            acceleratorType: 'A100',
            devicesPerNode: 8,
            region: 'r1',
            pricePerDeviceHour: 2,
            provisioningMs: 1000,
            quota: 4,
          },
        ],
      },
    ]);
    expect(problems).toEqual([]);
    expect(providers[1]).toMatchObject({
      kind: 'simulated',
      failureRate: 0,
      offerings: [{ provider: 'cloud-a', nodesPerRack: 1, spot: false }],
    });
  });
  test('a bad provider list is refused with every problem named', () => {
    const { providers, problems } = parseProviders([
      { name: 'Bad Name', kind: 'owned' },
      { name: 'c', kind: 'cloudy' },
      {
        name: 'd',
        kind: 'simulated',
        seed: -1,
        failureRate: 2,
        offerings: [
          {
            name: 'o',
            acceleratorType: 'A100',
            devicesPerNode: 0,
            region: 'r1',
            pricePerDeviceHour: -1,
            provisioningMs: 5,
            quota: 1,
            colour: 'red',
          },
        ],
      },
      { name: 'd', kind: 'simulated', seed: 1, offerings: [] },
    ]);
    expect(providers).toEqual([]);
    expect(problems).toEqual([
      `providers[0].name: "Bad Name" must be lowercase letters, digits or '-' (up to 63)`,
      'providers[1].kind: "cloudy" must be "owned" or "simulated"',
      'providers[2].seed: -1 must be a whole number from 0 to 2^31-1',
      'providers[2].failureRate: 2 must be a probability from 0 to 1',
      'providers[2].offerings[0]: unknown field colour',
      'providers[2].offerings[0].devicesPerNode: 0 must be a whole number from 1 to 64',
      'providers[2].offerings[0].pricePerDeviceHour: -1 must be a number from 0 to 1e6',
      'providers[3].name: d is listed twice',
      'providers[3].offerings: [] must be a non-empty list of offerings',
    ]);
    expect(parseProviders({}).problems).toEqual(['providers: {} must be a list of { name, kind: "owned" | "simulated", ... }']);
  });
  test('limits are applied over the current ones, and bad limits are refused with the reason', () => {
    const ok = applyLimits(DEFAULT_AUTOSCALER_LIMITS, { budgetPerHour: 100, providers: { cloud: { maxNodes: 3 } } }, ['cloud']);
    expect(ok).toMatchObject({ limits: { budgetPerHour: 100, periodMs: 10_000, providers: { cloud: { maxNodes: 3 } } }, problems: [] });
    expect(
      applyLimits(
        DEFAULT_AUTOSCALER_LIMITS,
        { budgetPerHour: -5, periodMs: 1, idleLimitMs: 1.5, providers: { nope: { maxNodes: 1 } }, speed: 3 },
        ['cloud'],
      ).problems,
    ).toEqual([
      'limits: unknown field speed (known: periodMs, cooldownMs, idleLimitMs, budgetPerHour, providers, maxNodesPerDecision)',
      'limits.periodMs: 1 must be a whole number of milliseconds from 100 to 7 days',
      'limits.idleLimitMs: 1.5 must be a whole number of milliseconds from 0 to 7 days',
      'limits.budgetPerHour: -5 must be a number from 0 to 1e9',
      'limits.providers.nope: no such provider (configured: cloud)',
    ]);
    expect(applyLimits(DEFAULT_AUTOSCALER_LIMITS, { providers: { cloud: { maxNodes: -1 } } }, ['cloud']).problems).toEqual([
      'limits.providers.cloud: {"maxNodes":-1} must be { maxNodes } with maxNodes a whole number from 0 to 100000',
    ]);
    expect(applyLimits(DEFAULT_AUTOSCALER_LIMITS, 'fast', ['cloud']).problems).toEqual(['limits: "fast" must be an object']);
  });
});
