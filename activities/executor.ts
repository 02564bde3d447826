// The executor launches a placed job and reports when it ends. The simulated executor "runs"
// for the job's duration, heartbeating its progress so that a retry on another worker after a
// crash resumes where the last heartbeat left off instead of starting over.
import { CancelledFailure, Context } from '@temporalio/activity';
import type { Placement } from '../api/types';

export interface RunInput {
  jobId: string;
  placement: Placement;
  durationMs: number;
}

export interface RunOutcome {
  ranMs: number;
  resumedFromMs: number;
}

export const HEARTBEAT_EVERY_MS = 1000;

export async function runSimulated(input: RunInput): Promise<RunOutcome> {
  const ctx = Context.current();
  const resumedFromMs = typeof ctx.info.heartbeatDetails === 'number' ? ctx.info.heartbeatDetails : 0;
  let ranMs = resumedFromMs;
  ctx.log.info('executor launched', { jobId: input.jobId, event: 'executor.launch', resumedFromMs, workers: input.placement.workers.length });
  while (ranMs < input.durationMs) {
    const step = Math.min(HEARTBEAT_EVERY_MS, input.durationMs - ranMs);
    try {
      await ctx.sleep(step);
    } catch (err) {
      if (err instanceof CancelledFailure) ctx.log.info('executor stopped', { jobId: input.jobId, event: 'executor.stop', ranMs });
      throw err;
    }
    ranMs += step;
    ctx.heartbeat(ranMs);
  }
  return { ranMs, resumedFromMs };
}
