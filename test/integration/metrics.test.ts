// A worker's /metrics, /healthz and /readyz over real HTTP on 127.0.0.1, with a real Temporal dev
// server and PostgreSQL: the metrics move as jobs are placed, wait, are preempted and end, and
// readiness says which dependency is unreachable.
import { Connection } from '@temporalio/client';
import type { JobSpec } from '../../api/types';
import { openDatabase } from '../../db/connection';
import { checkInvariants } from '../../db/invariants';
import { createRegionWorker, type RegionWorker } from '../../worker/worker';
import { startWorkerMetrics, type MetricsServer } from '../../worker/metrics-server';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { NAMESPACE, REGION, eventually, jobProbes, startTemporal, type TemporalHarness } from '../helpers/temporal';
import { metricValue, scrapeMetrics, type Sample } from '../helpers/metrics';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';

let t: TestDatabase;
let h: TemporalHarness;
let worker: RegionWorker;
let running: Promise<void>;
let base: string;

beforeAll(async () => {
  t = await createTestDatabase('metrics');
  // 16 A100 devices on two nodes.
  await seedFleet(t.db, { nodes: [['A100', 8, 2]] });
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('jobs-metrics');
  worker = await createRegionWorker({
    connection: h.env.nativeConnection,
    client: h.client.temporal,
    namespace: NAMESPACE,
    taskQueue: h.taskQueue,
    db: t.db,
    region: REGION,
    workflowBundlePath: WORKFLOW_BUNDLE,
    cycle: { preemptGraceMs: 200 },
    metrics: { port: 0, host: '127.0.0.1' },
  });
  running = worker.run();
  base = worker.metrics!.url;
});
afterAll(async () => {
  if (worker?.getState() === 'RUNNING') worker.shutdown();
  await running;
  await h?.teardown();
  await t?.drop();
});
afterEach(async () => {
  expect(await checkInvariants(t.db)).toEqual([]);
});

const spec = (jobId: string, o: Partial<JobSpec> & { devices?: number; workers?: number } = {}): JobSpec => {
  const { devices = 4, workers = 1, ...rest } = o;
  return {
    jobId,
    tenant: 'acme/ml',
    tier: 'standard',
    priority: 5,
    durationMs: 600_000,
    request: { acceleratorTypes: ['A100'], workers, devicesPerWorker: devices, topology: 'any' },
    ...rest,
  };
};

const scrape = (url = base) => scrapeMetrics(url);
const value = metricValue;

/** Scrapes until `ok` holds (state gauges are cached for a second), returning that scrape. */
async function scrapeUntil(ok: (s: Sample[]) => boolean, what: string): Promise<Sample[]> {
  return eventually(async () => {
    const s = await scrape();
    return ok(s) ? s : undefined;
  }, what);
}

const region = { region: REGION };
const a100 = { region: REGION, accelerator_type: 'A100' };

test('a placed job moves placements, placement latency, utilisation and jobs by state', async () => {
  const { until } = jobProbes(h);
  const before = await scrape();
  expect(value(before, 'sched_devices', { ...a100, node_state: 'ready' })).toBe(16);
  expect(value(before, 'sched_device_utilisation_ratio', a100)).toBe(0);
  expect(value(before, 'sched_jobs', { ...region, state: 'running' })).toBe(0);
  const placed0 = value(before, 'sched_placements_total', { ...a100, tier: 'standard' });
  const latencyCount0 = value(before, 'sched_placement_latency_seconds_count', { ...region, tier: 'standard' });
  const latencySum0 = value(before, 'sched_placement_latency_seconds_sum', { ...region, tier: 'standard' });

  const submitted = Date.now();
  const job = spec('m-run', { devices: 4 });
  await h.client.submit(job);
  await until(job, (st) => st.phase === 'running', 'running');
  const sinceSubmit = (Date.now() - submitted) / 1000;

  const after = await scrapeUntil((s) => value(s, 'sched_jobs', { ...region, state: 'running' }) === 1, 'the running job counted');
  expect(value(after, 'sched_placements_total', { ...a100, tier: 'standard' })).toBe(placed0 + 1);
  expect(value(after, 'sched_placement_latency_seconds_count', { ...region, tier: 'standard' })).toBe(latencyCount0 + 1);
  const latency = value(after, 'sched_placement_latency_seconds_sum', { ...region, tier: 'standard' }) - latencySum0;
  expect(latency).toBeGreaterThanOrEqual(0);
  expect(latency).toBeLessThanOrEqual(sinceSubmit);
  // The job holds 4 of the 16 devices.
  expect(value(after, 'sched_devices_allocated', a100)).toBe(4);
  expect(value(after, 'sched_device_utilisation_ratio', a100)).toBe(4 / 16);
  expect(value(after, 'sched_queue_depth', { ...a100, tier: 'standard' })).toBe(0);

  // A job too big for what is left waits: the queue and its oldest wait show it.
  const big = spec('m-big', { devices: 8, workers: 2 });
  await h.client.submit(big);
  await until(big, (st) => st.phase === 'waiting', 'waiting');
  const queued = await scrapeUntil((s) => value(s, 'sched_queue_depth', { ...a100, tier: 'standard' }) === 1, 'the waiting job queued');
  expect(value(queued, 'sched_jobs', { ...region, state: 'waiting' })).toBe(1);
  expect(value(queued, 'sched_queue_oldest_wait_seconds', { ...region, tier: 'standard' })).toBeGreaterThan(0);
  expect(value(queued, 'sched_queue_oldest_wait_seconds', { ...region, tier: 'premium' })).toBe(0);
  expect(value(queued, 'sched_queue_depth', { ...a100, tier: 'premium' })).toBe(0);

  await h.client.cancel('acme/ml', 'm-big');
  await h.client.cancel('acme/ml', 'm-run');
  for (const id of ['m-big', 'm-run']) expect((await h.client.result('acme/ml', id)).outcome).toBe('cancelled');
  const ended = await scrapeUntil((s) => value(s, 'sched_jobs', { ...region, state: 'cancelled' }) === 2, 'both cancelled');
  expect(value(ended, 'sched_device_utilisation_ratio', a100)).toBe(0);
  expect(value(ended, 'sched_queue_depth', { ...a100, tier: 'standard' })).toBe(0);
  expect(value(ended, 'sched_jobs', { ...region, state: 'running' })).toBe(0);
});

