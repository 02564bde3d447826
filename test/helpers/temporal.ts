// A real Temporal dev server (the locally built CLI) per test file, through @temporalio/testing.
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import type { Kysely } from 'kysely';
import { requireTemporalBinary, freePort } from '../../scripts/temporal-server';
import { existingClusterEnvironment } from '../../scripts/temporal-cluster';
import { SEARCH_ATTRIBUTES } from '../../api/search-attributes';
import { OperatorActionRefusedError, SchedulerClient } from '../../api/client';
import { createRegionWorker, type RegionWorker, type RegionWorkerOptions } from '../../worker/worker';
import type { Database } from '../../db/schema';
import { WORKFLOW_BUNDLE } from './global-setup';
import type { CycleOptions } from '../../activities/cycle';
import type { JobSpec, JobStatus } from '../../api/types';

/**
 * TEMPORAL_TARGET=cluster runs against an existing cluster (TEMPORAL_ADDRESS and the TLS variables;
 * `npm run temporal:cluster` starts one) instead of a dev server per file; each file then gets a
 * namespace of its own there.
 */
const TARGET = process.env.TEMPORAL_TARGET ?? 'dev';
if (TARGET !== 'dev' && TARGET !== 'cluster') throw new Error(`TEMPORAL_TARGET ${JSON.stringify(TARGET)} must be dev or cluster`);

export const NAMESPACE = TARGET === 'cluster' ? `sched-test-${process.pid}-${Date.now() % 1_000_000}` : 'sched-test';

// Tests keep the SDK quiet unless something goes wrong.
Runtime.install({ logger: new DefaultLogger('WARN') });
export const REGION = 'test';

export interface TemporalHarness {
  env: TestWorkflowEnvironment;
  address: string;
  client: SchedulerClient;
  taskQueue: string;
  startWorker(
    db: Kysely<Database>,
    cycle?: CycleOptions,
    more?: Pick<RegionWorkerOptions, 'reconcile'>,
  ): Promise<{ worker: RegionWorker; done: Promise<void> }>;
  teardown(): Promise<void>;
}

export async function startTemporal(taskQueue: string): Promise<TemporalHarness> {
  if (TARGET === 'cluster') return harness(taskQueue, await existingClusterEnvironment(NAMESPACE));
  const port = await freePort();
  const env = await TestWorkflowEnvironment.createLocal({
    server: {
      executable: { type: 'existing-path', path: requireTemporalBinary() },
      namespace: NAMESPACE,
      ip: '127.0.0.1',
      port,
      searchAttributes: SEARCH_ATTRIBUTES,
    },
  });
  return harness(taskQueue, { env, address: `127.0.0.1:${port}` });
}

function harness(
  taskQueue: string,
  server: { env: TestWorkflowEnvironment; address: string; dropNamespace?(): Promise<void> },
): TemporalHarness {
  const { env, address } = server;
  const client = new SchedulerClient({ connection: env.connection, namespace: NAMESPACE, taskQueue, region: REGION });
  const workers: Array<{ worker: RegionWorker; done: Promise<void> }> = [];
  return {
    env,
    address,
    client,
    taskQueue,
    async startWorker(db, cycle, more) {
      const worker = await createRegionWorker({
        connection: env.nativeConnection,
        client: client.temporal,
        namespace: NAMESPACE,
        taskQueue,
        db,
        region: REGION,
        workflowBundlePath: WORKFLOW_BUNDLE,
        cycle,
        ...more,
      });
      const entry = { worker, done: worker.run() };
      workers.push(entry);
      return entry;
    },
    async teardown() {
      for (const w of workers) if (w.worker.getState() === 'RUNNING') w.worker.shutdown();
      await Promise.allSettled(workers.map((w) => w.done));
      await server.dropNamespace?.();
      await env.teardown();
    },
  };
}

/** Polls `check` until it returns a value, or fails with what was last seen. */
export async function eventually<T>(check: () => Promise<T | undefined>, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Watching jobs through their status query: the current status, and waiting for one to hold. */
export function jobProbes(h: TemporalHarness) {
  const status = (s: JobSpec): Promise<JobStatus> => h.client.status(s.tenant, s.jobId);
  const until = (s: JobSpec, ok: (st: JobStatus) => boolean, what: string, timeoutMs?: number): Promise<JobStatus> =>
    eventually(
      async () => {
        const st = await status(s);
        return ok(st) ? st : undefined;
      },
      `${s.jobId} ${what}`,
      timeoutMs,
    );
  return { status, until };
}

/**
 * Submissions a test file makes (through `client()`, read when used: the harness starts later), and their cleanup after each test: every job still live is
 * cancelled (a job that has ended refuses, which is fine) and its result awaited.
 */
export function trackedSubmissions(client: () => SchedulerClient) {
  const submitted: JobSpec[] = [];
  const submit = async (s: JobSpec): Promise<void> => {
    submitted.push(s);
    await client().submit(s);
  };
  const endAll = async (): Promise<void> => {
    for (const s of submitted.splice(0)) {
      await client()
        .cancel(s.tenant, s.jobId, 'test cleanup')
        .catch((err) => {
          if (!(err instanceof OperatorActionRefusedError)) throw err;
        });
      await client().result(s.tenant, s.jobId);
    }
  };
  return { submit, endAll };
}
