// A preempt signal lost between the nominations' commit and its delivery (the cycle's activity
// died, the worker lost its connection) is sent again while the nomination stands, and a victim
// told twice for the same preemptor yields once. The worker here plans no preemption of its own
// (preemptLimit 0): the test records each plan itself, as a cycle that died before telling would.
import { checkInvariants } from '../../db/invariants';
import { OperatorActionRefusedError } from '../../api/client';
import { preemptSignal } from '../../api/messages';
import { jobWorkflowId } from '../../api/ids';
import type { JobSpec, JobStatus } from '../../api/types';
import { planPreemption } from '../../activities/preemption';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { eventually, jobProbes, startTemporal, type TemporalHarness } from '../helpers/temporal';

const GRACE_MS = 1000;
let t: TestDatabase;
let h: TemporalHarness;

beforeAll(async () => {
  t = await createTestDatabase('resend');
  await seedFleet(t.db, { nodes: [['A100', 8, 1]] });
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('jobs-preempt-resend');
  await h.startWorker(t.db, { preemptGraceMs: GRACE_MS, preemptLimit: 0 });
});
afterAll(async () => {
  await h?.teardown();
  await t?.drop();
});

const spec = (jobId: string, o: Partial<JobSpec> = {}): JobSpec => ({
  jobId,
  tenant: 'acme/ml',
  tier: 'basic',
  priority: 0,
  durationMs: 120_000,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 8, topology: 'any' },
  ...o,
});
const submitted: JobSpec[] = [];
const submit = async (s: JobSpec): Promise<void> => {
  submitted.push(s);
  await h.client.submit(s);
};
const until = (s: JobSpec, ok: (st: JobStatus) => boolean, what: string, timeoutMs?: number): Promise<JobStatus> =>
  jobProbes(h).until(s, ok, what, timeoutMs);
const running = (s: JobSpec, epoch = 1) => until(s, (st) => st.phase === 'running' && st.epoch === epoch, `running at epoch ${epoch}`);
const preemptSignals = async (s: JobSpec): Promise<number> => {
  const history = await h.client.temporal.workflow.getHandle(jobWorkflowId(s.tenant, s.jobId)).fetchHistory();
  return (history.events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes?.signalName === preemptSignal.name).length;
};

/** A victim running and a premium job waiting for its node, then the plan recorded without telling anyone. */
async function preemptionWithoutSignal(victim: JobSpec, preemptor: JobSpec): Promise<void> {
  await submit(victim);
  await running(victim);
  await submit(preemptor);
  await until(preemptor, (st) => st.phase === 'waiting' && !!st.waitingReason, 'waiting for room');
  const plan = await planPreemption(t.db, preemptor.jobId);
  expect(plan).toMatchObject({ preemptor: preemptor.jobId, victims: [{ jobId: victim.jobId, epoch: 1 }] });
}

afterEach(async () => {
  for (const s of submitted.splice(0)) {
    await h.client.cancel(s.tenant, s.jobId, 'test cleanup').catch((err) => {
      if (!(err instanceof OperatorActionRefusedError)) throw err;
    });
    await h.client.result(s.tenant, s.jobId);
  }
  expect(await checkInvariants(t.db)).toEqual([]);
  expect(await t.db.selectFrom('nominations').selectAll().execute()).toEqual([]);
});

test('a victim whose preempt signal was lost is told again, yields, and the preemptor is placed', async () => {
  const victim = spec('rs-victim');
  const premium = spec('rs-premium', { tier: 'premium' });
  await preemptionWithoutSignal(victim, premium);
  const yielded = await until(victim, (st) => st.epoch === 2, 'requeued for the preemptor', 45_000);
  expect(yielded.lastRequeue).toBe('preempted for rs-premium');
  await running(premium);
  expect(await preemptSignals(victim)).toBeGreaterThanOrEqual(1);
});

test('a victim told twice for the same preemptor yields once', async () => {
  const victim = spec('tw-victim', { checkpointable: true });
  const premium = spec('tw-premium', { tier: 'premium' });
  await preemptionWithoutSignal(victim, premium);
  // The first tell arrives (its delivery was not recorded): a grace period long enough for the
  // scheduler to tell the victim again while it winds down.
  await h.client.temporal.workflow
    .getHandle(jobWorkflowId(victim.tenant, victim.jobId))
    .signal(preemptSignal, { preemptor: premium.jobId, graceMs: 15_000 });
  await eventually(async () => ((await preemptSignals(victim)) >= 2 ? true : undefined), 'the victim told again', 30_000);
  await running(premium, 1);
  const requeued = await until(victim, (st) => st.phase === 'waiting' && st.epoch === 2, 'requeued once');
  expect(requeued.lastRequeue).toBe('preempted for tw-premium');
  // One stop, one requeue: the second tell was the same preemption, not another.
  const execs = await t.db.selectFrom('executions').select(['epoch', 'state']).where('job_id', '=', victim.jobId).execute();
  expect(execs).toEqual([{ epoch: 1, state: 'stopped' }]);
  expect((await t.db.selectFrom('jobs').select('epoch').where('id', '=', victim.jobId).executeTakeFirstOrThrow()).epoch).toBe(2);
});
