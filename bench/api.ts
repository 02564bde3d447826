// `npm run bench:api`: submissions through the HTTP API against the same rates through the typed
// client (SchedulerClient, the SDK path), in one run, on a real region (PostgreSQL, a Temporal dev
// server and the scheduler's worker in this process, a fresh dev server per measurement). The API
// runs as it is deployed, in a process of its own (`worker/api-main.ts`, its own event loop and
// database pool), so it does not share the worker's event loop or pool with the region. Each
// phase offers jobs open-loop at a fixed rate; for each path it reports the sustained rate (jobs
// placed within the window, per second) and submit→placed p50/p99 (from the client's submit call
// to the job's placed_at). The API path authenticates every request with an API key.
// Target (issue 14): the API path sustains ≥ 90% of the SDK path's rate with p99 ≤ 1.2× the SDK's.
// Settings: API_RATES (jobs/s, comma-separated), API_SECONDS (per phase), API_RUN_MS (simulated
// run), API_DEVICES (fleet size), API_DRAIN_SECONDS (wait for the last placements).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { sql, type Kysely } from 'kysely';
import type { JobSpec } from '../api/types';
import type { Database } from '../db/schema';
import { regionNamespace } from '../api/ids';
import { freePort, type DevServer } from '../scripts/temporal-server';
import type { SchedulerClient } from '../api/client';
import { envNumber, envNumbers } from './env';
import { BENCH_REGION, BENCH_TYPES, seedSyntheticFleet } from './fleet';
import { Cleanup, freshBenchDatabase, runBench, say, seedTenants, sleep } from './harness';
import { fmt, quantiles } from './stats';
import { benchBundle, benchServer, serveBenchRegion } from './temporal';

const RATES = envNumbers('API_RATES', [20, 40, 80], { above: 0, distinct: true });
const SECONDS = envNumber('API_SECONDS', 30, { above: 0 });
const RUN_MS = envNumber('API_RUN_MS', 1000, { integer: true, min: 1 });
const DEVICES = Math.ceil(envNumber('API_DEVICES', 2000, { integer: true, min: 8 }) / 8) * 8;
const DRAIN_SECONDS = envNumber('API_DRAIN_SECONDS', 60, { above: 0 });

const TASK_QUEUE = 'api-bench';
const TENANT = 'bench/load';
const BOOTSTRAP = `bench-bootstrap-${process.pid}-${'x'.repeat(32)}`;
const RATE_TARGET = 0.9;
const P99_TARGET = 1.2;

const wall = (): number => performance.timeOrigin + performance.now();

interface Phase {
  path: 'sdk' | 'api';
  rate: number;
  offered: number;
  submitErrors: number;
  placed: number;
  sustained: number;
  submitP50: number;
  placedP50: number;
  placedP99: number;
  firstError?: string;
}

type Submit = (spec: JobSpec) => Promise<void>;

function spec(prefix: string, i: number): JobSpec {
  return {
    jobId: `${prefix}-${i}`,
    tenant: TENANT,
    tier: 'standard',
    priority: 0,
    request: { acceleratorTypes: [BENCH_TYPES[i % BENCH_TYPES.length]], workers: 1, devicesPerWorker: 1, topology: 'any' },
    durationMs: RUN_MS,
  };
}

