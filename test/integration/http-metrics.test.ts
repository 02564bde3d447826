// The HTTP API's own /metrics, /healthz and /readyz over real HTTP on 127.0.0.1, on a real region
// (PostgreSQL + Temporal dev server + worker): request counts and durations by route pattern, and
// the region's queue, device and job-state gauges, move as a job submitted through the API runs.
import { startApiServer } from '../../worker/api-server';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { REGION, eventually, startTemporal, type TemporalHarness } from '../helpers/temporal';
import { metricValue, scrapeMetrics, type Sample } from '../helpers/metrics';

const BOOTSTRAP = 'bootstrap-admin-key-for-the-http-metrics-test-0123456789';
let t: TestDatabase;
let h: TemporalHarness;
let api: Awaited<ReturnType<typeof startApiServer>>;

beforeAll(async () => {
  t = await createTestDatabase('httpmetrics');
  await seedFleet(t.db, { nodes: [['A100', 8, 1]] });
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('http-metrics');
  await h.startWorker(t.db);
  api = await startApiServer({ db: t.db, client: h.client, region: REGION, bootstrapKey: BOOTSTRAP });
});
afterAll(async () => {
  await api?.close();
  await h?.teardown();
  await t?.drop();
});

const scrape = () => scrapeMetrics(api.url, /^text\/plain; version=0\.0\.4/);
const value = metricValue;
const has = (samples: Sample[], name: string) => samples.some((s) => s.name === name);

const post = (path: string, body: unknown) =>
  fetch(`${api.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${BOOTSTRAP}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

test('/healthz and /readyz answer without a key; /readyz says the database and Temporal answer', async () => {
  expect(await (await fetch(`${api.url}/healthz`)).json()).toEqual({ ok: true });
  const ready = await fetch(`${api.url}/readyz`);
  expect(ready.status).toBe(200);
  expect(await ready.json()).toEqual({ ok: true, database: true, temporal: true });
});

test('metrics are present and move after a job submitted through the API runs', async () => {
  const before = await scrape();
  for (const name of ['sched_devices', 'sched_devices_allocated', 'sched_queue_depth', 'sched_jobs', 'sched_http_requests_total'])
    expect(has(before, name)).toBe(true);
  const a100 = { region: REGION, accelerator_type: 'A100' };
  expect(value(before, 'sched_devices', { ...a100, node_state: 'ready' })).toBe(8);
  expect(value(before, 'sched_devices_allocated', a100)).toBe(0);
  const submits0 = value(before, 'sched_http_requests_total', { region: REGION, route: 'POST /v1/jobs', status: '201' });

  const res = await post('/v1/jobs', {
    jobId: 'hm-1',
    tenant: 'acme/ml',
    tier: 'standard',
    priority: 0,
    durationMs: 600_000,
    request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 3, topology: 'any' },
  });
  expect(res.status).toBe(201);
  const bad = await post('/v1/jobs', { jobId: 'hm-2' });
  expect(bad.status).toBe(400);
  await fetch(`${api.url}/v1/nope`);

  // Gauges are read from the database at most once a second: scrape until the job shows.
  const after = await eventually(async () => {
    const s = await scrape();
    return value(s, 'sched_jobs', { region: REGION, state: 'running' }) === 1 ? s : undefined;
  }, 'the running job counted');
  expect(value(after, 'sched_devices_allocated', a100)).toBe(3);
  expect(value(after, 'sched_device_utilisation_ratio', a100)).toBe(3 / 8);
  expect(value(after, 'sched_http_requests_total', { region: REGION, route: 'POST /v1/jobs', status: '201' })).toBe(submits0 + 1);
  expect(value(after, 'sched_http_requests_total', { region: REGION, route: 'POST /v1/jobs', status: '400' })).toBe(1);
  expect(value(after, 'sched_http_requests_total', { region: REGION, route: 'GET unmatched', status: '404' })).toBe(1);
  expect(value(after, 'sched_http_request_duration_seconds_count', { region: REGION, route: 'POST /v1/jobs' })).toBeGreaterThanOrEqual(2);
  // Scrapes count too, under their pattern (not the raw URL).
  expect(value(after, 'sched_http_requests_total', { region: REGION, route: 'GET /metrics', status: '200' })).toBeGreaterThanOrEqual(1);
});
