// The HTTP API on a real region (PostgreSQL + Temporal dev server + a worker), exercised through
// Fastify's inject: every route's happy path and its refusals (schema, roles, tenant subtrees,
// limits), idempotent submits, audit rows, and bad input that writes nothing.
import { sql } from 'kysely';
import { checkInvariants } from '../../db/invariants';
import type { ApiApp } from '../../api/http/app';
import { createApiApp } from '../../worker/api-server';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { REGION, eventually, startTemporal, type TemporalHarness } from '../helpers/temporal';

const BOOTSTRAP = 'bootstrap-admin-key-for-the-http-api-tests-0123456789';
let t: TestDatabase;
let h: TemporalHarness;
let app: ApiApp;
let nodeNames: string[];
/** Keys by name, created through the API by the bootstrap admin. */
const keys: Record<string, string> = {};

type Json = Record<string, unknown> & { [k: string]: any }; // eslint-disable-line @typescript-eslint/no-explicit-any -- response bodies are read loosely in assertions
async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, key: string | undefined, payload?: unknown) {
  const res = await app.inject({
    method,
    url,
    headers: key ? { authorization: `Bearer ${key}` } : {},
    ...(payload !== undefined ? { payload: payload as object } : {}),
  });
  return { status: res.statusCode, body: (res.body ? res.json() : {}) as Json, headers: res.headers };
}

const spec = (jobId: string, o: Record<string, unknown> = {}) => ({
  jobId,
  tenant: 'acme/ml',
  tier: 'standard',
  priority: 0,
  durationMs: 600_000,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 1, topology: 'any' },
  ...o,
});

const phase = async (jobId: string, key = keys.admin) =>
  (await call('GET', `/v1/jobs/${jobId}`, key)).body.status?.phase as string | undefined;
const untilPhase = (jobId: string, want: string) =>
  eventually(async () => ((await phase(jobId)) === want ? true : undefined), `${jobId} ${want}`);
const count = async (table: 'jobs' | 'api_submissions' | 'audit_log' | 'quotas' | 'tenants' | 'api_keys' | 'nodes' | 'reservations') =>
  Number((await sql<{ n: string }>`SELECT count(*) AS n FROM ${sql.table(table)}`.execute(t.db)).rows[0].n);
const counts = async () =>
  Promise.all((['jobs', 'api_submissions', 'audit_log', 'quotas', 'tenants', 'api_keys', 'nodes', 'reservations'] as const).map(count));

beforeAll(async () => {
  t = await createTestDatabase('httpapi');
  const ids = await seedFleet(t.db, { nodes: [['A100', 4, 2]] });
  nodeNames = (await t.db.selectFrom('nodes').select('name').where('id', 'in', ids).orderBy('id').execute()).map((n) => n.name);
  await seedTenants(t.db, ['acme/ml', 'acme/web', 'other/x']);
  h = await startTemporal('http-api');
  await h.startWorker(t.db);
  app = await createApiApp({ db: t.db, client: h.client, region: REGION, bootstrapKey: BOOTSTRAP });
  for (const [name, tenant, role] of [
    ['admin', '*', 'admin'],
    ['operator', '*', 'operator'],
    ['acmeOperator', 'acme', 'operator'],
    ['acmeAdmin', 'acme', 'admin'],
    ['acme', 'acme', 'submitter'],
    ['ml', 'acme/ml', 'submitter'],
    ['web', 'acme/web', 'submitter'],
    ['other', 'other', 'submitter'],
  ]) {
    const r = await call('POST', '/v1/admin/api-keys', BOOTSTRAP, { name, tenant, role, reason: 'test setup' });
    expect(r.status).toBe(201);
    keys[name] = r.body.key;
  }
});
afterAll(async () => {
  await app?.close();
  await h?.teardown();
  await t?.drop();
});

