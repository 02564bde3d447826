// The typed client services use to submit, watch and cancel jobs.
import {
  Client,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  Connection,
  type WorkflowHandle,
} from '@temporalio/client';
import { temporalConnectionOptions, type ReadFile, type TemporalEndpoint } from './temporal-connection';
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
  pinUpdate,
  recallUpdate,
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

/**
 * A submission under a job id that has been used: the job's workflow has ended (a job id is used
 * once; only a rejected job, which held nothing, may be submitted again). Nothing was started.
 */
export class JobIdTakenError extends Error {
  constructor(
    readonly workflowId: string,
    message: string,
  ) {
    super(message);
    this.name = 'JobIdTakenError';
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
  /** The region jobs are submitted to: their home. */
  region: string;
  /** Other regions this client can reach, to follow jobs handed off to them. */
  peers?: Record<string, { connection: Connection; namespace: string }>;
}

/** Where a job is now: the region whose copy of it is live (or ended last), and that copy's status. */
export interface JobLocation {
  region: string;
  status: JobStatus;
  /** The regions followed from home, home first. */
  chain: string[];
  /** Set when the job went to a region this client cannot reach: its home's status is given. */
  unreachable?: string;
}

/** Hops followed at most (a handed-over copy is never handed on, so one is the rule). */
const MAX_HOPS = 4;

export class SchedulerClient {
  readonly temporal: Client;
  private readonly peerClients = new Map<string, Client>();
  constructor(private readonly o: SchedulerClientOptions) {
    this.temporal = new Client({ connection: o.connection, namespace: o.namespace });
    for (const [name, p] of Object.entries(o.peers ?? {}))
      this.peerClients.set(name, new Client({ connection: p.connection, namespace: p.namespace }));
  }

  /** The Temporal client of a region: home, or a peer this client knows. */
  private clientOf(region: string): Client | undefined {
    return region === this.o.region ? this.temporal : this.peerClients.get(region);
  }

  /**
   * Finds the job wherever it is now: asks its home, and while the home says it was handed off,
   * asks the region it went to (whose copy names this home and epoch as its origin).
   */
  async locate(tenant: string, jobId: string): Promise<JobLocation> {
    const workflowId = jobWorkflowId(tenant, jobId);
    let region = this.o.region;
    let status = await this.temporal.workflow.getHandle(workflowId).query(statusQuery);
    const chain = [region];
    for (let hop = 0; hop < MAX_HOPS && status.phase === 'handed-off' && status.handoff; hop++) {
      const next = status.handoff.peer;
      const client = this.clientOf(next);
      if (!client) return { region, status, chain, unreachable: `${next} (no connection to it configured)` };
      let there: JobStatus;
      try {
        there = await client.workflow.getHandle(workflowId).query(statusQuery);
      } catch (err) {
        return { region, status, chain, unreachable: `${next}: ${(err as Error).message}` };
      }
      if (there.origin?.region !== region || there.origin.epoch !== status.handoff.epoch) break;
      chain.push(next);
      region = next;
      status = there;
    }
    return { region, status, chain };
  }