/** Offers `rate` jobs/s for SECONDS through `submit`, then waits for their placements and reads them. */
async function runPhase(path: Phase['path'], rate: number, db: Kysely<Database>, submit: Submit, stop: AbortSignal): Promise<Phase> {
  const prefix = `${path}${rate}`;
  const total = Math.round(rate * SECONDS);
  const interval = 1000 / rate;
  const submittedAt = new Map<string, number>();
  const submitMs: number[] = [];
  let submitErrors = 0;
  let firstError: string | undefined;
  const calls: Array<Promise<void>> = [];
  const t0 = wall() + 20;
  for (let i = 0; i < total && !stop.aborted;) {
    const now = wall();
    while (i < total && t0 + i * interval <= now) {
      const s = spec(prefix, i++);
      const start = wall();
      submittedAt.set(s.jobId, start);
      calls.push(
        submit(s).then(
          () => void submitMs.push(wall() - start),
          (err: unknown) => {
            submitErrors++;
            firstError ??= err instanceof Error ? err.message : String(err);
          },
        ),
      );
    }
    if (i < total) await sleep(Math.max(0, t0 + i * interval - wall()));
  }
  const windowEnd = t0 + SECONDS * 1000;
  await Promise.all(calls);
  const placedRows = async () =>
    (
      await sql<{ id: string; placed: number }>`
        SELECT id, extract(epoch FROM coalesce(placed_at, CASE WHEN state IN ('completed', 'running') THEN updated_at END)) * 1000 AS placed
        FROM jobs WHERE id LIKE ${`${prefix}-%`} AND (placed_at IS NOT NULL OR state IN ('completed', 'running'))`.execute(db)
    ).rows;
  const deadline = wall() + DRAIN_SECONDS * 1000;
  let rows = await placedRows();
  while (rows.length < total - submitErrors && wall() < deadline && !stop.aborted) {
    await sleep(500);
    rows = await placedRows();
  }
  const latencies = rows.map((r) => Number(r.placed) - (submittedAt.get(r.id) ?? NaN)).filter(Number.isFinite);
  const p = quantiles(latencies);
  return {
    path,
    rate,
    offered: total,
    submitErrors,
    placed: rows.length,
    sustained: rows.filter((r) => Number(r.placed) <= windowEnd).length / SECONDS,
    submitP50: quantiles(submitMs).p50,
    placedP50: p.p50,
    placedP99: p.p99,
    firstError,
  };
}

/**
 * `npm run api` for the bench region in a child process (SIGTERM at cleanup), ready once its
 * /readyz says the database and Temporal answer; its log is kept for the error message if it dies.
 */
