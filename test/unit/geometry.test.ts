// Request geometry, units and tenant paths: the arithmetic every layer shares.
import {
  candidatePageSize,
  hostNeed,
  MAX_CANDIDATE_PAGE,
  neverFits,
  requestMilli,
  wholeDevicesPerNode,
  type LargestNode,
} from '../../scheduling/geometry';
import { describeRequest, formatDevices } from '../../api/units';
import { descendantsLikePattern, inSubtree, tenantAncestors, tenantChain } from '../../api/tenants';
import type { ResourceRequest } from '../../api/types';

const req = (over: Partial<ResourceRequest> = {}): ResourceRequest => ({
  acceleratorTypes: ['A100'],
  workers: 2,
  devicesPerWorker: 4,
  topology: 'any',
  ...over,
});
const largest = (entries: Record<string, Partial<LargestNode>>) =>
  new Map(Object.entries(entries).map(([t, n]) => [t, { devices: 8, cpuMilli: 64_000, memoryMib: 262_144, ...n }]));

describe('request geometry', () => {
  test.each<[string, Partial<ResourceRequest>, number, number, { cpu: number; memory: number }]>([
    ['a spread gang of whole devices', {}, 8000, 4, { cpu: 0, memory: 0 }],
    ['a gang on one node needs all its devices there', { topology: 'node' }, 8000, 8, { cpu: 0, memory: 0 }],
    [
      'a share of a device needs one device with room',
      { devicesPerWorker: 0, milliPerWorker: 250, workers: 3 },
      750,
      1,
      { cpu: 0, memory: 0 },
    ],
    [
      'host needs add up for workers sharing a node',
      { topology: 'node', cpuMilliPerWorker: 4000, memoryMibPerWorker: 1024 },
      8000,
      8,
      { cpu: 8000, memory: 2048 },
    ],
    ['host needs are per worker when spread', { cpuMilliPerWorker: 4000 }, 8000, 4, { cpu: 4000, memory: 0 }],
  ])('%s', (_, over, milli, perNode, host) => {
    expect(requestMilli(req(over))).toBe(milli);
    expect(wholeDevicesPerNode(req(over))).toBe(perNode);
    expect(hostNeed(req(over))).toEqual(host);
  });

  test('a candidate page holds four nodes per worker, at least the limit, never more than the cap', () => {
    expect(candidatePageSize(req({ workers: 1 }), 32)).toBe(32);
    expect(candidatePageSize(req({ workers: 100 }), 32)).toBe(400);
    // Above 256 workers the page is capped like the read itself, so a full page is not taken for the last one.
    expect(candidatePageSize(req({ workers: 300 }), 32)).toBe(MAX_CANDIDATE_PAGE);
    expect(candidatePageSize(req({ workers: 1024 }), 32)).toBe(MAX_CANDIDATE_PAGE);
  });

  test.each<[string, Partial<ResourceRequest>, Record<string, Partial<LargestNode>>, string | undefined]>([
    ['fits a node of its type', {}, { A100: {} }, undefined],
    ['an unknown type', { acceleratorTypes: ['MI300'] }, { A100: {} }, 'request.acceleratorTypes: unknown accelerator type "MI300"'],
    ['a known type with no node', {}, { A100: { devices: 0 } }, 'request.acceleratorTypes: no node of A100 exists in region r1'],
    [
      'a gang on one node larger than any node',
      { topology: 'node', workers: 3 },
      { A100: {} },
      'request: 3×4 of A100 in one node needs 12 devices on one node, but the largest node of A100 has 8',
    ],
    [
      'any acceptable type large enough will do',
      { acceleratorTypes: ['A100', 'H100'], devicesPerWorker: 16 },
      { A100: {}, H100: { devices: 16 } },
      undefined,
    ],
    [
      'more CPU than any node has',
      { cpuMilliPerWorker: 70_000 },
      { A100: {} },
      'request.cpuMilliPerWorker: 2×4 of A100 with 70000m CPU each needs 70000m CPU on one node, but the largest node of A100 has 64000m',
    ],
    ['nodes that do not track memory have room for any', { memoryMibPerWorker: 10_000_000 }, { A100: { memoryMib: Infinity } }, undefined],
  ])('never fits: %s', (_, over, nodes, reason) => {
    expect(neverFits(req(over), largest(nodes), 'region r1')).toBe(reason);
  });
});

describe('units', () => {
  test.each([
    [8000, '8'],
    [1500, '1.5'],
    [250, '0.25'],
    [1, '0.001'],
    [0, '0'],
  ])('%d milli-devices read as %s devices', (milli, text) => {
    expect(formatDevices(milli)).toBe(text);
  });
  test('a request reads as workers × size of types, with host needs and topology', () => {
    expect(describeRequest(req({ topology: 'rack', cpuMilliPerWorker: 8000 }))).toBe('2×4 of A100 with 8000m CPU each in one rack');
    expect(describeRequest(req({ devicesPerWorker: 0, milliPerWorker: 500, acceleratorTypes: ['A100', 'L4'] }))).toBe('2×500m of A100|L4');
  });
});

describe('tenant paths', () => {
  test('a chain runs from the tenant up to its org', () => {
    expect(tenantChain('a/b/c')).toEqual(['a/b/c', 'a/b', 'a']);
    expect(tenantAncestors('a/b/c')).toEqual(['a/b', 'a']);
    expect(tenantAncestors('a')).toEqual([]);
  });
  test('a subtree is the tenant and the paths below it, not its name-prefixed siblings', () => {
    expect(inSubtree('acme', 'acme')).toBe(true);
    expect(inSubtree('acme/ml', 'acme')).toBe(true);
    expect(inSubtree('acme-labs', 'acme')).toBe(false);
    expect(inSubtree('acme', 'acme/ml')).toBe(false);
  });
  test("a LIKE pattern for descendants escapes the tenant's own wildcards", () => {
    expect(descendantsLikePattern('acme')).toBe('acme/%');
    expect(descendantsLikePattern('big_co')).toBe('big\\_co/%');
  });
});
