// Reliability holes of issue 15, each shown on a real PostgreSQL and a real Temporal dev server:
// a valid spec that overflowed a column and a launch that failed forever (item 2), job ids that
// collided across tenants or with a finished job (item 3), and messages to a job that were
// trusted (item 4).
import { Worker } from '@temporalio/worker';
import { checkInvariants } from '../../db/invariants';
import { JobIdTakenError } from '../../api/client';
import { LIMITS } from '../../api/validation';
import { jobWorkflowId, schedulerTaskQueue } from '../../api/ids';
import { TenantKey, JobIdKey, JobStateKey, RegionKey, TierKey, AcceleratorTypeKey } from '../../api/search-attributes';
import {
  cancelSignal,
  handedJobEndedSignal,
  handoffDecisionSignal,
  placedSignal,
  preemptSignal,
  waitingSignal,
  type JobWorkflowInput,
} from '../../api/messages';
import type { JobResult, JobSpec, Placement } from '../../api/types';
import { createActivities } from '../../activities';
import { SimulatedExecutor, type Executor, type LaunchInput } from '../../activities/executor';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { NAMESPACE, REGION, eventually, jobProbes, startTemporal, type TemporalHarness } from '../helpers/temporal';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';

/** The simulated executor, except that it cannot launch a job whose id starts with `unlaunchable`. */
class PickyExecutor implements Executor {
  constructor(private readonly inner: SimulatedExecutor) {}
  async launch(input: LaunchInput): Promise<void> {
    if (input.jobId.startsWith('unlaunchable')) throw new Error(`image registry.example/${input.jobId}:1 not found`);
    return this.inner.launch(input);
  }
  observe(jobId: string, epoch: number) {
    return this.inner.observe(jobId, epoch);
  }
  stop(jobId: string, epoch: number, detail: string) {
    return this.inner.stop(jobId, epoch, detail);
  }
  checkpoint(jobId: string, epoch: number) {
    return this.inner.checkpoint(jobId, epoch);
  }
}

let t: TestDatabase;
let h: TemporalHarness;
let workers: Worker[] = [];
let runs: Array<Promise<void>> = [];
let nodeIds: number[] = [];

beforeAll(async () => {
  t = await createTestDatabase('reliab');
  nodeIds = await seedFleet(t.db, { nodes: [['A100', 8, 2]] });
  await seedTenants(t.db, ['acme/ml', 'other/lab']);
  h = await startTemporal('jobs-reliability');
  // The region's two workers, as createRegionWorker builds them, with an executor that refuses some launches.
  const activities = createActivities({
    db: t.db,
    region: REGION,
    client: h.client.temporal,
    taskQueue: h.taskQueue,
    executor: new PickyExecutor(new SimulatedExecutor(t.db)),
  });
  const common = { connection: h.env.nativeConnection, namespace: NAMESPACE, workflowBundle: { codePath: WORKFLOW_BUNDLE }, activities };
  workers = [
    await Worker.create({ ...common, taskQueue: h.taskQueue }),
    await Worker.create({ ...common, taskQueue: schedulerTaskQueue(h.taskQueue) }),
  ];
  runs = workers.map((w) => w.run());
});
afterAll(async () => {
  for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
  await Promise.allSettled(runs);
  await h?.teardown();
  await t?.drop();
});
afterEach(async () => {
  expect(await checkInvariants(t.db)).toEqual([]);
});

const spec = (jobId: string, o: Partial<JobSpec> = {}): JobSpec => ({
  jobId,
  tenant: 'acme/ml',
  tier: 'standard',
  priority: 5,
  durationMs: 300,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 4, topology: 'any' },
  ...o,
});
const held = async (jobId: string): Promise<number> =>
  (await t.db.selectFrom('allocations').select('id').where('job_id', '=', jobId).execute()).length;
const jobRow = (jobId: string) => t.db.selectFrom('jobs').selectAll().where('id', '=', jobId).executeTakeFirst();
const executions = (jobId: string) => t.db.selectFrom('executions').selectAll().where('job_id', '=', jobId).orderBy('epoch').execute();

/** The promise's value, or a failure naming what did not happen within `ms` (a job that loops or wedges never ends). */
async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}
const resultOf = (s: JobSpec, ms = 20_000): Promise<JobResult> => within(ms, `${s.jobId} ended`, h.client.result(s.tenant, s.jobId));

