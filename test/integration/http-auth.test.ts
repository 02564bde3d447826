// Identity on the HTTP API: OIDC bearer tokens verified with jose against the issuer's key set (a
// local JWKS file, and a JWKS URL served on loopback), claims mapped to a tenant subtree and a
// role; wrong issuer, audience, expired or unknown-key tokens refused. API keys and the bootstrap
// key against the real database.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose';
import { SchedulerClient } from '../../api/client';
import { oidcConfigFromEnv } from '../../api/http/auth';
import type { ApiApp } from '../../api/http/app';
import { createApiApp } from '../../worker/api-server';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedTenants } from '../helpers/fleet';

const ISSUER = 'https://idp.test/';
const AUDIENCE = 'sched-api';
const BOOTSTRAP = 'bootstrap-admin-key-for-the-auth-tests-0123456789abc';
let t: TestDatabase;
let client: SchedulerClient;
let signing: { privateKey: CryptoKey; jwk: JWK };
let stranger: CryptoKey;
let jwksServer: http.Server;
let jwksUrl: string;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'http-auth-'));
const apps: ApiApp[] = [];

async function token(
  claims: Record<string, unknown>,
  o: { key?: CryptoKey; kid?: string; iss?: string; aud?: string; exp?: string | number } = {},
) {
  return new SignJWT(claims)
    .setProtectedHeader({ alg: 'ES256', kid: o.kid ?? 'k1' })
    .setSubject('alice@example.com')
    .setIssuer(o.iss ?? ISSUER)
    .setAudience(o.aud ?? AUDIENCE)
    .setIssuedAt()
    .setExpirationTime(o.exp ?? '10m')
    .sign(o.key ?? signing.privateKey);
}

async function appWith(env: Record<string, string>): Promise<ApiApp> {
  const oidc = oidcConfigFromEnv(env, (p) => fs.readFileSync(p, 'utf8'));
  const app = await createApiApp({ db: t.db, client, region: 'test', bootstrapKey: BOOTSTRAP, oidc });
  apps.push(app);
  return app;
}

const whoami = async (app: ApiApp, bearer: string) => {
  const res = await app.inject({ method: 'GET', url: '/v1/whoami', headers: { authorization: `Bearer ${bearer}` } });
  return {
    status: res.statusCode,
    body: res.json() as { message?: string; tenant?: string; role?: string; subject?: string; kind?: string },
  };
};

