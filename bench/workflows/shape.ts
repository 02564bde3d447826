// Reference workflows for the lifecycle benchmark. NoopWorkflow starts and completes at once: the
// server's own workflow throughput, the ceiling the job lifecycle is compared against.
// JobShapeWorkflow gives the server the same commands as a job placed on admission, with none of
// the job's work: how much of a job's cost and latency is Temporal's alone for that shape.
import { patched, proxyActivities, proxyLocalActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { BenchActivities, ShapeInput, ShapeTimes } from '../activities';
import { AcceleratorTypeKey, JobStateKey, WaitingReasonKey } from '../../api/search-attributes';

// The job's own options (workflows/job-record.ts): the run activity's heartbeat timeout costs the
// server a timer per run, and the admission's retry policy rides in its marker.
const referenceLocal = proxyLocalActivities<BenchActivities>({
  startToCloseTimeout: '10s',
  retry: { initialInterval: '200ms', maximumInterval: '5s' },
});
const reference = proxyActivities<BenchActivities>({
  startToCloseTimeout: '30 days',
  heartbeatTimeout: '5s',
  retry: { initialInterval: '500ms', maximumInterval: '10s' },
});

export async function NoopWorkflow(): Promise<string> {
  return 'done';
}

/**
 * What a job placed on admission gives the server, in order: a local activity in the first
 * workflow task (admission, answering with a placement), the patch marker a new job records
 * (`global-handoff`), a search-attribute upsert (running), one run activity (heartbeat timeout
 * and all), a final upsert (completed), and a result of the job's size. Its input is the job's
 * (the spec and region). Returns when its admission ran (the point where a job's placement is
 * written: its placed time) and when its run activity started (wall-clock ms).
 */
export async function JobShapeWorkflow(input: ShapeInput): Promise<ShapeTimes & { jobId: string; outcome: 'completed' }> {
  const admitted = await referenceLocal.referenceAdmit(input);
  patched('job-shape');
  upsertSearchAttributes([
    { key: JobStateKey, value: 'running' },
    { key: WaitingReasonKey, value: null },
    { key: AcceleratorTypeKey, value: admitted.placement.acceleratorType },
  ]);
  const run = await reference.referenceRun({ jobId: input.spec.jobId, epoch: 1, placement: admitted.placement, durationMs: input.runMs });
  upsertSearchAttributes([
    { key: JobStateKey, value: 'completed' },
    { key: WaitingReasonKey, value: null },
  ]);
  return { jobId: input.spec.jobId, outcome: 'completed', admittedAt: admitted.at, runStartedAt: run.startedAt };
}
