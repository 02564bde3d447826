// Operator actions on nodes: cordon, uncordon, drain. A drain also sends every job on the node
// back to the queue through the job's own `requeue` update, so the job releases its devices itself.
import { requeueUpdate, type NodeActionResult } from '../api/messages';
import { badRequest } from '../api/errors';
import type { NodeState } from '../db/schema';
import { jobsOnNode } from './jobs';
import { activityLog, tell, type Region } from './region';

/** How long a drain waits for one job to accept its requeue. */
export const DRAIN_ANSWER_MS = 10_000;

/**
 * Sets a node's state; a drain also sends every job on it back to the queue, all at once, each
 * bounded by DRAIN_ANSWER_MS: one job whose workflow does not answer is reported, not waited for.
 */
export async function setNodeState(region: Region, name: string, state: NodeState, answerMs = DRAIN_ANSWER_MS): Promise<NodeActionResult> {
  const log = activityLog();
  const node = await region.db.updateTable('nodes').set({ state }).where('name', '=', name).returning(['id', 'state']).executeTakeFirst();
  if (!node) throw badRequest(`node ${JSON.stringify(name)} does not exist`);
  log.info('node state', { event: `node.${state}`, node: name });
  const requeued: string[] = [];
  const unanswered: string[] = [];
  if (state === 'draining')
    await Promise.all(
      (await jobsOnNode(region.db, node.id)).map(async (job) => {
        const silence = new AbortController();
        const timer = setTimeout(() => silence.abort(), answerMs);
        try {
          const sent = await region.client.withAbortSignal(silence.signal, () =>
            tell(() =>
              region.client.workflow.getHandle(job.workflowId).executeUpdate(requeueUpdate, { args: [`node ${name} is draining`] }),
            ),
          );
          if (sent) requeued.push(job.id);
        } catch (err) {
          // A refusal (it finished or moved on meanwhile) needs nothing; silence is reported.
          if (silence.signal.aborted) unanswered.push(job.id);
          log.warn('drain could not requeue job', {
            jobId: job.id,
            node: name,
            error: (err as Error).message,
            unanswered: silence.signal.aborted,
          });
        } finally {
          clearTimeout(timer);
        }
      }),
    );
  if (state === 'ready') await region.kick();
  return { node: name, state, requeued: requeued.sort(), ...(unanswered.length ? { unanswered: unanswered.sort() } : {}) };
}
