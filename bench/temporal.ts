// The Temporal side of the bench harness: a quiet SDK runtime, in-memory dev servers that die with
// the bench, the bench workflow bundle (the scheduler's workflows and the bench's own), and a
// region served in-process by scheduler workers with the bench activities beside the scheduler's.
// Everything started here is registered with the caller's cleanup.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Kysely } from 'kysely';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode, DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { SchedulerClient } from '../api/client';
import type { Database } from '../db/schema';
import { freePort, startDevServer, type DevServer } from '../scripts/temporal-server';
import { createRegionWorker, type RegionWorker } from '../worker/worker';
import { createBenchActivities } from './activities';
import { BENCH_REGION } from './fleet';
import type { Cleanup } from './harness';

/** The namespace every bench dev server is started with. */
const BENCH_NAMESPACE = 'sched-bench';

let runtimeInstalled = false;

/**
 * The SDK logs every job phase at INFO; the benches keep warnings and errors only, on stderr with
 * the native core's (forwarded), so stdout holds the tables alone. No shutdown signals: Ctrl-C is
 * the harness's to handle, so workers keep serving until cleanup. Before the first native connection.
 */
function installQuietRuntime(): void {
  if (runtimeInstalled) return;
  Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [], telemetryOptions: { logging: { forward: {} } } });
  runtimeInstalled = true;
}

/** An in-memory dev server with the bench namespace, stopped by `cleanup` (or, at the latest, when the bench exits). */
export async function benchServer(cleanup: Cleanup): Promise<DevServer> {
  const server = await startDevServer({ port: await freePort(), namespaces: [BENCH_NAMESPACE] });
  cleanup.add('stop the Temporal dev server', () => server.stop());
  // Whatever way the bench exits (a second Ctrl-C, a fatal error), the server goes with it.
  process.once('exit', () => {
    if (server.process.exitCode === null) server.process.kill('SIGKILL');
  });
  return server;
}

/** The bench's workflow bundle, built once to a temporary file that `cleanup` removes. */
export async function benchBundle(tag: string, cleanup: Cleanup): Promise<string> {
  const { code } = await bundleWorkflowCode({
    workflowsPath: path.join(__dirname, 'workflows', 'index.ts'),
    logger: { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error },
  });
  const bundlePath = path.join(os.tmpdir(), `${tag}-bench-${process.pid}.js`);
  fs.writeFileSync(bundlePath, code);
  cleanup.add('remove the workflow bundle', () => fs.rmSync(bundlePath, { force: true }));
  return bundlePath;
}

export interface RegionOptions {
  server: DevServer;
  bundlePath: string;
  db: Kysely<Database>;
  taskQueue: string;
  /** In-process workers (default 1); each has its own connection, as the SDK allows one worker per task queue per connection. */
  workers?: number;
  /** Workers are named `${identity}-0`, `${identity}-1`, …; the SDK's default name without it. */
  identity?: string;
  cycle?: Parameters<typeof createRegionWorker>[0]['cycle'];
  /** Told once when a worker stops by itself or fails (not when cleanup shuts it down). */
  onWorkerError?: (err: unknown) => void;
}

/** The bench region, served by workers in this process. */
export interface BenchRegion {
  /** Submits and watches jobs on a connection of its own, so submissions never queue behind the activities' calls. */
  client: SchedulerClient;
  /** Why a worker stopped by itself or failed; undefined while all of them serve. */
  readonly workerError: unknown;
}

/**
 * Serves the bench region (where seedSyntheticFleet puts its cluster) on `server`: scheduler
 * workers with the bench activities, and separate connections for the workers, the activities'
 * signals and the bench's submissions, so that none queues behind another's calls. Cleanup runs
 * in reverse: workers shut down, then the submit, activity and worker connections close.
 */
export async function serveBenchRegion(o: RegionOptions, cleanup: Cleanup): Promise<BenchRegion> {
  installQuietRuntime();
  const workerConnections: NativeConnection[] = [];
  cleanup.add('close the worker connections', () => Promise.all(workerConnections.map((c) => c.close())));
  const activityConnection = await Connection.connect({ address: o.server.address });
  cleanup.add('close the activity connection', () => activityConnection.close());
  const submitConnection = await Connection.connect({ address: o.server.address });
  cleanup.add('close the submit connection', () => submitConnection.close());
  const client = new SchedulerClient({
    connection: submitConnection,
    namespace: BENCH_NAMESPACE,
    taskQueue: o.taskQueue,
    region: BENCH_REGION,
  });
  const activityClient = new Client({ connection: activityConnection, namespace: BENCH_NAMESPACE });

  const workers: RegionWorker[] = [];
  const runs: Array<Promise<void>> = [];
  let shuttingDown = false;
  let workerError: unknown;
  const failed = (err: unknown): void => {
    if (workerError !== undefined) return;
    workerError = err;
    o.onWorkerError?.(err);
  };
  cleanup.add('shut the workers down', async () => {
    shuttingDown = true;
    for (const w of workers) w.shutdown();
    await Promise.all(runs);
  });
  for (let i = 0; i < (o.workers ?? 1); i++) {
    const connection = await NativeConnection.connect({ address: o.server.address });
    workerConnections.push(connection);
    const worker = await createRegionWorker({
      connection,
      namespace: BENCH_NAMESPACE,
      taskQueue: o.taskQueue,
      db: o.db,
      region: BENCH_REGION,
      workflowBundlePath: o.bundlePath,
      client: activityClient,
      cycle: o.cycle,
      extraActivities: createBenchActivities(),
      ...(o.identity ? { identity: `${o.identity}-${i}` } : {}),
    });
    workers.push(worker);
    runs.push(
      worker.run().then(
        () => {
          if (!shuttingDown) failed(new Error('the worker stopped by itself'));
        },
        (err: unknown) => failed(err),
      ),
    );
  }
  return {
    client,
    get workerError() {
      return workerError;
    },
  };
}

type History = Awaited<ReturnType<ReturnType<Client['workflow']['getHandle']>['fetchHistory']>>;
export type HistoryEvent = NonNullable<History['events']>[number];
type Wide = number | { toNumber(): number } | null | undefined;

/** A 64-bit history field (an event id, seconds) as a number; NaN when absent. */
export const wide = (v: Wide): number => (v === null || v === undefined ? NaN : typeof v === 'number' ? v : v.toNumber());

/** When the server recorded a history event, in wall-clock ms. */
export const eventMs = (e: HistoryEvent): number => wide(e.eventTime?.seconds) * 1000 + (e.eventTime?.nanos ?? 0) / 1e6;
