// The HTTP app without a scheduler behind it: schema refusals name the field and the rule, nothing
// reaches the backend on bad input, authentication and roles are enforced, and the OpenAPI
// document lists every route.
import { buildApiApp, type ApiApp } from '../../api/http/app';
import { createAuthenticator, newApiKey, type StoredKey } from '../../api/http/auth';
import type { ApiBackend } from '../../api/http/backend';

/** A backend that records every call and answers nothing useful: bad input must never reach it. */
function recordingBackend(keys: StoredKey[]): { backend: ApiBackend; calls: string[] } {
  const calls: string[] = [];
  const backend = new Proxy({ region: 'unit' } as unknown as ApiBackend, {
    get(_target, prop) {
      if (prop === 'region') return 'unit';
      if (prop === 'findApiKey') return async (id: string) => keys.find((k) => k.id === id);
      if (prop === 'then') return undefined;
      return async () => {
        calls.push(String(prop));
        if (prop === 'limitRows') return [];
        if (prop === 'jobTenant') return undefined;
        if (prop === 'listApiKeys' || prop === 'listTenants') return [];
        return undefined;
      };
    },
  });
  return { backend, calls };
}

describe('the HTTP app on its own', () => {
  const submitter = newApiKey();
  const keys: StoredKey[] = [{ id: submitter.id, tenant: 'acme', role: 'submitter', sha256: submitter.sha256, revoked: false }];
  const { backend, calls } = recordingBackend(keys);
  let app: ApiApp;
  beforeAll(async () => {
    app = await buildApiApp({ backend, auth: createAuthenticator({ findKey: backend.findApiKey }) });
  });
  afterAll(() => app.close());
  const auth = { authorization: `Bearer ${submitter.key}` };

  test('a submission with several wrong fields is refused with 400 naming each field and rule, and writes nothing', async () => {
    calls.length = 0;
    const res = await app.inject({
      method: 'POST',
      url: '/v1/jobs',
      headers: auth,
      payload: { jobId: 'Bad Id', tenant: 'acme', tier: 'gold', priority: 5000, request: { workers: 0 }, durationMs: 10, color: 'red' },
    });
    expect(res.statusCode).toBe(400);
    const body = res.json();
    expect(body.error).toBe('bad-request');
    const fields = body.problems.map((p: { field: string }) => p.field);
    expect(fields).toEqual(expect.arrayContaining(['jobId', 'tier', 'priority', 'request.workers', 'request.acceleratorTypes', 'color']));
    expect(body.problems.find((p: { field: string }) => p.field === 'color').rule).toBe('is not a known field');
    expect(calls).toEqual([]);
  });

  test('no credentials is 401, an unknown key is 401, and a submitter may not reach admin routes (403)', async () => {
    expect((await app.inject({ method: 'GET', url: '/v1/jobs' })).statusCode).toBe(401);
    const unknown = newApiKey();
    expect((await app.inject({ method: 'GET', url: '/v1/jobs', headers: { authorization: `Bearer ${unknown.key}` } })).statusCode).toBe(
      401,
    );
    const res = await app.inject({ method: 'GET', url: '/v1/admin/tenants', headers: auth });
    expect(res.statusCode).toBe(403);
    expect(res.json().message).toMatch(/admin role/);
  });

  test('the OpenAPI document is served at /openapi.json with every route, and the docs page at /docs', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/v1/jobs',
        '/v1/jobs/{jobId}',
        '/v1/jobs/{jobId}/why',
        '/v1/reservations',
        '/v1/nodes/{name}/drain',
        '/v1/admin/quotas',
        '/v1/admin/api-keys',
      ]),
    );
    const docs = await app.inject({ method: 'GET', url: '/docs/' });
    expect(docs.statusCode).toBe(200);
  });
});
