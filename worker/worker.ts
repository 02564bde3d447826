// Builds a region's worker: the job, region-scheduler, reservation and peer-exchange workflows
// plus the allocator, bookkeeping, executor and handoff activities. With peers configured it also
// makes sure the region's exchange workflow runs, which publishes the region's summary to them,
// and, always, that the region's reconciler runs.
import path from 'node:path';
import { DefaultLogger, NativeConnection, Worker, bundleWorkflowCode, type WorkerOptions } from '@temporalio/worker';
import type { Kysely } from 'kysely';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Database } from '../db/schema';
import { createActivities } from '../activities';
import type { PlacementPolicyName } from '../api/types';
import { peerExchangeWorkflowId, reconcilerWorkflowId, schedulerTaskQueue } from '../api/ids';
import type { PeerConfig } from '../api/peers';
import { PeerLinks } from '../activities/peers';
import type { CycleOptions } from '../activities/cycle';
import { startWorkerMetrics, type MetricsServer } from './metrics-server';
import { autoscalerWorkflowId, type AutoscalerLimits, type ProviderConfig } from '../api/autoscaler';
import type { PlacementObjective } from '../scheduling/capacity';

export interface RegionWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  db: Kysely<Database>;
  /** Client in the same namespace, for the activities that signal workflows. */
  client: Client;
  region: string;
  policy?: PlacementPolicyName;
  /** Scheduling-cycle settings (batch sizes, queue aging, preemption grace). */
  cycle?: CycleOptions;
  /** A prebuilt workflow bundle; without it the workflows are bundled at start (slower). */
  workflowBundlePath?: string;
  /** Activities registered beside the scheduler's own (the benches' reference activities). */
  extraActivities?: Record<string, (...args: never[]) => Promise<unknown>>;
  identity?: string;
  /** The region's peers (none: a region on its own). */
  peers?: PeerConfig[];
  /** How often the region publishes its inventory summary to its peers. */
  publishEveryMs?: number;
  /** Publish between periods when free capacity moves a lot (default true; false: on the period only). */
  publishEarly?: boolean;
  /** The reconciler's pace (defaults: a pass every 30 s, rows older than 60 s). */
  reconcile?: { everyMs?: number; graceMs?: number };
  /** Serve /metrics, /healthz and /readyz on this port (0: any free port); none when absent. */
  metrics?: { port: number; host?: string };
  /** Capacity providers, and whether to start the region's autoscaler (off when absent). */
  autoscale?: { providers: ProviderConfig[]; enabled: boolean; limits?: Partial<AutoscalerLimits> };
  /** How placement weighs price (default `cost`). */
  objective?: PlacementObjective;
}

/**
 * A region's worker: one SDK worker on the jobs task queue (job workflows and their activities)
 * and one on the scheduler's own task queue (the region scheduler, reservations, and the
 * scheduling cycle), so a backlog of job tasks never delays a scheduling cycle.
 */
export class RegionWorker {
  constructor(
    readonly jobs: Worker,
    readonly scheduler: Worker,
    private readonly peers?: PeerLinks,
    /** The worker's metrics and health endpoint, when configured; closed when the worker stops. */
    readonly metrics?: MetricsServer,
  ) {}

  /** Runs both until shutdown; if one fails, the other is shut down and the failure rethrown. */
  async run(): Promise<void> {
    const runs = [this.jobs, this.scheduler].map((w) =>
      w.run().catch((err: unknown) => {
        this.shutdown();
        throw err;
      }),
    );
    try {
      await Promise.all(runs);
    } finally {
      await this.peers?.close();
      await this.metrics?.close();
    }
  }

  shutdown(): void {
    for (const w of [this.jobs, this.scheduler]) if (w.getState() === 'RUNNING') w.shutdown();
  }

  getState(): ReturnType<Worker['getState']> {
    return this.jobs.getState();
  }
}

/** How many job runs one worker watches at once (each holds an activity slot while it runs). */
export const MAX_WATCHED_RUNS = 2000;

export async function createRegionWorker(o: RegionWorkerOptions): Promise<RegionWorker> {
  // Bundle once for both SDK workers.
  const workflowBundle = o.workflowBundlePath
    ? { codePath: o.workflowBundlePath }
    : await bundleWorkflowCode({ workflowsPath: path.join(__dirname, '../workflows/index.ts'), logger: new DefaultLogger('WARN') });
  const peers = new PeerLinks(o.region, o.peers ?? []);
  const activities = {
    ...o.extraActivities,
    ...createActivities({
      db: o.db,
      region: o.region,
      policy: o.policy,
      client: o.client,
      taskQueue: o.taskQueue,
      cycle: o.cycle,
      peers,
      providers: o.autoscale?.providers,
      objective: o.objective,
      publishEarly: o.publishEarly,
    }),
  };
  const common = {
    connection: o.connection,
    namespace: o.namespace,
    workflowBundle,
    activities,
    shutdownGraceTime: '10s',
  } satisfies Partial<WorkerOptions>;
  const jobs = await Worker.create({
    ...common,
    taskQueue: o.taskQueue,
    ...(o.identity ? { identity: o.identity } : {}),
    maxConcurrentActivityTaskExecutions: MAX_WATCHED_RUNS,
  });
  const scheduler = await Worker.create({
    ...common,
    taskQueue: schedulerTaskQueue(o.taskQueue),
    ...(o.identity ? { identity: `${o.identity}-scheduler` } : {}),
  });
  if (peers.names.length) await ensurePeerExchange(o.client, o.region, o.taskQueue, o.publishEveryMs);
  await ensureReconciler(o.client, o.region, o.taskQueue, o.reconcile);
  if (o.autoscale?.enabled) await ensureAutoscaler(o.client, o.region, o.taskQueue, o.autoscale.limits);
  const metrics = o.metrics && (await startWorkerMetrics({ region: o.region, db: o.db, connection: o.connection, ...o.metrics }));
  return new RegionWorker(jobs, scheduler, peers, metrics);
}

/** Starts the region's exchange workflow unless it runs already (every worker of the region asks; one runs). */
export async function ensurePeerExchange(client: Client, region: string, taskQueue: string, publishEveryMs?: number): Promise<void> {
  try {
    await client.workflow.start('PeerExchangeWorkflow', {
      workflowId: peerExchangeWorkflowId(region),
      taskQueue: schedulerTaskQueue(taskQueue),
      args: [{ region, ...(publishEveryMs ? { publishEveryMs } : {}) }],
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}

/** Starts the region's reconciler unless it runs already (every worker of the region asks; one runs). */
export async function ensureReconciler(
  client: Client,
  region: string,
  taskQueue: string,
  pace: { everyMs?: number; graceMs?: number } = {},
): Promise<void> {
  try {
    await client.workflow.start('ReconcilerWorkflow', {
      workflowId: reconcilerWorkflowId(region),
      taskQueue: schedulerTaskQueue(taskQueue),
      args: [{ region, ...pace }],
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}

/** Starts the region's autoscaler unless it runs already (every worker with autoscaling on asks; one runs). */
export async function ensureAutoscaler(
  client: Client,
  region: string,
  taskQueue: string,
  limits?: Partial<AutoscalerLimits>,
): Promise<void> {
  try {
    await client.workflow.start('AutoscalerWorkflow', {
      workflowId: autoscalerWorkflowId(region),
      taskQueue: schedulerTaskQueue(taskQueue),
      args: [{ region, ...(limits ? { limits } : {}) }],
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}
