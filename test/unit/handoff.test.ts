// Peer choice from inventory summaries, and the checks on summaries and peer configuration.
import { choosePeer, freeByType, handoffPolicy, largeChange, roomHere, type HeldSummary } from '../../scheduling/handoff';
import { parsePeers, validateSummary, type InventorySummary, type TypeSummary } from '../../api/peers';
import type { JobSpec } from '../../api/types';

const NOW = 1_000_000;
const type = (over: Partial<TypeSummary> = {}): TypeSummary => ({
  freeMilli: 16_000,
  freeWhole: 16,
  totalDevices: 32,
  largestFree: { node: 8, rack: 16, pod: 16 },
  largestNode: { devices: 8, cpuMilli: 64_000, memoryMib: 262_144 },
  queue: {
    premium: { jobs: 0, milli: 0, oldestWaitMs: 0 },
    standard: { jobs: 0, milli: 0, oldestWaitMs: 0 },
    basic: { jobs: 0, milli: 0, oldestWaitMs: 0 },
  },
  scalableDevices: 0,
  ...over,
});
const held = (region: string, types: Record<string, TypeSummary>, ageMs = 1000): [string, HeldSummary] => [
  region,
  { summary: { region, version: 1, generatedAt: new Date(NOW).toISOString(), types }, receivedAt: NOW - ageMs },
];
const job = (over: Partial<JobSpec['request']> = {}, spec: Partial<JobSpec> = {}) => ({
  tier: 'standard' as const,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 4, topology: 'any' as const, ...over },
  ...spec,
});

