// The autoscaler on the real PostgreSQL and Temporal dev server, with the simulated cloud: gangs get
// offerings that hold them whole, quota waits get nothing, budget and quotas hold, short and failed
// requests are made up for, idle nodes go back (never ones holding premium work), spot reclaims
// requeue with a checkpoint, a worker killed mid-request neither loses nor doubles it, and bad
// configuration and limits are refused with the reason.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { SchedulerClient } from '../../api/client';
import {
  autoscalerStatusQuery,
  autoscalerWorkflowId,
  pauseAutoscalerSignal,
  resumeAutoscalerSignal,
  setAutoscalerLimitsUpdate,
  type AutoscalerLimits,
  type AutoscalerStatus,
  type Offering,
  type SimulatedProviderConfig,
} from '../../api/autoscaler';
import type { JobSpec, JobStatus } from '../../api/types';
import { checkInvariants } from '../../db/invariants';
import { createRegionWorker, type RegionWorker } from '../../worker/worker';
import { autoscaleFromEnv } from '../../worker/config';
import { addScalableDevices } from '../../activities/autoscale';
import { Providers, SimulatedCloud } from '../../activities/providers';
import { summarizeInventory } from '../../activities/inventory';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants, setQuota } from '../helpers/fleet';
import { NAMESPACE, eventually, startTemporal, type TemporalHarness } from '../helpers/temporal';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';

let h: TemporalHarness;
const open: Array<{ t: TestDatabase; worker: RegionWorker; done: Promise<void> }> = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  h = await startTemporal('jobs-autoscale');
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  for (const o of open) if (o.worker.getState() === 'RUNNING') o.worker.shutdown();
  await Promise.allSettled(open.map((o) => o.done));
  await h?.teardown();
  for (const o of open) await o.t.drop().catch(() => undefined);
});

const offering = (o: Partial<Offering> & Pick<Offering, 'name'>, region: string): Offering => ({
  provider: 'cloud',
  acceleratorType: 'A100',
  devicesPerNode: 8,
  nodesPerRack: 4,
  region,
  pricePerDeviceHour: 2,
  spot: false,
  provisioningMs: 800,
  quota: 10,
  ...o,
});

const cloudConfig = (offerings: Offering[], more: Partial<SimulatedProviderConfig> = {}): SimulatedProviderConfig => ({
  name: 'cloud',
  kind: 'simulated',
  seed: 7,
  offerings,
  failureRate: 0,
  partialRate: 0,
  spotReclaimRate: 0,
  spotLifetimeMs: 3_600_000,
  spotNoticeMs: 3000,
  apiLatencyMs: 0,
  ...more,
});

const FAST: Partial<AutoscalerLimits> = { periodMs: 400, cooldownMs: 0, idleLimitMs: 600_000, budgetPerHour: 1000 };

let seq = 0;