describe('identity', () => {
  test('a key created by an admin is shown once, stored only hashed, and says who it is', async () => {
    const me = await call('GET', '/v1/whoami', keys.ml);
    expect(me.body).toMatchObject({ kind: 'api-key', tenant: 'acme/ml', role: 'submitter' });
    const stored = await t.db.selectFrom('api_keys').select(['secret_sha256']).execute();
    expect(stored.every((k) => !Object.values(keys).some((key) => k.secret_sha256.includes(key)))).toBe(true);
    const listed = await call('GET', '/v1/admin/api-keys', keys.acmeAdmin);
    expect(listed.body.keys.map((k: Json) => k.tenant).sort()).toEqual(['acme', 'acme', 'acme', 'acme/ml', 'acme/web']);
    expect(JSON.stringify(listed.body)).not.toContain('sched_');
  });

  test('an admin may not grant keys outside its subtree or above its role; a revoked key authenticates nothing', async () => {
    expect(
      (await call('POST', '/v1/admin/api-keys', keys.acmeAdmin, { name: 'x', tenant: 'other', role: 'submitter', reason: 'r' })).status,
    ).toBe(403);
    expect(
      (await call('POST', '/v1/admin/api-keys', keys.acmeAdmin, { name: 'x', tenant: '*', role: 'submitter', reason: 'r' })).status,
    ).toBe(403);
    expect(
      (await call('POST', '/v1/admin/api-keys', keys.acme, { name: 'x', tenant: 'acme', role: 'submitter', reason: 'r' })).status,
    ).toBe(403);
    const made = await call('POST', '/v1/admin/api-keys', keys.acmeAdmin, {
      name: 'short-lived',
      tenant: 'acme/web',
      role: 'submitter',
      reason: 'a test',
    });
    expect(made.status).toBe(201);
    expect((await call('GET', '/v1/whoami', made.body.key)).status).toBe(200);
    const revoked = await call('POST', `/v1/admin/api-keys/${made.body.id}/revoke`, keys.acmeAdmin, { reason: 'done with it' });
    expect(revoked.status).toBe(200);
    expect(revoked.body.revokedAt).not.toBeNull();
    const refused = await call('GET', '/v1/whoami', made.body.key);
    expect(refused.status).toBe(401);
    expect(refused.body.message).toMatch(/revoked/);
    const audit = await t.db.selectFrom('audit_log').selectAll().where('target', '=', made.body.id).orderBy('id').execute();
    expect(audit.map((a) => [a.action, a.actor, a.reason, a.outcome])).toEqual([
      ['api-key.create', keys.acmeAdmin.split('_')[1] && `key:${keys.acmeAdmin.split('_')[1]}`, 'a test', 'ok'],
      ['api-key.revoke', `key:${keys.acmeAdmin.split('_')[1]}`, 'done with it', 'ok'],
    ]);
  });
});

