// What every activity of a region works with: its database, its Temporal client, its allocator
// and executor, and the two ways it talks to workflows (waking the scheduler, telling a job).
import type { Kysely } from 'kysely';
import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Database } from '../db/schema';
import type { JobOutcome } from '../api/types';
import { schedulerTaskQueue, schedulerWorkflowId } from '../api/ids';
import { kickSignal } from '../api/messages';
import type { Allocator, ReleaseResult } from './allocator';
import type { Executor } from './executor';
import { coalescedKick } from './kick';
import type { PeerLinks } from './peers';
import type { QueueConfig } from '../scheduling/queue';

/** The least time between two kicks one worker sends the region scheduler. */
export const KICK_SPACING_MS = 100;

export interface Region {
  name: string;
  db: Kysely<Database>;
  /** Temporal client in the region's namespace. */
  client: Client;
  /** Task queue the region's job workflows run on (the scheduler's is beside it). */
  taskQueue: string;
  allocator: Allocator;
  executor: Executor;
  /** The region's peers and the clients that reach them. */
  peers: PeerLinks;
  /** The queue order its scheduling cycles rank by (default DEFAULT_QUEUE_CONFIG); admission must not overtake it. */
  queue?: QueueConfig;
  /** Wakes the region scheduler (coalesced; starts it if it is not running). */
  kick(): Promise<void>;
}

export function regionOf(o: Omit<Region, 'kick'>): Region {
  const send = async (): Promise<void> => {
    // By name: activities do not load workflow code.
    await o.client.workflow.signalWithStart('RegionSchedulerWorkflow', {
      workflowId: schedulerWorkflowId(o.name),
      taskQueue: schedulerTaskQueue(o.taskQueue),
      args: [{ region: o.name }],
      signal: kickSignal,
      signalArgs: [],
    });
  };
  return { ...o, kick: coalescedKick(send, KICK_SPACING_MS) };
}

/** The current activity's logger (it carries the workflow id and region). */
export const activityLog = () => Context.current().log;

/** Delivers a message to a workflow; false when the workflow has already finished. */
export async function tell(what: () => Promise<unknown>): Promise<boolean> {
  try {
    await what();
    return true;
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return false;
    throw err;
  }
}

/**
 * Ends a job (final state and release in one transaction) and, since freed capacity matters to
 * the scheduler only when someone waits for it (its timer covers the rest), wakes it then.
 */
export async function finishJob(
  region: Region,
  jobId: string,
  epoch: number,
  state: JobOutcome,
  reason: string | null,
): Promise<ReleaseResult> {
  const result = await region.allocator.finish(jobId, epoch, state, reason);
  activityLog().info('job finished', { jobId, epoch, event: 'job.finish', state, devices: result.released });
  if (result.released && result.othersWaiting) await region.kick();
  return result;
}
