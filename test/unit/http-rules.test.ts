// The HTTP API's pure rules: which limits apply to a tenant, the token bucket, schema errors as
// field + rule, and a waiting reason read into what would unblock the job.
import { TokenBuckets, applicableLimits } from '../../api/http/limits';
import { problemFromMessage, problemsFromSchemaErrors } from '../../api/http/errors';
import { explainWait } from '../../api/http/why';
import { covers, principalFromClaims, roleAtLeast } from '../../api/http/auth';
import type { JobStatus } from '../../api/types';

describe('limits', () => {
  const defaults = { maxQueuedJobs: 100, submitPerSecond: 10, submitBurst: 20 };
  test.each([
    [
      'no rows: the defaults, counted for the tenant itself',
      [],
      { maxQueuedJobs: 100, queueScope: 'a/b', perSecond: 10, burst: 20, rateScope: 'a/b' },
    ],
    [
      'an ancestor sets the rate: its subtree shares the bucket, burst one second of it',
      [{ tenant: 'a', maxQueuedJobs: null, submitPerSecond: 5, submitBurst: null }],
      { maxQueuedJobs: 100, queueScope: 'a/b', perSecond: 5, burst: 5, rateScope: 'a' },
    ],
    [
      'the nearest setting wins, field by field',
      [
        { tenant: 'a', maxQueuedJobs: 3, submitPerSecond: 5, submitBurst: 50 },
        { tenant: 'a/b', maxQueuedJobs: null, submitPerSecond: 1, submitBurst: null },
      ],
      { maxQueuedJobs: 3, queueScope: 'a', perSecond: 1, burst: 50, rateScope: 'a/b' },
    ],
  ])('%s', (_what, rows, want) => {
    expect(applicableLimits('a/b', rows, defaults)).toEqual(want);
  });

  test('a bucket gives its burst at once, then one token per 1/rate seconds, and says when to come back', () => {
    let now = 0;
    const b = new TokenBuckets(() => now);
    expect([1, 2].map(() => b.take('k', 2, 2).ok)).toEqual([true, true]);
    expect(b.take('k', 2, 2)).toEqual({ ok: false, retryAfterS: 1 });
    now = 500;
    expect(b.take('k', 2, 2).ok).toBe(true);
    expect(b.take('other', 2, 2).ok).toBe(true);
  });
});

describe('errors', () => {
  test('AJV errors become one problem per field and rule', () => {
    expect(
      problemsFromSchemaErrors(
        [
          { instancePath: '', keyword: 'required', params: { missingProperty: 'tier' } },
          { instancePath: '/request', keyword: 'additionalProperties', params: { additionalProperty: 'gpus' } },
          {
            instancePath: '/request/acceleratorTypes/0',
            keyword: 'minLength',
            params: {},
            message: 'must NOT have fewer than 1 characters',
          },
          { instancePath: '', keyword: 'additionalProperties', params: { additionalProperty: '' } },
          { instancePath: '/tier', keyword: 'enum', params: { allowedValues: ['premium', 'basic'] }, message: 'x' },
        ],
        'body',
      ),
    ).toEqual([
      { field: 'tier', rule: 'is required' },
      { field: 'request.gpus', rule: 'is not a known field' },
      { field: 'request.acceleratorTypes[0]', rule: 'must NOT have fewer than 1 characters' },
      { field: '[""]', rule: 'is not a known field' },
      { field: 'tier', rule: 'must be one of "premium", "basic"' },
    ]);
    expect(problemsFromSchemaErrors([{ instancePath: '', keyword: 'type', params: {}, message: 'must be object' }], 'body')).toEqual([
      { field: 'body', rule: 'must be object' },
    ]);
  });

  test("the project's validation messages split into field and rule", () => {
    expect(problemFromMessage('request.workers: 0 must be an integer from 1 to 1024', 'spec')).toEqual({
      field: 'request.workers',
      rule: '0 must be an integer from 1 to 1024',
    });
    expect(problemFromMessage('spec: must be an object', 'x')).toEqual({ field: 'spec', rule: 'must be an object' });
    expect(problemFromMessage('something odd', 'spec')).toEqual({ field: 'spec', rule: 'something odd' });
  });
});

describe('authorization rules', () => {
  test('subtrees and roles', () => {
    expect(covers({ tenant: 'acme' }, 'acme/ml')).toBe(true);
    expect(covers({ tenant: 'acme' }, 'acmex')).toBe(false);
    expect(covers({ tenant: 'acme/ml' }, 'acme')).toBe(false);
    expect(covers({ tenant: '*' }, 'anything')).toBe(true);
    expect(covers({ tenant: 'acme' }, '*')).toBe(false);
    expect(roleAtLeast({ role: 'operator' }, 'submitter')).toBe(true);
    expect(roleAtLeast({ role: 'operator' }, 'admin')).toBe(false);
  });

  test('claims map to a principal, the highest known role counting', () => {
    const cfg = { tenantClaim: 't', roleClaim: 'r' };
    expect(principalFromClaims({ sub: 'u', t: 'acme', r: ['viewer', 'operator', 'submitter'] }, cfg)).toEqual({
      subject: 'oidc:u',
      kind: 'oidc',
      tenant: 'acme',
      role: 'operator',
    });
    expect(principalFromClaims({ sub: 'u', t: 'acme', r: 'viewer' }, cfg)).toMatch(/claim r/);
    expect(principalFromClaims({ sub: 'u', r: 'admin' }, cfg)).toMatch(/claim t/);
  });
});

describe('why a job waits', () => {
  const status = (phase: JobStatus['phase'], waitingReason?: string): JobStatus => ({
    jobId: 'j',
    phase,
    epoch: 1,
    attempt: 0,
    tier: 'standard',
    priority: 0,
    cancelRequested: false,
    checkpointMs: 0,
    region: 'r',
    pinned: false,
    ...(waitingReason ? { waitingReason } : {}),
  });
  test.each([
    ['over quota: acme uses 8 of nominal 8 A100 and has no cohort to borrow from', 'quota'],
    ['held for higher-ranked job j2', 'held'],
    ['queued: waiting for the next scheduling cycle', 'queue'],
    ['requeued: node n1 is draining', 'requeue'],
    ['no room: 1×1 A100 does not fit the free devices', 'capacity'],
  ])('%s → blocked by %s, with something that would unblock it', (reason, blockedBy) => {
    const why = explainWait(status('waiting', reason));
    expect(why).toMatchObject({ waiting: true, waitingReason: reason, blockedBy });
    expect(why.unblock.length).toBeGreaterThan(0);
  });
  test('a running job waits for nothing; an ended one has nothing to unblock', () => {
    expect(explainWait(status('running'))).toEqual({ jobId: 'j', state: 'running', waiting: false, unblock: [] });
    expect(explainWait(status('completed')).unblock).toEqual(['nothing: the job has ended']);
  });
});