describe('peer choice', () => {
  test('what this region sent a peer since its summary counts as queued there: jobs looking abroad together spread out', () => {
    // eu looks roomier (16 free vs 12), but 8 devices already went to eu since its summary.
    const summaries = new Map([held('eu', { A100: type() }), held('ap', { A100: type({ freeWhole: 12, freeMilli: 12_000 }) })]);
    expect(choosePeer(job(), ['eu', 'ap'], summaries, { now: NOW })).toMatchObject({ peer: 'eu' });
    const inFlight = new Map([['eu', new Map([['A100', 8000]])]]);
    expect(choosePeer(job(), ['eu', 'ap'], summaries, { now: NOW, inFlight })).toMatchObject({ peer: 'ap' });
    // Once what was sent fills a peer, it is not chosen at all.
    const full = new Map([
      ['eu', new Map([['A100', 16_000]])],
      ['ap', new Map([['A100', 12_000]])],
    ]);
    expect(choosePeer(job(), ['eu', 'ap'], summaries, { now: NOW, inFlight: full }).reason).toMatch(
      /eu: 16 free but 16 queued ahead or on its way/,
    );
  });

  test('the home takes a job back only when it has room for it after its own queue', () => {
    const own = (t: TypeSummary): InventorySummary => ({
      region: 'us',
      version: 3,
      generatedAt: new Date(NOW).toISOString(),
      types: { A100: t },
    });
    expect(roomHere(job(), own(type()))).toMatchObject({ room: true });
    expect(roomHere(job(), own(type({ freeWhole: 2, freeMilli: 2000, largestFree: { node: 2, rack: 2, pod: 2 } })))).toMatchObject({
      room: false,
    });
    const queued = type({ queue: { ...type().queue, standard: { jobs: 4, milli: 14_000, oldestWaitMs: 5000 } } });
    expect(roomHere(job(), own(queued))).toEqual({ room: false, reason: 'A100: 16 free where it must land, 14 queued ahead' });
    // Basic work queued here does not go before a standard job.
    const basic = type({ queue: { ...type().queue, basic: { jobs: 4, milli: 14_000, oldestWaitMs: 5000 } } });
    expect(roomHere(job(), own(basic))).toMatchObject({ room: true });
    expect(roomHere(job({ acceleratorTypes: ['H100'] }), own(type()))).toEqual({ room: false, reason: 'us has none of H100' });
  });

  test('the peer with the most room to spare after its queue is chosen', () => {
    const summaries = new Map([held('eu', { A100: type({ freeWhole: 8, freeMilli: 8000 }) }), held('ap', { A100: type() })]);
    expect(choosePeer(job(), ['eu', 'ap'], summaries, { now: NOW })).toMatchObject({ peer: 'ap' });
  });

  test('demand queued ahead counts against a peer: premium work waiting there goes first', () => {
    const busy = type({ queue: { ...type().queue, premium: { jobs: 3, milli: 14_000, oldestWaitMs: 60_000 } } });
    const summaries = new Map([held('eu', { A100: busy }), held('ap', { A100: type({ freeWhole: 8, freeMilli: 8000 }) })]);
    expect(choosePeer(job(), ['eu', 'ap'], summaries, { now: NOW })).toMatchObject({ peer: 'ap' });
  });

  test('a summary older than the TTL counts as absent', () => {
    const summaries = new Map([held('eu', { A100: type() }, 11_000)]);
    expect(choosePeer(job(), ['eu'], summaries, { now: NOW })).toEqual({ reason: 'no peer has room: eu: summary 11 s old (TTL 10 s)' });
  });

  test('only allowed, not recently refused peers are asked', () => {
    const summaries = new Map([held('eu', { A100: type() }), held('ap', { A100: type() })]);
    expect(choosePeer(job({}, { allowedRegions: ['us', 'eu'] }), ['eu', 'ap'], summaries, { now: NOW })).toMatchObject({ peer: 'eu' });
    expect(choosePeer(job(), ['eu', 'ap'], summaries, { now: NOW, exclude: new Set(['ap']) })).toMatchObject({ peer: 'eu' });
    expect(choosePeer(job({}, { allowedRegions: ['us'] }), ['eu', 'ap'], summaries, { now: NOW })).toEqual({
      reason: 'no peer region is allowed for this job',
    });
  });

  test('a shape no node of a peer can hold, or larger than its whole fleet of the type, is never sent there', () => {
    const summaries = new Map([held('eu', { A100: type() })]);
    expect(choosePeer(job({ devicesPerWorker: 16 }), ['eu'], summaries, { now: NOW, mustLeave: true }).reason).toMatch(
      /eu: 1×16 of A100 needs 16 devices on one node, but the largest node of A100 has 8/,
    );
    expect(choosePeer(job({ workers: 5, devicesPerWorker: 8 }), ['eu'], summaries, { now: NOW, mustLeave: true }).reason).toBe(
      'no peer has room: eu: 5×8 of A100 needs 40 devices, the region has 32 A100 in all',
    );
  });

  test('types a peer has none of are skipped, not a reason to pass the peer over', () => {
    const summaries = new Map([held('eu', { A100: type() })]);
    expect(choosePeer(job({ acceleratorTypes: ['H100', 'A100'], typePreference: 'none' }), ['eu'], summaries, { now: NOW })).toMatchObject({
      peer: 'eu',
    });
    expect(choosePeer(job({ acceleratorTypes: ['H100'] }), ['eu'], summaries, { now: NOW, mustLeave: true }).reason).toBe(
      'no peer has room: eu: no node of H100',
    );
  });

  test('a gang that must share a rack needs that much free in one rack', () => {
    const summaries = new Map([held('eu', { A100: type({ largestFree: { node: 8, rack: 8, pod: 16 } }) })]);
    expect(choosePeer(job({ workers: 2, devicesPerWorker: 8, topology: 'rack' }), ['eu'], summaries, { now: NOW }).reason).toMatch(
      /eu: no room now for 2×8 of A100 in one rack \(8 free where it must land\)/,
    );
    expect(choosePeer(job({ workers: 2, devicesPerWorker: 8, topology: 'pod' }), ['eu'], summaries, { now: NOW })).toMatchObject({
      peer: 'eu',
    });
  });

  test('a job that must leave home goes to a peer that could hold it even with no room now', () => {
    const summaries = new Map([held('eu', { H100: type({ freeWhole: 0, freeMilli: 0, largestFree: { node: 0, rack: 0, pod: 0 } }) })]);
    const h100 = job({ acceleratorTypes: ['H100'] });
    expect(choosePeer(h100, ['eu'], summaries, { now: NOW }).peer).toBeUndefined();
    expect(choosePeer(h100, ['eu'], summaries, { now: NOW, mustLeave: true })).toMatchObject({ peer: 'eu' });
  });

  test('handoff is on by default after 30 s; a spec may switch it off or change the wait', () => {
    expect(handoffPolicy({} as JobSpec)).toEqual({ enabled: true, afterMs: 30_000 });
    expect(handoffPolicy({ handoff: { enabled: false } } as JobSpec).enabled).toBe(false);
    expect(handoffPolicy({ handoff: { afterMs: 500 } } as JobSpec).afterMs).toBe(500);
  });
});