/** A region of its own (database, task queue, worker with the autoscaler on) over one owned node of 8 A100. */
async function region(opts: {
  offerings: (region: string) => Offering[];
  cloud?: Partial<SimulatedProviderConfig>;
  limits?: Partial<AutoscalerLimits>;
  owned?: number;
}) {
  const name = `as${++seq}`;
  const t = await createTestDatabase(`autoscale${seq}`);
  await seedFleet(t.db, { nodes: [['A100', 8, opts.owned ?? 1]] });
  await seedTenants(t.db, ['acme/ml']);
  const taskQueue = `jobs-${name}`;
  const config = cloudConfig(opts.offerings(name), opts.cloud);
  const client = new SchedulerClient({ connection: h.env.connection, namespace: NAMESPACE, taskQueue, region: name });
  const worker = await createRegionWorker({
    connection: h.env.nativeConnection,
    client: client.temporal,
    namespace: NAMESPACE,
    taskQueue,
    db: t.db,
    region: name,
    workflowBundlePath: WORKFLOW_BUNDLE,
    autoscale: { providers: [config], enabled: true, limits: { ...FAST, ...opts.limits } },
  });
  const entry = { t, worker, done: worker.run() };
  open.push(entry);
  const handle = client.temporal.workflow.getHandle(autoscalerWorkflowId(name));
  const status = (): Promise<AutoscalerStatus> => handle.query(autoscalerStatusQuery);
  const job = (jobId: string, o: Omit<Partial<JobSpec>, 'request'> & { request?: Partial<JobSpec['request']> } = {}): JobSpec => ({
    jobId: `${name}-${jobId}`,
    tenant: 'acme/ml',
    tier: 'standard',
    priority: 0,
    durationMs: 60_000,
    ...o,
    request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 8, topology: 'any', ...o.request },
  });
  const until = (s: JobSpec, ok: (st: JobStatus) => boolean, what: string, ms = 60_000) =>
    eventually(
      async () => {
        const st = await client.status(s.tenant, s.jobId);
        return ok(st) ? st : undefined;
      },
      `${s.jobId} ${what}`,
      ms,
    );
  const requests = () => t.db.selectFrom('provision_requests').selectAll().orderBy('requested_at').execute();
  const cloudNodes = () => t.db.selectFrom('nodes').selectAll().where('provider', '=', 'cloud').orderBy('name').execute();
  return { name, t, db: t.db, client, handle, status, job, until, requests, cloudNodes, cloud: new SimulatedCloud(t.db, config), config };
}

const nodeOf = (st: JobStatus): string[] => st.placement?.workers.map((w) => w.nodeName) ?? [];

test('a waiting gang gets an offering whose node holds it whole, runs there, and the status says why', async () => {
  const r = await region({
    offerings: (n) => [
      offering({ name: 'x4', devicesPerNode: 4, pricePerDeviceHour: 1 }, n),
      offering({ name: 'x8', pricePerDeviceHour: 3 }, n),
    ],
  });
  const blocker = r.job('blocker');
  await r.client.submit(blocker);
  await r.until(blocker, (s) => s.phase === 'running', 'running on the owned node');
  const gang = r.job('gang', { request: { workers: 2, devicesPerWorker: 4, topology: 'node' } });
  await r.client.submit(gang);
  const placed = await r.until(gang, (s) => s.phase === 'running', 'running on a cloud node');
  const nodes = nodeOf(placed);
  expect(new Set(nodes).size).toBe(1);
  expect(nodes[0]).toMatch(/^cloud-/);
  const reqs = await r.requests();
  expect(reqs.map((q) => [q.offering, q.count, q.state])).toEqual([['x8', 1, 'fulfilled']]);
  const st = await r.status();
  expect(st.lastAction?.provisioned).toEqual([
    expect.objectContaining({ offering: 'x8', count: 1, costPerHour: 24, forJobs: [gang.jobId] }),
  ]);
  expect(st.lastAction?.demand).toEqual([{ shape: '2×4 of A100 in one node', jobs: 1, devices: 8 }]);
  expect(st.lastAction?.reason).toContain(`requested 1 × cloud/x8 (24/h`);
  const [node] = await r.cloudNodes();
  expect(node).toMatchObject({ offering: 'x8', price_per_device_hour: 3, spot: false, device_count: 8 });
  for (const j of [blocker, gang]) await r.client.cancel(j.tenant, j.jobId, 'done');
  expect(await checkInvariants(r.db)).toEqual([]);
});

test('jobs waiting on quota get no new nodes', async () => {
  const r = await region({ offerings: (n) => [offering({ name: 'x8' }, n)] });
  await setQuota(r.db, 'acme/ml', 'A100', 0, { borrowing: 0 });
  const capped = r.job('capped');
  await r.client.submit(capped);
  await r.until(capped, (s) => (s.waitingReason ?? '').includes('over quota'), 'waiting on quota');
  const before = (await r.status()).decisions;
  await eventually(async () => ((await r.status()).decisions >= before + 3 ? true : undefined), 'three more decisions');
  expect(await r.requests()).toEqual([]);
  expect((await r.status()).last?.reason).toContain('no job waits for capacity');
  await r.client.cancel(capped.tenant, capped.jobId, 'done');
});

