// Operator actions on nodes: cordon, uncordon, drain. A drain also sends every job on the node
// back to the queue through the job's own `requeue` update, so the job releases its devices itself.
import { requeueUpdate, type NodeActionResult } from '../api/messages';
import { badRequest } from '../api/errors';
import type { NodeState } from '../db/schema';
import { jobsOnNode } from './jobs';
import { activityLog, tell, type Region } from './region';

/** Sets a node's state; a drain also sends every job on it back to the queue. */
export async function setNodeState(region: Region, name: string, state: NodeState): Promise<NodeActionResult> {
  const log = activityLog();
  const node = await region.db.updateTable('nodes').set({ state }).where('name', '=', name).returning(['id', 'state']).executeTakeFirst();
  if (!node) throw badRequest(`node ${JSON.stringify(name)} does not exist`);
  log.info('node state', { event: `node.${state}`, node: name });
  const requeued: string[] = [];
  if (state === 'draining')
    for (const job of await jobsOnNode(region.db, node.id)) {
      const sent = await tell(() =>
        region.client.workflow.getHandle(job.workflowId).executeUpdate(requeueUpdate, { args: [`node ${name} is draining`] }),
      ).catch((err: Error) => {
        // A job that finished or moved on meanwhile no longer needs moving.
        log.warn('drain could not requeue job', { jobId: job.id, node: name, error: err.message });
        return false;
      });
      if (sent) requeued.push(job.id);
    }
  if (state === 'ready') await region.kick();
  return { node: name, state, requeued };
}