describe('a valid spec never overflows a column, and a run that cannot launch ends (issue 15, item 2)', () => {
  test('a job of the longest valid duration (30 days) launches and runs', async () => {
    const long = spec('thirty-days', { durationMs: LIMITS.maxDurationMs });
    await h.client.submit(long);
    const [run] = await eventually(
      async () => {
        const rows = await executions(long.jobId);
        return rows.length ? rows : undefined;
      },
      'the 30-day run launched',
      20_000,
    );
    expect(Number(run.duration_ms)).toBe(LIMITS.maxDurationMs);
    expect(run.state).toBe('running');
    await jobProbes(h).until(long, (st) => st.phase === 'running', 'running');
    await h.client.cancel(long.tenant, long.jobId, 'test over');
    expect((await resultOf(long)).outcome).toBe('cancelled');
    expect(await held(long.jobId)).toBe(0);
  });

  test('a run whose launch keeps failing ends the job as failed, with the reason, and releases its devices', async () => {
    const doomed = spec('unlaunchable-1');
    await h.client.submit(doomed);
    const result = await resultOf(doomed, 45_000);
    expect(result.outcome).toBe('failed');
    expect(result.reason).toMatch(/launch/);
    expect(result.reason).toMatch(/image registry\.example\/unlaunchable-1:1 not found/);
    expect(await held(doomed.jobId)).toBe(0);
    expect((await jobRow(doomed.jobId))?.state).toBe('failed');
  });
});

describe('job identity (issue 15, item 3)', () => {
  test("a second tenant reusing another tenant's job id is refused at once and learns nothing of the first", async () => {
    const first = spec('shared-1', { durationMs: 60_000 });
    await h.client.submit(first);
    await jobProbes(h).until(first, (st) => st.phase === 'running', 'running');
    const second = spec('shared-1', { tenant: 'other/lab' });
    await h.client.submit(second);
    const result = await resultOf(second, 15_000);
    expect(result.outcome).toBe('rejected');
    expect(result.reason).toMatch(/shared-1/);
    expect(result.reason).toMatch(/already/);
    expect(result.reason).not.toMatch(/acme/);
    expect(result.reason).not.toContain(jobWorkflowId('acme/ml', 'shared-1'));
    // The first job is untouched: its row, its devices, its run.
    const row = await jobRow('shared-1');
    expect(row?.tenant).toBe('acme/ml');
    expect(row?.workflow_id).toBe(jobWorkflowId('acme/ml', 'shared-1'));
    expect(await held('shared-1')).toBe(4);
    expect((await h.client.status('acme/ml', 'shared-1')).phase).toBe('running');
    await h.client.cancel('acme/ml', 'shared-1');
    expect((await resultOf(first)).outcome).toBe('cancelled');
  });

  test("resubmitting a finished job's id is refused and starts no second run", async () => {
    const once = spec('once-1');
    await h.client.submit(once);
    expect((await resultOf(once)).outcome).toBe('completed');
    const firstRun = (await h.client.temporal.workflow.getHandle(jobWorkflowId(once.tenant, once.jobId)).describe()).runId;
    await expect(h.client.submit(once)).rejects.toThrow(JobIdTakenError);
    await expect(h.client.submit(once)).rejects.toThrow(/once-1.*already completed/);
    expect((await h.client.temporal.workflow.getHandle(jobWorkflowId(once.tenant, once.jobId)).describe()).runId).toBe(firstRun);
    expect((await jobRow(once.jobId))?.state).toBe('completed');
  });

  test('resubmitting a live job is a no-op that returns the same workflow id', async () => {
    const live = spec('live-1', { durationMs: 60_000 });
    const id = await h.client.submit(live);
    expect(await h.client.submit(live)).toBe(id);
    await h.client.cancel(live.tenant, live.jobId);
    expect((await resultOf(live)).outcome).toBe('cancelled');
  });

  test("a rejected job's id may be submitted again once the cause is mended", async () => {
    const early = spec('early-1', { tenant: 'late/team' });
    await h.client.submit(early);
    const refused = await resultOf(early);
    expect(refused.outcome).toBe('rejected');
    await seedTenants(t.db, ['late/team']);
    await h.client.submit(early);
    expect((await resultOf(early)).outcome).toBe('completed');
  });

  test("a new run started outside the client under a finished job's workflow id is rejected by admission, not left waiting", async () => {
    const done = spec('done-1');
    await h.client.submit(done);
    expect((await resultOf(done)).outcome).toBe('completed');
    // As the Temporal CLI would start it: the server's default reuse policy allows a new run.
    const handle = await h.client.temporal.workflow.start<(input: JobWorkflowInput) => Promise<JobResult>>('JobWorkflow', {
      workflowId: jobWorkflowId(done.tenant, done.jobId),
      taskQueue: h.taskQueue,
      args: [{ spec: done, region: REGION }],
      typedSearchAttributes: [
        { key: JobIdKey, value: done.jobId },
        { key: TenantKey, value: done.tenant },
        { key: TierKey, value: done.tier },
        { key: RegionKey, value: REGION },
        { key: JobStateKey, value: 'submitted' },
        { key: AcceleratorTypeKey, value: 'A100' },
      ],
    });
    const again = await within(15_000, 'the second run ended', handle.result());
    expect(again.outcome).toBe('rejected');
    expect(again.reason).toMatch(/done-1.*already completed/);
    expect((await jobRow(done.jobId))?.state).toBe('completed');
  });
});