test('the budget and the offering quota bound what is requested; limits change without a restart and bad ones are refused', async () => {
  const r = await region({
    offerings: (n) => [offering({ name: 'x8', pricePerDeviceHour: 1, quota: 3 }, n)],
    limits: { budgetPerHour: 20 },
  });
  const jobs = [0, 1, 2, 3, 4].map((i) => r.job(`b${i}`));
  for (const j of jobs) await r.client.submit(j);
  // 8/h a node: a budget of 20/h buys two.
  await eventually(async () => ((await r.cloudNodes()).length === 2 ? true : undefined), 'two cloud nodes');
  await eventually(
    async () => ((await r.status()).last?.unmet.some((u) => u.includes('of the 20/h budget left')) ? true : undefined),
    'the budget named',
  );
  expect((await r.requests()).reduce((s, q) => s + q.count, 0)).toBe(2);

  // A bad change is refused with the reason and changes nothing.
  const refused = await r.handle
    .executeUpdate(setAutoscalerLimitsUpdate, { args: [{ budgetPerHour: -1, providers: { nope: { maxNodes: 1 } } }] })
    .catch((e: unknown) => e);
  expect(refused).toBeInstanceOf(WorkflowUpdateFailedError);
  expect(String((refused as WorkflowUpdateFailedError).cause?.message)).toBe(
    'limits refused: limits.budgetPerHour: -1 must be a number from 0 to 1e9; limits.providers.nope: no such provider (configured: owned, cloud)',
  );
  expect((await r.status()).limits.budgetPerHour).toBe(20);

  // More budget: the offering's quota (3 nodes) is the bound now.
  const set = await r.handle.executeUpdate(setAutoscalerLimitsUpdate, { args: [{ budgetPerHour: 500 }] });
  expect(set.budgetPerHour).toBe(500);
  await eventually(async () => ((await r.cloudNodes()).length === 3 ? true : undefined), 'three cloud nodes');
  await eventually(
    async () => ((await r.status()).last?.unmet.some((u) => u.includes('quota of 3 nodes leaves 0')) ? true : undefined),
    'the quota named',
  );
  expect((await r.requests()).reduce((s, q) => s + q.count, 0)).toBe(3);

  // What the region could add by scaling, for its peers: nothing left under the quota.
  const summary = await summarizeInventory(r.db, r.name);
  await addScalableDevices(r.db, r.name, new Providers(r.db, [r.config]), summary);
  expect(summary.types.A100.scalableDevices).toBe(0);
  await r.handle.executeUpdate(setAutoscalerLimitsUpdate, { args: [{ budgetPerHour: 0 }] });
  for (const j of jobs) await r.client.cancel(j.tenant, j.jobId, 'done');
});

test('failed requests leave no nodes and are tried again; short ones are made up for by the next request', async () => {
  const failing = await region({ offerings: (n) => [offering({ name: 'x8' }, n)], cloud: { failureRate: 1 } });
  const own = failing.job('own');
  await failing.client.submit(own);
  await failing.until(own, (s) => s.phase === 'running', 'running on the owned node');
  const j = failing.job('f');
  await failing.client.submit(j);
  await eventually(
    async () => ((await failing.requests()).filter((q) => q.state === 'failed').length >= 2 ? true : undefined),
    'two failed requests',
  );
  expect(await failing.cloudNodes()).toEqual([]);
  expect((await failing.requests())[0].error).toContain('insufficient capacity');
  await eventually(
    async () => ((await failing.status()).last?.reason.includes('failed: cloud could not provision') ? true : undefined),
    'the failure in the status',
  );
  expect((await failing.client.status(j.tenant, j.jobId)).phase).toBe('waiting');
  await failing.handle.signal(pauseAutoscalerSignal, 'test over');
  for (const x of [own, j]) await failing.client.cancel(x.tenant, x.jobId, 'done');

  const short = await region({ offerings: (n) => [offering({ name: 'x8' }, n)], cloud: { partialRate: 1 } });
  const jobs = [0, 1, 2, 3].map((i) => short.job(`p${i}`, { durationMs: 600_000 }));
  for (const x of jobs) await short.client.submit(x);
  for (const x of jobs) await short.until(x, (s) => s.phase === 'running', 'running');
  const reqs = await short.requests();
  expect(reqs.some((q) => q.state === 'partial' && q.granted! < q.count)).toBe(true);
  // Every node delivered was asked for once: nodes = sum of what the requests granted.
  expect((await short.cloudNodes()).length).toBe(reqs.reduce((s, q) => s + (q.granted ?? 0), 0));
  for (const x of jobs) await short.client.cancel(x.tenant, x.jobId, 'done');
  expect(await checkInvariants(short.db)).toEqual([]);
});