test('a premium job on a full region preempts a basic job: preemptions and the premium placement are counted', async () => {
  const { until } = jobProbes(h);
  const before = await scrape();
  const victims0 = value(before, 'sched_preemptions_total', { ...region, victim_tier: 'basic' });
  const premium0 = value(before, 'sched_placements_total', { ...a100, tier: 'premium' });
  const filler = spec('m-basic', { tier: 'basic', devices: 8, workers: 2 });
  await h.client.submit(filler);
  await until(filler, (st) => st.phase === 'running', 'running');
  const premium = spec('m-premium', { tier: 'premium', devices: 8 });
  await h.client.submit(premium);
  await until(premium, (st) => st.phase === 'running', 'running after the preemption');
  const after = await scrape();
  expect(value(after, 'sched_preemptions_total', { ...region, victim_tier: 'basic' })).toBe(victims0 + 1);
  expect(value(after, 'sched_placements_total', { ...a100, tier: 'premium' })).toBe(premium0 + 1);
  for (const id of ['m-premium', 'm-basic']) await h.client.cancel('acme/ml', id);
  for (const id of ['m-premium', 'm-basic']) expect((await h.client.result('acme/ml', id)).outcome).toBe('cancelled');
});

test('/healthz answers 200 while the process runs', async () => {
  const res = await fetch(`${base}/healthz`);
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual({ alive: true, pid: process.pid });
});

test('/readyz answers 200 when the database and Temporal both answer', async () => {
  const res = await fetch(`${base}/readyz`);
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual({ ready: true, checks: { database: 'ok', temporal: 'ok' } });
});

describe('with a dependency unreachable', () => {
  const opened: MetricsServer[] = [];
  afterAll(async () => {
    for (const s of opened) await s.close();
  });

  test('/readyz answers 503 naming the database, and /metrics still answers, counting the failed read', async () => {
    // Nothing listens on port 1: the pool's connection is refused.
    const nowhere = openDatabase('postgres://postgres@127.0.0.1:1/nowhere', 1);
    try {
      const server = await startWorkerMetrics({ region: 'unreachable', db: nowhere, connection: h.env.nativeConnection, port: 0 });
      opened.push(server);
      const res = await fetch(`${server.url}/readyz`);
      expect(res.status).toBe(503);
      const body = (await res.json()) as { ready: boolean; checks: Record<string, string>; reason: string };
      expect(body.ready).toBe(false);
      expect(body.checks.temporal).toBe('ok');
      expect(body.checks.database).toMatch(/^unreachable: .*ECONNREFUSED/);
      expect(body.reason).toMatch(/^database unreachable/);
      const samples = await scrape(server.url);
      expect(value(samples, 'sched_metrics_collect_errors_total', { region: 'unreachable' })).toBeGreaterThanOrEqual(1);
      expect(samples.filter((s) => s.name === 'sched_jobs' && s.labels.region === 'unreachable')).toEqual([]);
      // The healthy region is still reported beside it.
      expect(value(samples, 'sched_devices', { ...a100, node_state: 'ready' })).toBe(16);
    } finally {
      await nowhere.destroy();
    }
  });

  test('/readyz answers 503 naming Temporal when its frontend does not answer within the timeout', async () => {
    // Nothing listens on port 1; a lazy connection is made without reaching it, as a worker's would be after its frontend died.
    const connection = Connection.lazy({ address: '127.0.0.1:1' });
    try {
      const server = await startWorkerMetrics({ region: 'no-temporal', db: t.db, connection, port: 0, probeTimeoutMs: 1000 });
      opened.push(server);
      const res = await fetch(`${server.url}/readyz`);
      expect(res.status).toBe(503);
      const body = (await res.json()) as { checks: Record<string, string>; reason: string };
      expect(body.checks.database).toBe('ok');
      expect(body.checks.temporal).toMatch(/^unreachable: /);
      expect(body.reason).toMatch(/^temporal unreachable/);
    } finally {
      // Not closed: the probe's call to port 1 is still being retried by the client's gRPC retry
      // (its promise was given up at the timeout), and a retry started on a closed channel throws
      // from a timer, failing whichever test file runs next. Refused on loopback, the retries end by themselves.
      void connection;
    }
  });
});