  /**
   * Starts the job's workflow and returns its id. Submitting a job that is still live again is a
   * no-op that returns the same id. A job id is used once: submitting a job whose workflow has
   * ended throws JobIdTakenError and starts nothing, unless it was rejected (it held nothing, so
   * a corrected submission may take the id). With `validate: false` the spec goes to the workflow
   * as is, which rejects it durably (useful for callers that want the rejection recorded in history).
   */
  async submit(spec: JobSpec, opts: { validate?: boolean } = {}): Promise<string> {
    if (opts.validate !== false) {
      const problems = validateSpec(spec);
      if (problems.length) throw new InvalidJobSpecError(problems);
    }
    const workflowId = jobWorkflowId(String(spec.tenant), String(spec.jobId));
    const start = (workflowIdReusePolicy: 'REJECT_DUPLICATE' | 'ALLOW_DUPLICATE') =>
      this.temporal.workflow.start<JobWorkflowType>('JobWorkflow', {
        workflowId,
        taskQueue: this.o.taskQueue,
        args: [{ spec, region: this.o.region }],
        // Refused by the server while the id's last run is retained, whatever this client believes.
        workflowIdReusePolicy,
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
    try {
      await start('REJECT_DUPLICATE');
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      const ended = await this.endedAs(workflowId);
      if (ended === undefined) return workflowId; // live: the same submission again
      if (ended !== 'rejected')
        throw new JobIdTakenError(
          workflowId,
          `job ${String(spec.jobId)} of ${String(spec.tenant)} has already ${ended}; a job id is used once, submit under a new id`,
        );
      try {
        await start('ALLOW_DUPLICATE');
      } catch (again) {
        // Another submission of the corrected job got there first: the same submission again.
        if (!(again instanceof WorkflowExecutionAlreadyStartedError)) throw again;
      }
    }
    return workflowId;
  }

  /** How the id's last run ended (its outcome, or how its workflow closed), or undefined while it runs. */
  private async endedAs(workflowId: string): Promise<string | undefined> {
    const handle = this.temporal.workflow.getHandle<JobWorkflowType>(workflowId);
    const { status } = await handle.describe();
    if (status.name === 'RUNNING') return undefined;
    if (status.name !== 'COMPLETED') return `ended (${status.name.toLowerCase().replace(/_/g, ' ')})`;
    return (await handle.result()).outcome;
  }

  /** The job's status where it is now (at the peer, for a job handed off there). */
  async status(tenant: string, jobId: string): Promise<JobStatus> {
    return (await this.locate(tenant, jobId)).status;
  }

  /** The job's handle in the region where it is now (a copy pending a decision is still its home's). */
  private async current(tenant: string, jobId: string): Promise<WorkflowHandle> {
    const workflowId = jobWorkflowId(tenant, jobId);
    if (!this.peerClients.size) return this.temporal.workflow.getHandle(workflowId);
    const at = await this.locate(tenant, jobId).catch(() => undefined);
    return (this.clientOf(at?.region ?? this.o.region) ?? this.temporal).workflow.getHandle(workflowId);
  }

  /** Cancels the job wherever it is; refused (OperatorActionRefusedError) when it has already finished. */
  async cancel(tenant: string, jobId: string, reason = 'cancelled through the api'): Promise<JobStatus> {
    const handle = await this.current(tenant, jobId);
    return operatorAction('cancel', handle, () => handle.executeUpdate(cancelUpdate, { args: [reason] }));
  }

  /** Keeps the job in its home region from now on (no handoff); refused once it has been handed off. */
  async pin(tenant: string, jobId: string, reason = 'pinned through the api'): Promise<JobStatus> {
    const handle = this.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId));
    return operatorAction('pin', handle, () => handle.executeUpdate(pinUpdate, { args: [reason] }));
  }

  /** Brings a handed-off job home before it starts at the peer; refused once it has been placed there. */
  async recall(tenant: string, jobId: string, reason = 'recalled through the api'): Promise<JobStatus> {
    const handle = this.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId));
    return operatorAction('recall', handle, () => handle.executeUpdate(recallUpdate, { args: [reason] }));
  }

  /** Fire-and-forget cancel, for callers that cannot wait for the job's answer. */
  async cancelSignal(tenant: string, jobId: string, reason?: string): Promise<void> {
    await this.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId)).signal(cancelSignal, reason);
  }

  /** Sends a placed or running job back to the queue, keeping its queue position. */
  async requeue(tenant: string, jobId: string, reason = 'requeued through the api'): Promise<JobStatus> {
    const handle = await this.current(tenant, jobId);
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

/**
 * Connects a client to a region's Temporal frontend as configured (address, namespace, TLS, API
 * key: see api/temporal-connection.ts), e.g. `connectSchedulerClient({ endpoint:
 * temporalEndpointFromEnv(process.env, defaults), readFile: fs.readFileSync, taskQueue, region })`.
 * `readFile` reads the TLS files; close with `client.temporal.connection.close()`.
 */
export async function connectSchedulerClient(o: {
  endpoint: TemporalEndpoint;
  readFile: ReadFile;
  taskQueue: string;
  region: string;
}): Promise<SchedulerClient> {
  const connection = await Connection.connect(temporalConnectionOptions(o.endpoint, o.readFile));
  return new SchedulerClient({ connection, namespace: o.endpoint.namespace, taskQueue: o.taskQueue, region: o.region });
}
