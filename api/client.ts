// The typed client services use to submit, watch and cancel jobs.
import {
  Client,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type Connection,
  type WorkflowHandle,
} from '@temporalio/client';
import type { JobResult, JobSpec, JobStatus } from './types';
import { jobWorkflowId, reservationWorkflowId, schedulerTaskQueue, schedulerWorkflowId } from './ids';
import { validatePriority, validateSpec } from './validation';
import { workerSize } from './units';
import { AcceleratorTypeKey, JobIdKey, JobStateKey, RegionKey, TenantKey, TierKey } from './search-attributes';
import {
  cancelSignal,
  cancelUpdate,
  cordonUpdate,
  drainUpdate,
  requeueUpdate,
  schedulerStatusQuery,
  setPriorityUpdate,
  statusQuery,
  uncordonUpdate,
  reserveUpdate,
  cancelReservationSignal,
  kickSignal,
  type JobWorkflowInput,
  type ReservationInfo,
  type ReservationRequest,
  type NodeActionResult,
  type SchedulerStatus,
} from './messages';

/** The job workflow's signature, for typed starts by name (the client never loads workflow code). */
type JobWorkflowType = (input: JobWorkflowInput) => Promise<JobResult>;

export class InvalidJobSpecError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid job spec: ${problems.join('; ')}`);
    this.name = 'InvalidJobSpecError';
  }
}

/** An operator action the job or scheduler refused (its validator said why); nothing changed. */
export class OperatorActionRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OperatorActionRefusedError';
  }
}

/**
 * Runs an update, turning a validator's refusal into an OperatorActionRefusedError with its
 * message, and an update sent to a finished job into one that says how it ended.
 */
async function operatorAction<T>(action: string, handle: WorkflowHandle, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (err instanceof WorkflowUpdateFailedError) {
      // The validator's or handler's own error, under any activity failure wrapping it.
      let cause: Error | undefined = err.cause;
      while (cause?.cause instanceof Error) cause = cause.cause;
      throw new OperatorActionRefusedError(cause?.message ?? err.message);
    }
    if (err instanceof WorkflowNotFoundError && /completed/.test(err.message)) {
      const ended = await handle.result().then(
        (r: { outcome?: string } | undefined) => r?.outcome ?? 'finished',
        () => 'finished',
      );
      throw new OperatorActionRefusedError(
        `${action}: ${handle.workflowId.startsWith('job/') ? 'job' : 'workflow'} ${handle.workflowId.split('/').pop()} is already ${ended}`,
      );
    }
    throw err;
  }
}

export interface SchedulerClientOptions {
  connection: Connection;
  namespace: string;
  taskQueue: string;
  region: string;
}

export class SchedulerClient {
  readonly temporal: Client;
  constructor(private readonly o: SchedulerClientOptions) {
    this.temporal = new Client({ connection: o.connection, namespace: o.namespace });
  }

  /**
   * Starts the job's workflow and returns its id. Submitting the same job id again is a no-op
   * that returns the same id. With `validate: false` the spec goes to the workflow as is, which
   * rejects it durably (useful for callers that want the rejection recorded in history).
   */
  async submit(spec: JobSpec, opts: { validate?: boolean } = {}): Promise<string> {
    if (opts.validate !== false) {
      const problems = validateSpec(spec);
      if (problems.length) throw new InvalidJobSpecError(problems);
    }
    const workflowId = jobWorkflowId(String(spec.tenant), String(spec.jobId));
    try {
      await this.temporal.workflow.start<JobWorkflowType>('JobWorkflow', {
        workflowId,
        taskQueue: this.o.taskQueue,
        args: [{ spec, region: this.o.region }],
        typedSearchAttributes: [
          { key: JobIdKey, value: String(spec.jobId) },
          { key: TenantKey, value: String(spec.tenant) },
          { key: TierKey, value: String(spec.tier) },
          { key: RegionKey, value: this.o.region },
          { key: JobStateKey, value: 'submitted' },
          { key: AcceleratorTypeKey, value: spec.request?.acceleratorTypes?.[0] ?? 'unknown' },
        ],
        memo: { spec: summarize(spec) },
      });
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
    }
    return workflowId;
  }

  async status(tenant: string, jobId: string): Promise<JobStatus> {
    return this.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId)).query(statusQuery);
  }

  /** Cancels the job; refused (OperatorActionRefusedError) when it has already finished. */
  async cancel(tenant: string, jobId: string, reason = 'cancelled through the api'): Promise<JobStatus> {
    const handle = this.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId));
    return operatorAction('cancel', handle, () => handle.executeUpdate(cancelUpdate, { args: [reason] }));
  }

  /** Fire-and-forget cancel, for callers that cannot wait for the job's answer. */
  async cancelSignal(tenant: string, jobId: string, reason?: string): Promise<void> {
    await this.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId)).signal(cancelSignal, reason);
  }

  /** Sends a placed or running job back to the queue, keeping its queue position. */
  async requeue(tenant: string, jobId: string, reason = 'requeued through the api'): Promise<JobStatus> {
    const handle = this.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId));
    return operatorAction('requeue', handle, () => handle.executeUpdate(requeueUpdate, { args: [reason] }));
  }

  async setPriority(tenant: string, jobId: string, priority: number): Promise<JobStatus> {
    const problems = validatePriority(priority);
    if (problems.length) throw new OperatorActionRefusedError(`setPriority: ${problems.join('; ')}`);
    const handle = this.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId));
    return operatorAction('setPriority', handle, () => handle.executeUpdate(setPriorityUpdate, { args: [priority] }));
  }

  /** Stops new placements on a node; what runs there keeps running. */
  async cordon(node: string): Promise<NodeActionResult> {
    const scheduler = await this.readyScheduler();
    return operatorAction('cordon', scheduler, () => scheduler.executeUpdate(cordonUpdate, { args: [node] }));
  }

  async uncordon(node: string): Promise<NodeActionResult> {
    const scheduler = await this.readyScheduler();
    return operatorAction('uncordon', scheduler, () => scheduler.executeUpdate(uncordonUpdate, { args: [node] }));
  }

  /** Cordons a node and requeues every job on it. */
  async drain(node: string): Promise<NodeActionResult> {
    const scheduler = await this.readyScheduler();
    return operatorAction('drain', scheduler, () => scheduler.executeUpdate(drainUpdate, { args: [node] }));
  }

  /** Books capacity for a tenant over a time window; refused (OperatorActionRefusedError) if it overbooks. */
  async reserve(request: ReservationRequest): Promise<ReservationInfo> {
    const scheduler = await this.readyScheduler();
    return operatorAction('reserve', scheduler, () => scheduler.executeUpdate(reserveUpdate, { args: [request] }));
  }

  async cancelReservation(id: string): Promise<void> {
    await this.temporal.workflow.getHandle(reservationWorkflowId(id)).signal(cancelReservationSignal);
  }

  async schedulerStatus(): Promise<SchedulerStatus> {
    return this.scheduler().query(schedulerStatusQuery);
  }

  private scheduler() {
    return this.temporal.workflow.getHandle(schedulerWorkflowId(this.o.region));
  }

  /** The region scheduler's handle, starting the scheduler first if it is not running yet. */
  private async readyScheduler() {
    await this.temporal.workflow.signalWithStart('RegionSchedulerWorkflow', {
      workflowId: schedulerWorkflowId(this.o.region),
      taskQueue: schedulerTaskQueue(this.o.taskQueue),
      args: [{ region: this.o.region }],
      signal: kickSignal,
      signalArgs: [],
    });
    return this.scheduler();
  }

  async result(tenant: string, jobId: string): Promise<JobResult> {
    return this.temporal.workflow.getHandle<JobWorkflowType>(jobWorkflowId(tenant, jobId)).result();
  }
}

/** The memo's one-line summary. Unvalidated specs reach here too (`validate: false`), so every field may be missing. */
function summarize(spec: JobSpec): string {
  const r = spec.request;
  const each = r ? workerSize(r) : '?';
  return `${spec.tier}/${spec.priority} ${r?.workers}×${each} ${r?.acceleratorTypes?.join('|')} ${r?.topology} for ${spec.durationMs}ms`;
}
