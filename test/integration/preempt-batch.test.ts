// A cycle plans several preemptions in one transaction (activities/preemption.ts,
// planPreemptions): each plan must see the ones before it, exactly as if they were planned one
// after another — no victim is taken twice, no node is kept for two preemptors, and a preemptor
// left without room is told so rather than given someone else's. The worker plans nothing itself
// (preemptLimit 0): the test plans the batch, as a cycle would.
import { checkInvariants } from '../../db/invariants';
import { OperatorActionRefusedError } from '../../api/client';
import type { JobSpec, JobStatus } from '../../api/types';
import { planPreemptions, type PreemptionPlan } from '../../activities/preemption';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { jobProbes, startTemporal, type TemporalHarness } from '../helpers/temporal';

let t: TestDatabase;
let h: TemporalHarness;

beforeAll(async () => {
  t = await createTestDatabase('pbatch');
  // Two nodes of 8 A100.
  await seedFleet(t.db, { nodes: [['A100', 8, 2]] });
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('jobs-preempt-batch');
  await h.startWorker(t.db, { preemptGraceMs: 1000, preemptLimit: 0 });
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
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 4, topology: 'any' },
  ...o,
});
const submitted: JobSpec[] = [];
const submit = async (s: JobSpec): Promise<void> => {
  submitted.push(s);
  await h.client.submit(s);
};
const until = (s: JobSpec, ok: (st: JobStatus) => boolean, what: string): Promise<JobStatus> => jobProbes(h).until(s, ok, what);

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

test('premium jobs planned in one batch take different victims, no more than each needs, and the one left without room is told why', async () => {
  // A full cluster: four basic jobs of 4 devices, two per node.
  const basics = ['pb-b1', 'pb-b2', 'pb-b3', 'pb-b4'].map((id) => spec(id));
  for (const b of basics) {
    await submit(b);
    await until(b, (st) => st.phase === 'running', 'running');
  }
  // Three premium jobs of 8 devices each: room for two (a whole node each), none for the third.
  const premium = ['pb-p1', 'pb-p2', 'pb-p3'].map((id) =>
    spec(id, { tier: 'premium', request: { ...spec(id).request, devicesPerWorker: 8 } }),
  );
  for (const p of premium) {
    await submit(p);
    await until(p, (st) => st.phase === 'waiting' && !!st.waitingReason, 'waiting for room');
  }

  const plans = await planPreemptions(
    t.db,
    premium.map((p) => ({ jobId: p.jobId, reclaimOnly: false })),
  );

  const [first, second, third] = plans;
  expect(first && 'victims' in first).toBe(true);
  expect(second && 'victims' in second).toBe(true);
  const a = first as PreemptionPlan;
  const b = second as PreemptionPlan;
  // Each frees exactly one node: the two jobs on it, no more.
  expect(a.victims).toHaveLength(2);
  expect(b.victims).toHaveLength(2);
  const victims = [...a.victims, ...b.victims].map((v) => v.jobId).sort();
  expect(victims).toEqual(basics.map((s) => s.jobId).sort());
  // The nominations keep one node for each preemptor, and no node for two.
  const nominations = await t.db.selectFrom('nominations').select(['preemptor', 'node_id']).execute();
  const nodesOf = (p: string) => new Set(nominations.filter((n) => n.preemptor === p).map((n) => n.node_id));
  expect(nodesOf('pb-p1').size).toBe(1);
  expect(nodesOf('pb-p2').size).toBe(1);
  expect([...nodesOf('pb-p1')][0]).not.toBe([...nodesOf('pb-p2')][0]);
  expect(nodesOf('pb-p3').size).toBe(0);
  // The third finds every running job already yielding to another preemptor.
  expect(third).toMatchObject({ preemptor: 'pb-p3', none: expect.stringContaining('A100') });
  // Planning the batch again adds nothing: the first two are already preempting.
  const again = await planPreemptions(
    t.db,
    premium.slice(0, 2).map((p) => ({ jobId: p.jobId, reclaimOnly: false })),
  );
  expect(again).toEqual([undefined, undefined]);
});
