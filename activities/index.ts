// The activities a worker registers, bound to one database and one region.
import type { Kysely } from 'kysely';
import { Context } from '@temporalio/activity';
import type { Database, JobState } from '../db/schema';
import { jobWorkflowId, type AllocateResult, type JobSpec, type PlacementPolicyName } from '../api/types';
import { Allocator, type AllocateInput, type ReleaseResult } from './allocator';
import { registerJob, setJobState } from './jobs';
import { runSimulated } from './executor';

export interface ActivityDeps {
  db: Kysely<Database>;
  region: string;
  policy?: PlacementPolicyName;
}

export function createActivities({ db, region, policy }: ActivityDeps) {
  const log = () => Context.current().log;
  const allocator = new Allocator(db, policy);
  return {
    async registerJob(spec: JobSpec): Promise<void> {
      await registerJob(db, spec, region, Context.current().info.workflowExecution?.workflowId ?? jobWorkflowId(spec.tenant, spec.jobId));
    },
    async setJobState(jobId: string, epoch: number, state: JobState, waitingReason?: string): Promise<void> {
      await setJobState(db, jobId, epoch, state, waitingReason ?? null);
    },
    async allocate(input: AllocateInput): Promise<AllocateResult> {
      const result = await allocator.allocate(input);
      log().info(result.placed ? 'job placed' : 'job waits', {
        jobId: input.jobId, epoch: input.epoch, event: result.placed ? 'allocator.placed' : 'allocator.no-fit',
        ...(result.placed ? { nodes: result.placement.workers.map((w) => w.nodeName) } : { reason: result.reason }),
      });
      return result;
    },
    async release(jobId: string, epoch: number): Promise<ReleaseResult> {
      const result = await allocator.release(jobId, epoch);
      log().info('job released', { jobId, epoch, event: 'allocator.release', devices: result.released });
      return result;
    },
    runSimulated,
  };
}

export type SchedulerActivities = ReturnType<typeof createActivities>;
