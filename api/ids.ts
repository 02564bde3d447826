// Workflow ids, task queues and namespaces: how every workflow of a region is named. Readable ids
// make any job or scheduler one lookup away in the Temporal UI.

/** A job's workflow: `job/<tenant>/<job id>`, the same in whichever region runs it. */
export function jobWorkflowId(tenant: string, jobId: string): string {
  return `job/${tenant}/${jobId}`;
}

/** The job id inside a job workflow id, or undefined for any other workflow. */
export function jobIdOfWorkflowId(workflowId: unknown): string | undefined {
  if (typeof workflowId !== 'string' || !workflowId.startsWith('job/')) return undefined;
  return workflowId.slice(workflowId.lastIndexOf('/') + 1);
}

/** The per-region scheduler's workflow id. */
export function schedulerWorkflowId(region: string): string {
  return `scheduler/${region}`;
}

/** A capacity reservation's workflow id. */
export function reservationWorkflowId(reservationId: string): string {
  return `reservation/${reservationId}`;
}

/** A region's Temporal namespace. */
export function regionNamespace(region: string): string {
  return `sched-${region}`;
}

/** The task queue of a region's job workflows and their activities. */
export function jobTaskQueue(region: string): string {
  return `jobs-${region}`;
}

/** The task queue of a region's scheduler workflows, beside the region's jobs task queue. */
export function schedulerTaskQueue(jobsTaskQueue: string): string {
  return `${jobsTaskQueue}-scheduler`;
}

/** A region's inventory-exchange workflow: publishes its summary to peers and receives theirs. */
export function peerExchangeWorkflowId(region: string): string {
  return `peers/${region}`;
}

/** A region's reconciler workflow: releases what job workflows that ended without their cleanup left. */
export function reconcilerWorkflowId(region: string): string {
  return `reconciler/${region}`;
}