async function startApiProcess(o: { databaseUrl: string; server: DevServer }, cleanup: Cleanup): Promise<string> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, '..', 'worker', 'api-main.ts')], {
    env: {
      ...process.env,
      DATABASE_URL: o.databaseUrl,
      REGION: BENCH_REGION,
      TEMPORAL_ADDRESS: o.server.address,
      TEMPORAL_NAMESPACE: regionNamespace(BENCH_REGION),
      TASK_QUEUE,
      HOST: '127.0.0.1',
      PORT: String(port),
      SCHED_BOOTSTRAP_ADMIN_KEY: BOOTSTRAP,
      // Limits far above the offered rates: this measures the path, not the limiter.
      SCHED_MAX_QUEUED_JOBS: '1000000',
      SCHED_SUBMIT_PER_SECOND: '100000',
      SCHED_SUBMIT_BURST: '100000',
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  const keep = (b: Buffer) => void (log = (log + b.toString()).slice(-4000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  cleanup.add('stop the API process', async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000).then(() => void child.kill('SIGKILL'))]);
  });
  process.once('exit', () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = wall() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the API process exited (${child.exitCode}):\n${log}`);
    const ok = await fetch(`${url}/readyz`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) return url;
    if (wall() > deadline) throw new Error(`the API process was not ready within 60 s:\n${log}`);
    await sleep(200);
  }
}

/** A phase on a fresh dev server with its own worker (so the phases compare on equal terms). */
async function onFreshRegion<T>(
  db: Kysely<Database>,
  bundlePath: string,
  stop: AbortController,
  body: (client: SchedulerClient, server: DevServer, cleanup: Cleanup) => Promise<T>,
): Promise<T> {
  const cleanup = new Cleanup('cleanup after a phase');
  try {
    const server = await benchServer(cleanup);
    const region = await serveBenchRegion({ server, bundlePath, db, taskQueue: TASK_QUEUE, onWorkerError: () => stop.abort() }, cleanup);
    return await body(region.client, server, cleanup);
  } finally {
    await cleanup.run();
  }
}

runBench(async ({ cleanup, stop }) => {
  say(`• database, ${DEVICES} devices`);
  const { db, url: databaseUrl } = await freshBenchDatabase(cleanup, 'sched_bench_api', 20);
  await seedSyntheticFleet(db, DEVICES);
  await seedTenants(db, [TENANT]);
  say('• workflow bundle');
  const bundlePath = await benchBundle('api', cleanup);

  const phases: Phase[] = [];
  for (const rate of RATES) {
    if (stop.signal.aborted) break;
    say(`• ${rate} jobs/s through the SDK client, ${SECONDS} s`);
    phases.push(
      await onFreshRegion(db, bundlePath, stop, (client) =>
        runPhase('sdk', rate, db, async (s) => void (await client.submit(s)), stop.signal),
      ),
    );
    if (stop.signal.aborted) break;
    say(`• ${rate} jobs/s through the HTTP API, ${SECONDS} s`);
    phases.push(
      await onFreshRegion(db, bundlePath, stop, async (_client, server, phaseCleanup) => {
        const apiUrl = await startApiProcess({ databaseUrl, server }, phaseCleanup);
        const made = await fetch(`${apiUrl}/v1/admin/api-keys`, {
          method: 'POST',
          headers: { authorization: `Bearer ${BOOTSTRAP}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: 'bench', tenant: 'bench', role: 'submitter', reason: 'bench:api' }),
        });
        const { key } = (await made.json()) as { key: string };
        const submit: Submit = async (s) => {
          const res = await fetch(`${apiUrl}/v1/jobs`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
            body: JSON.stringify(s),
          });
          if (res.status !== 201 && res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
          await res.arrayBuffer().catch(() => undefined);
        };
        return await runPhase('api', rate, db, submit, stop.signal);
      }),
    );
  }

  console.log('\nsubmissions through the HTTP API vs the SDK client (one region, simulated runs of %d ms)\n', RUN_MS);
  console.log('path  offered/s  offered  errors  placed  sustained/s  submit p50 ms  placed p50 ms  placed p99 ms');
  for (const p of phases)
    console.log(
      `${p.path.padEnd(4)}  ${String(p.rate).padStart(9)}  ${String(p.offered).padStart(7)}  ${String(p.submitErrors).padStart(6)}  ${String(p.placed).padStart(6)}  ${fmt(p.sustained, 1).padStart(11)}  ${fmt(p.submitP50, 1).padStart(13)}  ${fmt(p.placedP50).padStart(13)}  ${fmt(p.placedP99).padStart(13)}`,
    );
  for (const p of phases) if (p.firstError) console.log(`${p.path} ${p.rate}/s first error: ${p.firstError}`);

  const verdicts = RATES.map((rate) => {
    const sdk = phases.find((p) => p.path === 'sdk' && p.rate === rate);
    const api = phases.find((p) => p.path === 'api' && p.rate === rate);
    if (!sdk || !api) return { rate, met: false, text: `${rate}/s not measured` };
    const rateRatio = api.sustained / sdk.sustained;
    const p99Ratio = api.placedP99 / sdk.placedP99;
    const met = rateRatio >= RATE_TARGET && p99Ratio <= P99_TARGET;
    return { rate, met, text: `${rate}/s: rate ${fmt(rateRatio * 100)}% of SDK, p99 ${fmt(p99Ratio, 2)}×` };
  });
  const all = verdicts.every((v) => v.met);
  console.log(
    `\nsummary: API sustains ≥ ${RATE_TARGET * 100}% of the SDK rate with submit→placed p99 ≤ ${P99_TARGET}× the SDK's — ${verdicts.map((v) => v.text).join('; ')} → ${all ? 'MET' : 'MISSED'}`,
  );
});