test('idle nodes go back after the idle limit, a node running premium work never does', async () => {
  const r = await region({ offerings: (n) => [offering({ name: 'x8' }, n)], limits: { idleLimitMs: 1500 } });
  const blocker = r.job('own', { tier: 'premium', durationMs: 600_000 });
  await r.client.submit(blocker);
  await r.until(blocker, (s) => s.phase === 'running', 'running on the owned node');
  const premium = r.job('prem', { tier: 'premium', durationMs: 600_000 });
  const brief = r.job('brief', { durationMs: 1500 });
  await r.client.submit(premium);
  await r.client.submit(brief);
  const onCloud = nodeOf(await r.until(premium, (s) => s.phase === 'running', 'premium running on a cloud node'))[0];
  expect(onCloud).toMatch(/^cloud-/);
  expect((await r.client.result(brief.tenant, brief.jobId)).outcome).toBe('completed');
  // The node that ran the brief job goes back once idle past the limit, and so does any other the
  // autoscaler got for the demand it saw (a loaded machine may see it longer); the premium one stays.
  await eventually(async () => ((await r.status()).releasedNodes >= 1 ? true : undefined), 'an idle node released');
  await eventually(
    async () => {
      const left = (await r.cloudNodes()).map((n) => n.name);
      return left.length === 1 && left[0] === onCloud ? true : undefined;
    },
    'every idle cloud node released, the premium one kept',
    30_000,
  );
  const released = await r.db.selectFrom('provider_nodes').select(['name', 'state']).where('state', '=', 'released').execute();
  expect(released.map((n) => n.name)).not.toContain(onCloud);
  const decisions = (await r.status()).decisions;
  await eventually(async () => ((await r.status()).decisions >= decisions + 5 ? true : undefined), 'five more decisions');
  expect((await r.cloudNodes()).map((n) => n.name)).toEqual([onCloud]);
  expect((await r.client.status(premium.tenant, premium.jobId)).phase).toBe('running');
  // Once the premium job ends, its node is idle and goes back too.
  await r.client.cancel(premium.tenant, premium.jobId, 'done');
  await eventually(
    async () => ((await r.cloudNodes()).length === 0 ? true : undefined),
    'the premium node released after it emptied',
    30_000,
  );
  await r.client.cancel(blocker.tenant, blocker.jobId, 'done');
  expect(await checkInvariants(r.db)).toEqual([]);
});

