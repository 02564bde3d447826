import { validateSpec } from '../../api/validation';
import type { JobSpec } from '../../api/types';

const good: JobSpec = {
  jobId: 'train-1',
  tenant: 'acme/vision/detector',
  tier: 'standard',
  priority: 10,
  durationMs: 1000,
  request: { acceleratorTypes: ['A100'], workers: 2, devicesPerWorker: 4, topology: 'rack' },
};

describe('job spec validation', () => {
  test('a well-formed spec has no problems', () => {
    expect(validateSpec(good)).toEqual([]);
    expect(validateSpec({ ...good, request: { ...good.request, devicesPerWorker: 0, milliPerWorker: 250 } })).toEqual([]);
    expect(validateSpec({ ...good, request: { ...good.request, cpuMilliPerWorker: 8000, memoryMibPerWorker: 0 } })).toEqual([]);
    expect(validateSpec({ ...good, request: { ...good.request, acceleratorTypes: ['A100', 'H100'], typePreference: 'none' } })).toEqual([]);
    expect(validateSpec({ ...good, request: { ...good.request, typePreference: 'ordered' } })).toEqual([]);
  });

  test.each<[string, unknown, string]>([
    ['unknown tier', { ...good, tier: 'gold' }, 'tier: "gold" must be one of premium, standard, basic'],
    ['negative priority', { ...good, priority: -1 }, 'priority: -1 must be an integer from 0 to 1000'],
    ['zero workers', { ...good, request: { ...good.request, workers: 0 } }, 'request.workers: 0 must be an integer from 1'],
    [
      'negative devices',
      { ...good, request: { ...good.request, devicesPerWorker: -2 } },
      'request.devicesPerWorker: -2 must be an integer from 0',
    ],
    [
      'share without size',
      { ...good, request: { ...good.request, devicesPerWorker: 0 } },
      'request.milliPerWorker: undefined must be an integer from 1 to 999',
    ],
    [
      'share with whole devices',
      { ...good, request: { ...good.request, milliPerWorker: 500 } },
      'request.milliPerWorker: 500 is only allowed when devicesPerWorker is 0',
    ],
    [
      'no accelerator types',
      { ...good, request: { ...good.request, acceleratorTypes: [] } },
      'request.acceleratorTypes: [] must be a list of 1 to 16 accelerator type names',
    ],
    [
      'fractional CPU',
      { ...good, request: { ...good.request, cpuMilliPerWorker: 1.5 } },
      'request.cpuMilliPerWorker: 1.5 must be an integer from 0 to 10000000 (milli-cores)',
    ],
    [
      'negative CPU',
      { ...good, request: { ...good.request, cpuMilliPerWorker: -1000 } },
      'request.cpuMilliPerWorker: -1000 must be an integer from 0',
    ],
    [
      'CPU as a string',
      { ...good, request: { ...good.request, cpuMilliPerWorker: '4000' } },
      'request.cpuMilliPerWorker: "4000" must be an integer',
    ],
    [
      'negative memory',
      { ...good, request: { ...good.request, memoryMibPerWorker: -1 } },
      'request.memoryMibPerWorker: -1 must be an integer from 0 to 1073741824 (MiB)',
    ],
    [
      'fractional memory',
      { ...good, request: { ...good.request, memoryMibPerWorker: 0.5 } },
      'request.memoryMibPerWorker: 0.5 must be an integer',
    ],
    [
      'unknown type preference',
      { ...good, request: { ...good.request, typePreference: 'cheapest' } },
      'request.typePreference: "cheapest" must be one of ordered, none',
    ],
    [
      'bad topology',
      { ...good, request: { ...good.request, topology: 'zone' } },
      'request.topology: "zone" must be one of any, node, rack, pod',
    ],
    ['zero duration', { ...good, durationMs: 0 }, 'durationMs: 0 must be a positive integer'],
    ['bad tenant path', { ...good, tenant: 'Acme//x' }, 'tenant: "Acme//x" must be a path org[/team[/project]]'],
    ['uppercase job id', { ...good, jobId: 'Train' }, 'jobId: "Train" must be 1-63 lowercase letters'],
    ['a tenant name of 64 characters', { ...good, tenant: `acme/${'t'.repeat(64)}` }, 'of at most 63 characters'],
    [
      'seventeen accelerator types',
      { ...good, request: { ...good.request, acceleratorTypes: Array.from({ length: 17 }, (_, i) => `t${i}`) } },
      'must be a list of 1 to 16 accelerator type names',
    ],
    [
      'a type name of 64 characters',
      { ...good, request: { ...good.request, acceleratorTypes: ['x'.repeat(64)] } },
      'accelerator type names of at most 63 characters',
    ],
    [
      'thirty-three node labels',
      { ...good, request: { ...good.request, nodeLabels: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v'])) } },
      'must map at most 32 label names',
    ],
    [
      'a label value of 254 characters',
      { ...good, request: { ...good.request, nodeLabels: { zone: 'z'.repeat(254) } } },
      'string values of at most 253 characters',
    ],
    [
      'thirty-three allowed regions',
      { ...good, allowedRegions: Array.from({ length: 33 }, (_, i) => `r${i}`) },
      'must be a list of 1 to 32 region names',
    ],
  ])('%s is rejected naming the field and the rule', (_name, spec, message) => {
    const problems = validateSpec(spec);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(message);
  });

  test('a non-object is rejected', () => {
    expect(validateSpec(null)).toEqual(['spec: must be an object']);
  });
});

test('a huge bad value is quoted cut short, not whole', () => {
  const [problem] = validateSpec({ ...good, jobId: 'X'.repeat(100_000) });
  expect(problem.length).toBeLessThan(300);
  expect(problem).toMatch(/^jobId: "XXX+\.\.\. must be 1-63/);
});