beforeAll(async () => {
  t = await createTestDatabase('httpauth');
  await seedTenants(t.db, ['acme/ml']);
  // Identity needs no Temporal: a connection that is never used.
  client = new SchedulerClient({
    connection: Connection.lazy({ address: '127.0.0.1:9' }),
    namespace: 'unused',
    taskQueue: 'unused',
    region: 'test',
  });
  const pair = await generateKeyPair('ES256');
  signing = { privateKey: pair.privateKey, jwk: { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' } };
  stranger = (await generateKeyPair('ES256')).privateKey;
  fs.writeFileSync(path.join(dir, 'jwks.json'), JSON.stringify({ keys: [signing.jwk] }));
  jwksServer = http.createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [signing.jwk] }));
  });
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  jwksUrl = `http://127.0.0.1:${(jwksServer.address() as { port: number }).port}/.well-known/jwks.json`;
});
afterAll(async () => {
  await Promise.all(apps.map((a) => a.close()));
  await new Promise((r) => jwksServer?.close(r));
  await t?.drop();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('OIDC with a local key set', () => {
  let app: ApiApp;
  beforeAll(async () => {
    app = await appWith({ OIDC_ISSUER: ISSUER, OIDC_AUDIENCE: AUDIENCE, OIDC_JWKS_FILE: path.join(dir, 'jwks.json') });
  });

  test('a valid token is accepted and its claims name the tenant subtree and role', async () => {
    const r = await whoami(app, await token({ sched_tenant: 'acme/ml', sched_role: ['submitter', 'operator'] }));
    expect(r).toEqual({ status: 200, body: { subject: 'oidc:alice@example.com', kind: 'oidc', tenant: 'acme/ml', role: 'operator' } });
  });

  test('the mapped subtree and role are enforced like an API key', async () => {
    const bearer = await token({ sched_tenant: 'acme/ml', sched_role: 'submitter' });
    const res = await app.inject({ method: 'GET', url: '/v1/admin/tenants', headers: { authorization: `Bearer ${bearer}` } });
    expect(res.statusCode).toBe(403);
    const list = await app.inject({ method: 'GET', url: '/v1/jobs?tenant=other', headers: { authorization: `Bearer ${bearer}` } });
    expect(list.statusCode).toBe(403);
  });

  test.each([
    ['a wrong issuer', () => ({ iss: 'https://evil.test/' }), /claim iss/],
    ['a wrong audience', () => ({ aud: 'someone-else' }), /claim aud/],
    ['an expired token', () => ({ exp: Math.floor(Date.now() / 1000) - 60 }), /expired/],
    ['a key the issuer never published', () => ({ key: stranger, kid: 'k2' }), /no key/],
  ])('%s is refused with 401 and the reason', async (_what, opts, reason) => {
    const r = await whoami(app, await token({ sched_tenant: 'acme', sched_role: 'admin' }, opts()));
    expect(r.status).toBe(401);
    expect(r.body.message).toMatch(reason);
  });

  test('a token signed by another key under the published kid does not verify', async () => {
    const r = await whoami(app, await token({ sched_tenant: 'acme', sched_role: 'admin' }, { key: stranger, kid: 'k1' }));
    expect(r.status).toBe(401);
    expect(r.body.message).toMatch(/signature/);
  });

  test('claims that name no role or a malformed tenant grant nothing (403)', async () => {
    expect((await whoami(app, await token({ sched_tenant: 'acme' }))).status).toBe(403);
    const bad = await whoami(app, await token({ sched_tenant: 'ACME!', sched_role: 'admin' }));
    expect(bad.status).toBe(403);
    expect(bad.body.message).toMatch(/claim sched_tenant/);
  });
});

describe('OIDC with a JWKS URL and custom claim names', () => {
  test('a token verified against the issuer URL maps the configured claims', async () => {
    const app = await appWith({
      OIDC_ISSUER: ISSUER,
      OIDC_AUDIENCE: AUDIENCE,
      OIDC_JWKS_URL: jwksUrl,
      OIDC_TENANT_CLAIM: 'team',
      OIDC_ROLE_CLAIM: 'groups',
    });
    const r = await whoami(app, await token({ team: '*', groups: ['staff', 'admin'] }));
    expect(r.body).toMatchObject({ tenant: '*', role: 'admin' });
  });

  test('OIDC settings are checked before anything starts', () => {
    expect(() => oidcConfigFromEnv({ OIDC_ISSUER: ISSUER }, () => '')).toThrow(
      /OIDC_AUDIENCE.*exactly one of OIDC_JWKS_URL and OIDC_JWKS_FILE/,
    );
    expect(() => oidcConfigFromEnv({ OIDC_AUDIENCE: 'x' }, () => '')).toThrow(/without OIDC_ISSUER/);
    expect(() => oidcConfigFromEnv({ OIDC_ISSUER: ISSUER, OIDC_AUDIENCE: 'a', OIDC_JWKS_FILE: '/x' }, () => 'not json')).toThrow(
      /OIDC_JWKS_FILE/,
    );
  });
});

describe('API keys and the bootstrap key', () => {
  test('the bootstrap key is an admin over every tenant; it creates a key that works at once, and garbage is refused', async () => {
    const app = await appWith({});
    expect((await whoami(app, BOOTSTRAP)).body).toMatchObject({ kind: 'bootstrap', tenant: '*', role: 'admin' });
    const made = await app.inject({
      method: 'POST',
      url: '/v1/admin/api-keys',
      headers: { authorization: `Bearer ${BOOTSTRAP}` },
      payload: { name: 'ci', tenant: 'acme', role: 'submitter', reason: 'first key' },
    });
    expect(made.statusCode).toBe(201);
    const key = (made.json() as { key: string }).key;
    expect(key).toMatch(/^sched_[a-z0-9]{12}_[A-Za-z0-9_-]{43}$/);
    expect((await whoami(app, key)).body).toMatchObject({ kind: 'api-key', tenant: 'acme', role: 'submitter' });
    expect((await whoami(app, `${key.slice(0, -1)}${key.endsWith('A') ? 'B' : 'A'}`)).status).toBe(401);
    expect((await whoami(app, 'not-a-token')).status).toBe(401);
    const jwt = await whoami(app, await token({ sched_tenant: 'acme', sched_role: 'admin' }));
    expect(jwt.status).toBe(401);
    expect(jwt.body.message).toMatch(/OIDC is not configured/);
    const audit = await t.db.selectFrom('audit_log').selectAll().execute();
    expect(audit).toEqual([
      expect.objectContaining({
        actor: 'bootstrap',
        actor_kind: 'bootstrap',
        action: 'api-key.create',
        reason: 'first key',
        outcome: 'ok',
      }),
    ]);
  });
});