test('a spot reclaim drains the node first: the job checkpoints, requeues and finishes elsewhere; premium work stays off spot', async () => {
  const r = await region({
    offerings: (n) => [
      offering({ name: 'spot8', spot: true, pricePerDeviceHour: 0.5 }, n),
      offering({ name: 'x8', pricePerDeviceHour: 3 }, n),
    ],
  });
  const owner = r.job('own', { tier: 'premium', durationMs: 600_000 });
  await r.client.submit(owner);
  await r.until(owner, (s) => s.phase === 'running', 'running on the owned node');
  const premium = r.job('prem', { tier: 'premium', durationMs: 600_000 });
  const basic = r.job('basic', { tier: 'basic', durationMs: 8000, checkpointable: true });
  await r.client.submit(premium);
  await r.client.submit(basic);
  const onSpot = nodeOf(await r.until(basic, (s) => s.phase === 'running', 'basic running'))[0];
  const premiumNode = nodeOf(await r.until(premium, (s) => s.phase === 'running', 'premium running'))[0];
  const nodes = new Map((await r.cloudNodes()).map((n) => [n.name, n]));
  expect(nodes.get(onSpot)?.spot).toBe(true);
  expect(nodes.get(premiumNode)?.spot).toBe(false);

  await new Promise((res) => setTimeout(res, 2500)); // some progress to keep
  await r.cloud.reclaim(onSpot, 4000);
  const requeued = await r.until(basic, (s) => (s.lastRequeue ?? '').includes('draining'), 'requeued by the drain');
  expect(requeued.checkpointMs).toBeGreaterThan(0);
  expect((await r.client.result(basic.tenant, basic.jobId)).outcome).toBe('completed');
  await eventually(
    async () => ((await r.cloudNodes()).some((n) => n.name === onSpot) ? undefined : true),
    'the reclaimed node gone from the inventory',
  );
  const gone = await r.db.selectFrom('provider_nodes').select('state').where('name', '=', onSpot).executeTakeFirstOrThrow();
  expect(gone.state).toBe('reclaimed');
  for (const j of [owner, premium]) await r.client.cancel(j.tenant, j.jobId, 'done');
  expect(await checkInvariants(r.db)).toEqual([]);
});

test('a worker killed while a provisioning request is in flight: the request is made once, and the job runs', async () => {
  const name = `as${++seq}`;
  const t = await createTestDatabase(`autoscale${seq}`);
  await seedFleet(t.db, { nodes: [['A100', 8, 1]] });
  await seedTenants(t.db, ['acme/ml']);
  const taskQueue = `jobs-${name}`;
  const config = cloudConfig([offering({ name: 'x8' }, name)]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'autoscale-fp-'));
  const start = (failpoints: string) => {
    const root = path.join(__dirname, '..', '..');
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'worker', 'main.ts')], {
      cwd: root,
      env: {
        ...process.env,
        TEMPORAL_ADDRESS: h.address,
        TEMPORAL_NAMESPACE: NAMESPACE,
        TASK_QUEUE: taskQueue,
        DATABASE_URL: t.url,
        REGION: name,
        WORKFLOW_BUNDLE,
        PROVIDERS: JSON.stringify([config]),
        AUTOSCALE: 'on',
        AUTOSCALE_LIMITS: JSON.stringify({ periodMs: 500, cooldownMs: 0, budgetPerHour: 1000 }),
        SCHED_FAILPOINTS: failpoints,
        SCHED_FAILPOINT_DIR: dir,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout?.on('data', (d) => (out += d));
    child.stderr?.on('data', (d) => (out += d));
    children.push(child);
    return { child, output: () => out };
  };
  const client = new SchedulerClient({ connection: h.env.connection, namespace: NAMESPACE, taskQueue, region: name });
  try {
    const first = start('autoscale.provisioned');
    const blocker: JobSpec = {
      jobId: `${name}-own`,
      tenant: 'acme/ml',
      tier: 'standard',
      priority: 0,
      durationMs: 600_000,
      request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 8, topology: 'any' },
    };
    const waiting: JobSpec = { ...blocker, jobId: `${name}-wait`, durationMs: 2000 };
    await client.submit(blocker);
    await eventually(
      async () => ((await client.status(blocker.tenant, blocker.jobId)).phase === 'running' ? true : undefined),
      'blocker running',
      60_000,
    );
    await client.submit(waiting);
    // The worker records the request at the cloud, then dies before the activity returns.
    const exited = await new Promise<number | null>((res) => first.child.once('exit', (_code, sig) => res(sig === 'SIGKILL' ? 9 : _code)));
    expect({ exited, output: exited === 9 ? '' : first.output().slice(-3000) }).toEqual({ exited: 9, output: '' });
    expect(fs.existsSync(path.join(dir, 'autoscale.provisioned.reached'))).toBe(true);
    const recorded = await t.db.selectFrom('provision_requests').selectAll().execute();
    expect(recorded).toHaveLength(1);

    start('');
    expect((await client.result(waiting.tenant, waiting.jobId)).outcome).toBe('completed');
    // One request, retried on the new worker under the same id: nothing lost, nothing doubled.
    const after = await t.db.selectFrom('provision_requests').selectAll().execute();
    expect(after.map((q) => [q.request_id, q.count])).toEqual([[recorded[0].request_id, 1]]);
    const history = await client.temporal.workflow.getHandle(autoscalerWorkflowId(name)).fetchHistory();
    const provisions = (history.events ?? []).filter(
      (e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'autoscaleProvision',
    );
    expect(provisions).toHaveLength(1);
    const retried = (history.events ?? []).some((e) => (e.activityTaskStartedEventAttributes?.attempt ?? 0) >= 2);
    expect(retried).toBe(true);
    await client.cancel(blocker.tenant, blocker.jobId, 'done');
    await client.temporal.workflow.getHandle(autoscalerWorkflowId(name)).signal(pauseAutoscalerSignal, 'test over');
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await t.drop().catch(() => undefined);
  }
});