describe('messages to a job are checked (issue 15, item 4)', () => {
  test('malformed placed, waiting, preempt, cancel and handoff messages are ignored: the job runs and completes', async () => {
    const j = spec('garbled-1', { durationMs: 3000 });
    await h.client.submit(j);
    await jobProbes(h).until(j, (st) => st.phase === 'running', 'running');
    const handle = h.client.temporal.workflow.getHandle(jobWorkflowId(j.tenant, j.jobId));
    // Sent by name with whatever arguments a careless caller gives: the typed definitions would refuse them.
    const send = (name: string, ...args: unknown[]) => handle.signal<unknown[]>(name, ...args);
    await send(placedSignal.name);
    await send(placedSignal.name, { epoch: 'one' });
    await send(placedSignal.name, { epoch: 2, placement: { workers: 'all of them' } });
    await send(waitingSignal.name);
    await send(waitingSignal.name, null);
    await send(waitingSignal.name, { epoch: 1, reason: 42 });
    await send(preemptSignal.name);
    await send(preemptSignal.name, { preemptor: 7, graceMs: 'soon' });
    await send(preemptSignal.name, { preemptor: 'x', graceMs: -5 });
    await send(handoffDecisionSignal.name);
    await send(handoffDecisionSignal.name, { epoch: 1, decision: 'maybe' });
    await send(handedJobEndedSignal.name);
    await send(handedJobEndedSignal.name, { epoch: 1, result: 'done' });
    await send(cancelSignal.name, { why: 'not a string' });
    const result = await resultOf(j, 30_000);
    expect(result.outcome).toBe('completed');
    expect(await held(j.jobId)).toBe(0);
    expect((await h.client.temporal.workflow.getHandle(jobWorkflowId(j.tenant, j.jobId)).describe()).status.name).toBe('COMPLETED');
  });

  test('a placement delivered for a job the database has not placed is never run', async () => {
    const blocker = spec('forge-blocker', {
      durationMs: 120_000,
      request: { acceleratorTypes: ['A100'], workers: 2, devicesPerWorker: 8, topology: 'any' },
    });
    await h.client.submit(blocker);
    await jobProbes(h).until(blocker, (st) => st.phase === 'running', 'running');
    const victim = spec('forged-1', { durationMs: 500 });
    await h.client.submit(victim);
    await jobProbes(h).until(victim, (st) => st.phase === 'waiting', 'waiting');
    // Well formed, at the job's epoch, on devices the blocker holds: the database never made it.
    const forged: Placement = {
      jobId: victim.jobId,
      epoch: 1,
      acceleratorType: 'A100',
      workers: [{ workerIdx: 0, nodeId: nodeIds[0], nodeName: 'forged-node', deviceIdx: [0, 1, 2, 3], milli: 1000 }],
    };
    await h.client.temporal.workflow
      .getHandle(jobWorkflowId(victim.tenant, victim.jobId))
      .signal(placedSignal, { epoch: 1, placement: forged });
    // It goes back to waiting (at a new epoch) without the executor ever launching it.
    const st = await jobProbes(h).until(
      victim,
      (s) => (s.phase === 'waiting' && s.epoch === 2) || s.phase === 'completed',
      'waiting again at epoch 2 (or, run on the forged placement, completed)',
      20_000,
    );
    expect(await executions(victim.jobId)).toEqual([]);
    expect(st.phase).toBe('waiting');
    expect(st.lastRequeue).toMatch(/not placed/);
    expect(await held(victim.jobId)).toBe(0);
    // Once the capacity is real, it is placed for real and runs.
    await h.client.cancel(blocker.tenant, blocker.jobId);
    expect((await resultOf(blocker)).outcome).toBe('cancelled');
    const result = await resultOf(victim, 60_000);
    expect(result.outcome).toBe('completed');
    expect(result.placement?.workers[0].nodeName).not.toBe('forged-node');
  });
});
