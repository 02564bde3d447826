// Reference workflows for the lifecycle benchmark. NoopWorkflow starts and completes at once: the
// server's own workflow throughput, the ceiling the job lifecycle is compared against.
// JobShapeWorkflow gives the server the same commands as a job placed on admission, with none of
// the job's work: how much of a job's cost and latency is Temporal's alone for that shape.
import { proxyActivities, proxyLocalActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { BenchActivities } from '../activities';
import { AcceleratorTypeKey, JobStateKey, WaitingReasonKey } from '../../api/search-attributes';

const referenceLocal = proxyLocalActivities<BenchActivities>({ startToCloseTimeout: '10s' });
const reference = proxyActivities<BenchActivities>({ startToCloseTimeout: '1 hour' });

export async function NoopWorkflow(): Promise<string> {
  return 'done';
}

/**
 * A local activity in the first workflow task (admission), a search-attribute upsert (running),
 * one run activity, a final upsert (completed). Returns when its run activity started
 * (wall-clock ms), the equivalent of a job's placed time.
 */
export async function JobShapeWorkflow(runMs: number): Promise<number> {
  await referenceLocal.referenceAdmit();
  upsertSearchAttributes([
    { key: JobStateKey, value: 'running' },
    { key: WaitingReasonKey, value: null },
    { key: AcceleratorTypeKey, value: 'A100' },
  ]);
  const started = await reference.referenceRun(runMs);
  upsertSearchAttributes([{ key: JobStateKey, value: 'completed' }]);
  return started;
}