test('bad provider configuration is refused before anything starts, every problem named', () => {
  expect(() =>
    autoscaleFromEnv({
      PROVIDERS:
        '[{"name":"cloud","kind":"simulated","seed":1,"offerings":[{"name":"x","acceleratorType":"A100","devicesPerNode":99,"region":"r","pricePerDeviceHour":1,"provisioningMs":10,"quota":-2}]}]',
    }),
  ).toThrow(
    'provider configuration refused: providers[0].offerings[0].devicesPerNode: 99 must be a whole number from 1 to 64; providers[0].offerings[0].quota: -2 must be a whole number of nodes from 0 to 100000',
  );
  expect(() => autoscaleFromEnv({ PROVIDERS: 'not json' })).toThrow(/^PROVIDERS is not JSON/);
  expect(() => autoscaleFromEnv({ AUTOSCALE: 'yes' })).toThrow('AUTOSCALE "yes" must be on or off');
  expect(() => autoscaleFromEnv({ AUTOSCALE_LIMITS: '{"cooldownMs":-1,"providers":{"cloud":{"maxNodes":2}}}' })).toThrow(
    'AUTOSCALE_LIMITS refused: limits.cooldownMs: -1 must be a whole number of milliseconds from 0 to 7 days; limits.providers.cloud: no such provider (configured: owned)',
  );
  expect(autoscaleFromEnv({})).toEqual({ providers: [], enabled: false });
});

test('a paused autoscaler requests nothing until resumed', async () => {
  const r = await region({ offerings: (n) => [offering({ name: 'x8' }, n)] });
  await r.handle.signal(pauseAutoscalerSignal, 'maintenance window');
  const blocker = r.job('own');
  await r.client.submit(blocker);
  await r.until(blocker, (s) => s.phase === 'running', 'running');
  const j = r.job('w');
  await r.client.submit(j);
  await r.until(j, (s) => (s.waitingReason ?? '').includes('no room'), 'waiting for room');
  const before = (await r.status()).decisions;
  await eventually(async () => ((await r.status()).decisions >= before + 3 ? true : undefined), 'three decisions');
  expect(await r.requests()).toEqual([]);
  expect((await r.status()).last?.reason).toContain('paused (maintenance window)');
  await r.handle.signal(resumeAutoscalerSignal);
  await r.until(j, (s) => s.phase === 'running', 'running once resumed');
  for (const x of [blocker, j]) await r.client.cancel(x.tenant, x.jobId, 'done');
});
