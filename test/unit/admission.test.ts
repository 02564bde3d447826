// Admission rules over a tenant tree: registration, activity, and policies inherited from the
// nearest tenant that sets them.
import { admissionProblems, regionRules, type TenantPolicyRow } from '../../scheduling/admission';
import type { JobSpec } from '../../api/types';

const row = (path: string, policy: Partial<TenantPolicyRow> = {}): TenantPolicyRow => ({
  path,
  active: true,
  allowed_tiers: null,
  allowed_types: null,
  max_devices_per_job: null,
  ...policy,
});

const spec = (over: Partial<JobSpec> = {}): JobSpec => ({
  jobId: 'j-1',
  tenant: 'acme/ml',
  tier: 'standard',
  priority: 0,
  durationMs: 1000,
  request: { acceleratorTypes: ['A100'], workers: 2, devicesPerWorker: 4, topology: 'any' },
  ...over,
});

describe('admission rules', () => {
  test.each<[string, JobSpec, TenantPolicyRow[], string[]]>([
    ['a registered, active tenant with no policy is admitted', spec(), [row('acme'), row('acme/ml')], []],
    ['an unregistered tenant is refused', spec(), [row('acme')], ['tenant: acme/ml is not a registered tenant']],
    ['an inactive tenant is refused', spec(), [row('acme'), row('acme/ml', { active: false })], ['tenant: acme/ml is not active']],
    [
      'an inactive parent refuses its subtree',
      spec(),
      [row('acme', { active: false }), row('acme/ml')],
      ['tenant: acme (parent of acme/ml) is not active'],
    ],
    [
      'a tier the parent does not allow is refused, naming the policy',
      spec({ tier: 'premium' }),
      [row('acme', { allowed_tiers: ['standard', 'basic'] }), row('acme/ml')],
      ['tier: premium is not allowed for acme/ml (policy of acme allows standard, basic)'],
    ],
    [
      'the nearest tenant that sets a field decides',
      spec({ tier: 'premium' }),
      [row('acme', { allowed_tiers: ['basic'] }), row('acme/ml', { allowed_tiers: ['premium'] })],
      [],
    ],
    [
      'types outside the allowed list are named',
      spec({ request: { ...spec().request, acceleratorTypes: ['A100', 'H100', 'L4'] } }),
      [row('acme', { allowed_types: ['A100'] }), row('acme/ml')],
      ['request.acceleratorTypes: H100, L4 not allowed for acme/ml (policy of acme allows A100)'],
    ],
    [
      'a job larger than the limit is refused in devices',
      spec({ request: { ...spec().request, workers: 3 } }),
      [row('acme', { max_devices_per_job: 8 }), row('acme/ml')],
      ['request: 12 devices exceed the limit of 8 per job for acme/ml (policy of acme)'],
    ],
    [
      'every broken rule is reported at once',
      spec({ tier: 'premium', request: { ...spec().request, acceleratorTypes: ['H100'] } }),
      [row('acme', { allowed_tiers: ['basic'], allowed_types: [] }), row('acme/ml')],
      [
        'tier: premium is not allowed for acme/ml (policy of acme allows basic)',
        'request.acceleratorTypes: H100 not allowed for acme/ml (policy of acme allows none)',
      ],
    ],
  ])('%s', (_, s, rows, expected) => {
    expect(admissionProblems(s, 'us-east', rows)).toEqual(expected);
  });
});

describe('region rules', () => {
  test('a job that names no regions may run anywhere, home included', () => {
    expect(regionRules({}, 'us-east', ['eu-west'])).toEqual({ home: true, problems: [] });
  });
  test('a job that names only a peer may not run at home', () => {
    expect(regionRules({ allowedRegions: ['eu-west'] }, 'us-east', ['eu-west'])).toEqual({ home: false, problems: [] });
  });
  test('a region that is neither home nor a peer is named', () => {
    expect(regionRules({ allowedRegions: ['us-east', 'mars'] }, 'us-east', ['eu-west'])).toEqual({
      home: true,
      problems: ['allowedRegions: mars is neither this region (us-east) nor one of its peers (eu-west)'],
    });
  });
});