describe('summaries and peer configuration are checked', () => {
  const good: InventorySummary = { region: 'eu', version: 3, generatedAt: new Date(NOW).toISOString(), types: { A100: type() } };
  test('a well-formed summary has no problems', () => {
    expect(validateSummary(good)).toEqual([]);
  });
  test.each<[string, unknown, string]>([
    ['not an object', 'hello', 'summary: "hello" must be an object'],
    ['a bad region', { ...good, region: 'EU!' }, 'summary.region: "EU!" must be a region name'],
    ['a version that is not a positive integer', { ...good, version: 0 }, 'summary.version: 0 must be a positive integer'],
    [
      'negative free capacity',
      { ...good, types: { A100: type({ freeMilli: -1 }) } },
      'summary.types.A100.freeMilli: -1 must be a number ≥ 0',
    ],
    [
      'a queue without a tier',
      { ...good, types: { A100: { ...type(), queue: {} } } },
      'summary.types.A100.queue.premium: undefined must give jobs, milli and oldestWaitMs as numbers ≥ 0',
    ],
  ])('%s is refused, naming the field', (_, input, problem) => {
    expect(validateSummary(input)).toContain(problem);
  });

  test('peers parse with defaults from the name', () => {
    expect(parsePeers([{ name: 'eu', temporalAddress: '127.0.0.1:7234' }], 'us')).toEqual({
      peers: [{ name: 'eu', temporalAddress: '127.0.0.1:7234', namespace: 'sched-eu', taskQueue: 'jobs-eu' }],
      problems: [],
    });
  });
  test('a bad peer list is refused whole, every problem named', () => {
    const { peers, problems } = parsePeers(
      [
        { name: 'us', temporalAddress: 'nowhere' },
        { name: 'eu', temporalAddress: '1.2.3.4:7233', tls: { certFile: 'a.crt' } },
        { name: 'eu', temporalAddress: '1.2.3.4:7233', extra: 1 },
      ],
      'us',
    );
    expect(peers).toEqual([]);
    expect(problems).toEqual([
      'peers[0].name: us is this region itself',
      'peers[0].temporalAddress: "nowhere" must be host:port',
      'peers[1].tls.certFile and peers[1].tls.keyFile go together (the mTLS client certificate and its key): peers[1].tls.keyFile is missing',
      'peers[2]: unknown field extra',
      'peers[2].name: eu is listed twice',
    ]);
  });
});

describe('publishing on large changes', () => {
  const free = (entries: Array<[string, number, number]>) =>
    Object.fromEntries(entries.map(([type, f, total]) => [type, { free: f, total }]));

  test('room growing by 10% of a type, or the type filling up, is large; the rest is left to the period', () => {
    const last = free([['A100', 40, 64]]);
    expect(largeChange(last, free([['A100', 46, 64]]))).toBeUndefined(); // 6 < ceil(6.4)
    expect(largeChange(last, free([['A100', 47, 64]]))).toBe('A100: 40 → 47 free of 64');
    // Shrinking room is left to the period, until the type is full.
    expect(largeChange(last, free([['A100', 10, 64]]))).toBeUndefined();
    expect(largeChange(last, free([['A100', 0, 64]]))).toBe('A100: full (40 → 0 free of 64)');
    expect(largeChange(free([['A100', 0, 64]]), free([['A100', 0, 64]]))).toBeUndefined();
    // A small type: one device is already large.
    expect(largeChange(free([['H100', 0, 8]]), free([['H100', 1, 8]]))).toBe('H100: 0 → 1 free of 8');
  });

  test('a type that appears or goes is large', () => {
    const both = free([
      ['A100', 8, 8],
      ['MI300', 8, 8],
    ]);
    expect(largeChange(free([['A100', 8, 8]]), both)).toBe('MI300: new since the last summary');
    expect(largeChange(both, free([['A100', 8, 8]]))).toBe('MI300: gone since the last summary');
    expect(largeChange(free([['A100', 8, 8]]), free([['A100', 8, 8]]))).toBeUndefined();
  });

  test('a summary states its free and total devices per type', () => {
    const types = { A100: type({ freeWhole: 3, totalDevices: 16 }), H100: type({ freeWhole: 0, totalDevices: 8 }) };
    expect(freeByType({ types })).toEqual({ A100: { free: 3, total: 16 }, H100: { free: 0, total: 8 } });
  });
});
