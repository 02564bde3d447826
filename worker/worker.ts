// Builds a scheduler worker: the job and region-scheduler workflows plus the allocator,
// bookkeeping and executor activities.
import path from 'node:path';
import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import type { Kysely } from 'kysely';
import type { Client } from '@temporalio/client';
import type { Database } from '../db/schema';
import { createActivities } from '../activities';
import type { PlacementPolicyName } from '../api/types';
import type { CycleOptions } from '../activities/scheduler';

export interface SchedulerWorkerOptions {
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
  identity?: string;
}

export async function createSchedulerWorker(o: SchedulerWorkerOptions): Promise<Worker> {
  const workflows: Pick<WorkerOptions, 'workflowBundle' | 'workflowsPath'> = o.workflowBundlePath
    ? { workflowBundle: { codePath: o.workflowBundlePath } }
    : { workflowsPath: path.join(__dirname, '../workflows/index.ts') };
  return Worker.create({
    connection: o.connection,
    namespace: o.namespace,
    taskQueue: o.taskQueue,
    ...(o.identity ? { identity: o.identity } : {}),
    ...workflows,
    activities: createActivities({ db: o.db, region: o.region, policy: o.policy, client: o.client, taskQueue: o.taskQueue, cycle: o.cycle }),
    shutdownGraceTime: '10s',
  });
}
