// The typed client services use to submit, watch and cancel jobs.
import { Client, WorkflowExecutionAlreadyStartedError, type Connection } from '@temporalio/client';
import type { JobResult, JobSpec, JobStatus } from './types';
import { jobWorkflowId } from './types';
import { validateSpec } from './validation';
import { AcceleratorTypeKey, JobIdKey, JobStateKey, RegionKey, TenantKey, TierKey } from './search-attributes';
import { JobWorkflow, cancelSignal, statusQuery } from '../workflows/job';

export class InvalidJobSpecError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid job spec: ${problems.join('; ')}`);
    this.name = 'InvalidJobSpecError';
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
      await this.temporal.workflow.start(JobWorkflow, {
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

  async cancel(tenant: string, jobId: string, reason?: string): Promise<void> {
    await this.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId)).signal(cancelSignal, reason);
  }

  async result(tenant: string, jobId: string): Promise<JobResult> {
    return this.temporal.workflow.getHandle<typeof JobWorkflow>(jobWorkflowId(tenant, jobId)).result();
  }
}

function summarize(spec: JobSpec): string {
  const r = spec.request;
  const each = r?.devicesPerWorker ? `${r.devicesPerWorker}` : `${r?.milliPerWorker}m`;
  return `${spec.tier}/${spec.priority} ${r?.workers}×${each} ${r?.acceleratorTypes?.join('|')} ${r?.topology} for ${spec.durationMs}ms`;
}