describe('jobs', () => {
  test('a submission is idempotent on its job id: same spec → same answer, another spec or tenant → 409', async () => {
    const first = await call(
      'POST',
      '/v1/jobs',
      keys.ml,
      spec('big', { request: { acceleratorTypes: ['A100'], workers: 2, devicesPerWorker: 4, topology: 'any' } }),
    );
    expect(first.status).toBe(201);
    expect(first.body).toEqual({ jobId: 'big', tenant: 'acme/ml', workflowId: 'job/acme/ml/big', region: REGION, created: true });
    const again = await call(
      'POST',
      '/v1/jobs',
      keys.ml,
      spec('big', { request: { workers: 2, topology: 'any', acceleratorTypes: ['A100'], devicesPerWorker: 4 } }),
    );
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ ...first.body, created: false });
    const other = await call('POST', '/v1/jobs', keys.ml, spec('big', { priority: 7 }));
    expect(other.status).toBe(409);
    expect(other.body.message).toMatch(/another spec/);
    const web = await call('POST', '/v1/jobs', keys.web, spec('big', { tenant: 'acme/web' }));
    expect(web.status).toBe(409);
    expect(await t.db.selectFrom('api_submissions').select('tenant').where('job_id', '=', 'big').execute()).toEqual([
      { tenant: 'acme/ml' },
    ]);
    await untilPhase('big', 'running');
  });

  test('a submitter submits only within its subtree', async () => {
    const before = await counts();
    const r = await call('POST', '/v1/jobs', keys.web, spec('not-mine'));
    expect(r.status).toBe(403);
    expect(r.body.problems).toEqual([{ field: 'tenant', rule: 'must be within acme/web' }]);
    expect(await counts()).toEqual(before);
  });

  test('get, why, locate, priority and cancel of a waiting job, seen only within the subtree', async () => {
    expect((await call('POST', '/v1/jobs', keys.ml, spec('small'))).status).toBe(201);
    await eventually(async () => ((await phase('small')) === 'waiting' ? true : undefined), 'small waiting');
    const got = await call('GET', '/v1/jobs/small', keys.acme);
    expect(got.status).toBe(200);
    expect(got.body).toMatchObject({
      jobId: 'small',
      tenant: 'acme/ml',
      workflowId: 'job/acme/ml/small',
      status: { phase: 'waiting' },
      summary: { state: 'waiting', acceleratorTypes: ['A100'] },
    });
    expect((await call('GET', '/v1/jobs/small', keys.web)).status).toBe(404);
    expect((await call('GET', '/v1/jobs/small', keys.other)).status).toBe(404);
    expect((await call('GET', '/v1/jobs/nobody', keys.ml)).status).toBe(404);

    const why = await eventually(async () => {
      const w = (await call('GET', '/v1/jobs/small/why', keys.ml)).body;
      return w.blockedBy === 'capacity' ? w : undefined;
    }, 'a capacity reason');
    expect(why).toMatchObject({ jobId: 'small', state: 'waiting', waiting: true });
    expect(why.unblock.length).toBeGreaterThan(0);

    const at = await call('GET', '/v1/jobs/small/location', keys.ml);
    expect(at.body).toEqual({ jobId: 'small', region: REGION, chain: [REGION], phase: 'waiting' });

    const prio = await call('POST', '/v1/jobs/small/priority', keys.ml, { priority: 900 });
    expect(prio.status).toBe(200);
    expect(prio.body.priority).toBe(900);
    expect((await call('POST', '/v1/jobs/small/priority', keys.ml, { priority: 1001 })).status).toBe(400);

    const cancelled = await call('POST', '/v1/jobs/small/cancel', keys.ml, { reason: 'not needed' });
    expect(cancelled.status).toBe(200);
    await untilPhase('small', 'cancelled');
    const again = await call('POST', '/v1/jobs/small/cancel', keys.ml, {});
    expect(again.status).toBe(409);
    expect(again.body.message).toMatch(/already cancelled/);
  });

  test('list filters by state, tier, type and region, within the subtree, a page at a time', async () => {
    for (const id of ['l1', 'l2', 'l3'])
      expect((await call('POST', '/v1/jobs', keys.web, spec(id, { tenant: 'acme/web', tier: 'basic' }))).status).toBe(201);
    await eventually(
      async () => ((await call('GET', '/v1/jobs?tier=basic', keys.web)).body.jobs.length === 3 ? true : undefined),
      'three rows',
    );
    const page1 = await call('GET', '/v1/jobs?tier=basic&limit=2', keys.acme);
    expect(page1.body.jobs).toHaveLength(2);
    const page2 = await call('GET', `/v1/jobs?tier=basic&limit=2&cursor=${page1.body.nextCursor}`, keys.acme);
    expect(page2.body.jobs).toHaveLength(1);
    expect(page2.body.nextCursor).toBeUndefined();
    expect([...page1.body.jobs, ...page2.body.jobs].map((j: Json) => j.jobId).sort()).toEqual(['l1', 'l2', 'l3']);
    expect(
      (await call('GET', '/v1/jobs?acceleratorType=A100&region=test&state=running', keys.acme)).body.jobs.map((j: Json) => j.jobId),
    ).toEqual(['big']);
    expect((await call('GET', '/v1/jobs?acceleratorType=H100', keys.acme)).body.jobs).toEqual([]);
    expect((await call('GET', '/v1/jobs', keys.other)).body.jobs).toEqual([]);
    expect((await call('GET', '/v1/jobs?tenant=acme', keys.web)).status).toBe(403);
    const bad = await call('GET', '/v1/jobs?state=sleeping&limit=9999&cursor=zzz', keys.acme);
    expect(bad.status).toBe(400);
    expect(bad.body.problems.map((p: Json) => p.field).sort()).toEqual(['limit', 'state']);
    expect((await call('GET', '/v1/jobs?cursor=zzz', keys.acme)).body.problems).toEqual([
      { field: 'cursor', rule: "must be a previous page's nextCursor, unchanged" },
    ]);
    for (const id of ['l1', 'l2', 'l3']) await call('POST', `/v1/jobs/${id}/cancel`, keys.web, {});
  });

  test('requeue is an operator action: refused to a submitter, needs a reason, and is audited', async () => {
    expect((await call('POST', '/v1/jobs/big/requeue', keys.ml, { reason: 'x' })).status).toBe(403);
    const before = await counts();
    const noReason = await call('POST', '/v1/jobs/big/requeue', keys.operator, {});
    expect(noReason.status).toBe(400);
    expect(noReason.body.problems).toEqual([{ field: 'reason', rule: 'is required' }]);
    expect(await counts()).toEqual(before);
    expect((await call('POST', '/v1/jobs/big/requeue', keys.acmeOperator, { reason: 'rebalance' })).status).toBe(200);
    await untilPhase('big', 'running');
    const row = await t.db.selectFrom('audit_log').selectAll().where('action', '=', 'job.requeue').executeTakeFirstOrThrow();
    expect(row).toMatchObject({
      actor: `key:${keys.acmeOperator.split('_')[1]}`,
      role: 'operator',
      target: 'big',
      tenant: 'acme/ml',
      reason: 'rebalance',
      outcome: 'ok',
    });
  });
});

