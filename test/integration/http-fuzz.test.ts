// The submit route under random JSON (fast-check): whatever arrives, the answer is a 4xx with a
// reason naming a field and a rule, never a 5xx, and nothing is written (rows counted before and
// after). Mixed in: near-valid specs with one field broken, which reach the deeper validation.
import fc from 'fast-check';
import { sql } from 'kysely';
import type { ApiApp } from '../../api/http/app';
import { createApiApp } from '../../worker/api-server';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedTenants } from '../helpers/fleet';
import { REGION, startTemporal, type TemporalHarness } from '../helpers/temporal';

const BOOTSTRAP = 'bootstrap-admin-key-for-the-fuzz-tests-0123456789abcd';
let t: TestDatabase;
let h: TemporalHarness;
let app: ApiApp;
let key: string;

beforeAll(async () => {
  t = await createTestDatabase('httpfuzz');
  await seedTenants(t.db, ['acme/ml']);
  // A real region, so that anything wrongly accepted would really be written and counted.
  h = await startTemporal('http-fuzz');
  await h.startWorker(t.db);
  app = await createApiApp({ db: t.db, client: h.client, region: REGION, bootstrapKey: BOOTSTRAP });
  const made = await app.inject({
    method: 'POST',
    url: '/v1/admin/api-keys',
    headers: { authorization: `Bearer ${BOOTSTRAP}` },
    payload: { name: 'fuzz', tenant: 'acme', role: 'submitter', reason: 'fuzzing' },
  });
  key = (made.json() as { key: string }).key;
});
afterAll(async () => {
  await app?.close();
  await h?.teardown();
  await t?.drop();
});

const rows = async (): Promise<number[]> => {
  const r = await sql<{ jobs: string; subs: string; audit: string }>`
    SELECT (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM api_submissions) AS subs, (SELECT count(*) FROM audit_log) AS audit`.execute(
    t.db,
  );
  return [Number(r.rows[0].jobs), Number(r.rows[0].subs), Number(r.rows[0].audit)];
};

const valid = {
  jobId: 'fz',
  tenant: 'acme/ml',
  tier: 'standard',
  priority: 1,
  durationMs: 1000,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 1, topology: 'any' },
};

/** A valid spec with one field replaced by random JSON (or removed), or a request field broken. */
const nearValid = fc
  .tuple(
    fc.constantFrom(...Object.keys(valid), 'request.workers', 'request.topology', 'request.milliPerWorker', 'handoff', 'extra'),
    fc.option(fc.jsonValue(), { nil: undefined }),
  )
  .filter(([field, v]) => !(field === 'extra' && v === undefined))
  .map(([field, v]) => {
    const spec: Record<string, unknown> = JSON.parse(JSON.stringify(valid));
    if (field.startsWith('request.')) (spec.request as Record<string, unknown>)[field.slice(8)] = v ?? 'x';
    else if (v === undefined) delete spec[field];
    else spec[field] = v;
    return spec;
  })
  .filter((s) => JSON.stringify(s) !== JSON.stringify(valid));

test('random JSON to the submit route: always 4xx with a reason, never 5xx, never a write', async () => {
  const before = await rows();
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.jsonValue(), nearValid, fc.string()), fc.boolean(), async (body, asText) => {
      const res = await app.inject({
        method: 'POST',
        url: '/v1/jobs',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        payload: asText && typeof body === 'string' ? body : JSON.stringify(body),
      });
      expect(res.statusCode).toBeGreaterThanOrEqual(400);
      expect(res.statusCode).toBeLessThan(500);
      const answer = res.json() as { error: string; message: string; problems: Array<{ field: string; rule: string }> };
      expect(answer.message.length).toBeGreaterThan(0);
      if (res.statusCode === 400) {
        expect(answer.problems.length).toBeGreaterThan(0);
        for (const p of answer.problems) expect(p.field.length * p.rule.length).toBeGreaterThan(0);
      }
    }),
    { numRuns: 400, seed: 1414 },
  );
  expect(await rows()).toEqual(before);
});