describe('limits', () => {
  test('a tenant over its submission rate gets 429 with Retry-After, and nothing is written', async () => {
    expect(
      (
        await call('PUT', '/v1/admin/tenants', keys.acmeAdmin, {
          path: 'acme/slow',
          limits: { submitPerSecond: 0.1, submitBurst: 1 },
          reason: 'throttle',
        })
      ).status,
    ).toBe(201);
    expect((await call('POST', '/v1/jobs', keys.acme, spec('slow-1', { tenant: 'acme/slow' }))).status).toBe(201);
    const before = await counts();
    const second = await call('POST', '/v1/jobs', keys.acme, spec('slow-2', { tenant: 'acme/slow' }));
    expect(second.status).toBe(429);
    expect(Number(second.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(second.body.problems[0].field).toBe('tenant');
    expect(await counts()).toEqual(before);
    await call('POST', '/v1/jobs/slow-1/cancel', keys.acme, {});
  });

  test('a tenant at its queued-jobs limit gets 429 until a job leaves the queue', async () => {
    expect(
      (await call('PUT', '/v1/admin/tenants', keys.acmeAdmin, { path: 'acme/q', limits: { maxQueuedJobs: 1 }, reason: 'small queue' }))
        .status,
    ).toBe(201);
    expect((await call('POST', '/v1/jobs', keys.acme, spec('q-1', { tenant: 'acme/q' }))).status).toBe(201);
    await eventually(async () => ((await phase('q-1')) === 'waiting' ? true : undefined), 'q-1 waiting');
    const before = await counts();
    const refused = await call('POST', '/v1/jobs', keys.acme, spec('q-2', { tenant: 'acme/q' }));
    expect(refused.status).toBe(429);
    expect(refused.body.message).toMatch(/1 jobs queued, its limit is 1/);
    expect(await counts()).toEqual(before);
    await call('POST', '/v1/jobs/q-1/cancel', keys.acme, {});
    await untilPhase('q-1', 'cancelled');
    expect((await call('POST', '/v1/jobs', keys.acme, spec('q-2', { tenant: 'acme/q' }))).status).toBe(201);
    await call('POST', '/v1/jobs/q-2/cancel', keys.acme, {});
  });
});

describe('admin', () => {
  test('tenants: created under an existing parent within the admin subtree, policies kept', async () => {
    const made = await call('PUT', '/v1/admin/tenants', keys.acmeAdmin, {
      path: 'acme/new',
      allowedTiers: ['basic'],
      maxDevicesPerJob: 4,
      reason: 'new team',
    });
    expect(made.status).toBe(201);
    expect(made.body).toMatchObject({ path: 'acme/new', parent: 'acme', active: true, allowedTiers: ['basic'], maxDevicesPerJob: 4 });
    expect(
      (await call('PUT', '/v1/admin/tenants', keys.acmeAdmin, { path: 'acme/new', active: false, reason: 'paused' })).body,
    ).toMatchObject({ active: false, allowedTiers: ['basic'] });
    const before = await counts();
    expect((await call('PUT', '/v1/admin/tenants', keys.acmeAdmin, { path: 'other/y', reason: 'r' })).status).toBe(403);
    const orphan = await call('PUT', '/v1/admin/tenants', keys.admin, { path: 'nowhere/y', reason: 'r' });
    expect(orphan.status).toBe(400);
    expect(orphan.body.problems).toEqual([{ field: 'path', rule: 'parent nowhere is not registered: create it first' }]);
    expect((await call('PUT', '/v1/admin/tenants', keys.operator, { path: 'acme/z', reason: 'r' })).status).toBe(403);
    expect(await counts()).toEqual(before);
    expect((await call('GET', '/v1/admin/tenants', keys.acmeAdmin)).body.tenants.map((x: Json) => x.path)).not.toContain('other');
  });

  test('quota rules are validated before they are stored, and start at what the subtree holds', async () => {
    const put = await call('PUT', '/v1/admin/quotas', keys.acmeAdmin, {
      tenant: 'acme',
      acceleratorType: 'A100',
      nominal: 16,
      borrowingLimit: 0,
      reason: 'budget',
    });
    expect(put.status).toBe(200);
    expect(put.body).toMatchObject({
      tenant: 'acme',
      acceleratorType: 'A100',
      nominal: 16,
      borrowingLimit: 0,
      lendingLimit: null,
      usedDevices: 8,
    });
    const before = await counts();
    const unknown = await call('PUT', '/v1/admin/quotas', keys.acmeAdmin, {
      tenant: 'acme/ml',
      acceleratorType: 'TPU9',
      nominal: 1,
      reason: 'r',
    });
    expect(unknown.status).toBe(400);
    expect(unknown.body.problems).toEqual([{ field: 'acceleratorType', rule: 'TPU9 is not a known accelerator type' }]);
    const negative = await call('PUT', '/v1/admin/quotas', keys.acmeAdmin, {
      tenant: 'acme/ml',
      acceleratorType: 'A100',
      nominal: -1,
      reason: 'r',
    });
    expect(negative.status).toBe(400);
    expect(negative.body.problems[0].field).toBe('nominal');
    expect(
      (await call('PUT', '/v1/admin/quotas', keys.acmeAdmin, { tenant: 'other', acceleratorType: 'A100', nominal: 1, reason: 'r' })).status,
    ).toBe(403);
    expect(await counts()).toEqual(before);
    expect((await call('GET', '/v1/admin/quotas', keys.acmeAdmin)).body.quotas).toHaveLength(1);
    expect(
      (await call('DELETE', '/v1/admin/quotas', keys.acmeAdmin, { tenant: 'acme', acceleratorType: 'A100', reason: 'done' })).body,
    ).toEqual({ removed: true });
    expect(
      (await call('DELETE', '/v1/admin/quotas', keys.acmeAdmin, { tenant: 'acme', acceleratorType: 'A100', reason: 'again' })).status,
    ).toBe(404);
    const actions = (await call('GET', '/v1/admin/audit?tenant=acme', keys.acmeAdmin)).body.entries.map(
      (e: Json) => `${e.action}:${e.outcome}`,
    );
    expect(actions).toEqual(expect.arrayContaining(['quota.put:ok', 'quota.remove:ok', 'quota.remove:refused']));
  });
});

describe('nodes and reservations', () => {
  test('an operator over every tenant registers, cordons, uncordons, drains and marks down nodes; others are refused', async () => {
    const type = await call('PUT', '/v1/accelerator-types', keys.operator, {
      name: 'H100',
      family: 'gpu',
      model: 'H100 SXM',
      memoryMib: 81920,
      reason: 'new hardware',
    });
    expect(type.status).toBe(200);
    const node = { name: 'h100-a', cluster: 'lab', acceleratorType: 'H100', deviceCount: 8, pod: 'p9', rack: 'r9', reason: 'racked' };
    expect((await call('POST', '/v1/nodes', keys.operator, node)).status).toBe(201);
    expect((await call('POST', '/v1/nodes', keys.operator, node)).status).toBe(200);
    expect((await call('POST', '/v1/nodes', keys.operator, { ...node, deviceCount: 4 })).status).toBe(409);
    const before = await counts();
    expect((await call('POST', '/v1/nodes/h100-a/cordon', keys.ml, { reason: 'x' })).status).toBe(403);
    expect((await call('POST', '/v1/nodes/h100-a/cordon', keys.acmeOperator, { reason: 'x' })).status).toBe(403);
    expect((await call('POST', '/v1/nodes/h100-a/cordon', keys.operator, {})).status).toBe(400);
    expect((await call('POST', '/v1/nodes/nope/cordon', keys.operator, { reason: 'x' })).status).toBe(404);
    expect(await counts()).toEqual(before);
    expect((await call('POST', '/v1/nodes/h100-a/cordon', keys.operator, { reason: 'firmware' })).body).toMatchObject({
      node: 'h100-a',
      state: 'cordoned',
    });
    expect((await call('POST', '/v1/nodes/h100-a/uncordon', keys.operator, { reason: 'firmware done' })).body).toMatchObject({
      state: 'ready',
    });
    // `big` holds both A100 nodes: draining one sends it back to the queue.
    const drained = await call('POST', `/v1/nodes/${nodeNames[0]}/drain`, keys.operator, { reason: 'maintenance' });
    expect(drained.body).toMatchObject({ node: nodeNames[0], state: 'draining', requeued: ['big'] });
    expect((await call('POST', `/v1/nodes/${nodeNames[1]}/down`, keys.operator, { reason: 'power loss' })).body).toMatchObject({
      state: 'down',
    });
    const listed = (await call('GET', '/v1/nodes?acceleratorType=A100', keys.operator)).body.nodes.map((n: Json) => n.state).sort();
    expect(listed).toEqual(['down', 'draining']);
    const audited = await t.db
      .selectFrom('audit_log')
      .select(['action', 'reason'])
      .where('action', 'like', 'node.%')
      .orderBy('id')
      .execute();
    expect(audited.map((a) => a.action)).toEqual([
      'node.register',
      'node.register',
      'node.register',
      'node.cordon',
      'node.uncordon',
      'node.drain',
      'node.down',
    ]);
    await call('POST', `/v1/nodes/${nodeNames[0]}/uncordon`, keys.operator, { reason: 'back' });
  });

  test('reservations: booked, listed within the subtree, cancelled; overbooking is refused', async () => {
    const now = Date.now();
    const r = {
      id: 'res-1',
      tenant: 'acme/ml',
      acceleratorType: 'H100',
      devices: 4,
      startsAt: new Date(now + 3_600_000).toISOString(),
      endsAt: new Date(now + 7_200_000).toISOString(),
      reason: 'training run',
    };
    expect((await call('POST', '/v1/reservations', keys.ml, r)).status).toBe(403);
    const made = await call('POST', '/v1/reservations', keys.acmeOperator, r);
    expect(made.status).toBe(201);
    expect(made.body).toMatchObject({ id: 'res-1', devices: 4, state: 'pending' });
    const over = await call('POST', '/v1/reservations', keys.acmeOperator, { ...r, id: 'res-2', devices: 8 });
    expect(over.status).toBe(409);
    expect(over.body.message).toMatch(/would reserve 12 of the region's 8 H100/);
    const backwards = await call('POST', '/v1/reservations', keys.acmeOperator, {
      ...r,
      id: 'res-3',
      endsAt: r.startsAt,
      startsAt: r.endsAt,
    });
    expect(backwards.status).toBe(400);
    expect(backwards.body.problems[0].field).toBe('endsAt');
    expect((await call('GET', '/v1/reservations', keys.ml)).body.reservations.map((x: Json) => x.id)).toEqual(['res-1']);
    expect((await call('GET', '/v1/reservations', keys.other)).body.reservations).toEqual([]);
    expect((await call('POST', '/v1/reservations/res-1/cancel', keys.acmeOperator, { reason: 'plan changed' })).status).toBe(200);
    await eventually(
      async () => ((await call('GET', '/v1/reservations?state=cancelled', keys.ml)).body.reservations.length === 1 ? true : undefined),
      'cancelled',
    );
  });

  test('health, readiness, and the invariants hold after all of it', async () => {
    expect((await call('GET', '/healthz', undefined)).status).toBe(200);
    expect((await call('GET', '/readyz', undefined)).body).toEqual({ ok: true, database: true, temporal: true });
    await call('POST', '/v1/jobs/big/cancel', keys.ml, {});
    await untilPhase('big', 'cancelled');
    expect(await checkInvariants(t.db)).toEqual([]);
  });
});
