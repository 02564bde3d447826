// Preemption, tiers and reservations on a real Temporal dev server and PostgreSQL: premium work
// takes capacity after the victims' grace period, quota reclaims borrowed capacity, gangs go
// whole, victims keep their queue position and checkpoint, a cancelled preemptor spares its
// victims, and reservation windows open and close on time and refuse overbooking.
import { checkInvariants } from '../../db/invariants';
import { OperatorActionRefusedError } from '../../api/client';
import type { JobSpec, JobStatus } from '../../api/types';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants, setQuota } from '../helpers/fleet';
import { eventually, jobProbes, startTemporal, type TemporalHarness } from '../helpers/temporal';

const GRACE_MS = 1500;
let t: TestDatabase;
let h: TemporalHarness;

beforeAll(async () => {
  t = await createTestDatabase('preempt');
  await seedFleet(t.db, { nodes: [['A100', 8, 2]] });
  await seedTenants(t.db, ['acme/ml', 'acme/a', 'acme/b', 'globex/x']);
  h = await startTemporal('jobs-preemption');
  await h.startWorker(t.db, { preemptGraceMs: GRACE_MS });
});
afterAll(async () => {
  await h?.teardown();
  await t?.drop();
});

const spec = (jobId: string, o: Partial<JobSpec> & { devices?: number; workers?: number } = {}): JobSpec => {
  const { devices = 8, workers = 1, ...rest } = o;
  return {
    jobId,
    tenant: 'acme/ml',
    tier: 'basic',
    priority: 0,
    durationMs: 120_000,
    request: { acceleratorTypes: ['A100'], workers, devicesPerWorker: devices, topology: 'any' },
    ...rest,
  };
};
const submitted: JobSpec[] = [];
const submit = async (s: JobSpec): Promise<void> => {
  submitted.push(s);
  await h.client.submit(s);
};
const status = (s: JobSpec): Promise<JobStatus> => jobProbes(h).status(s);
const until = (s: JobSpec, ok: (st: JobStatus) => boolean, what: string, timeoutMs?: number): Promise<JobStatus> =>
  jobProbes(h).until(s, ok, what, timeoutMs);
const running = (s: JobSpec, epoch = 1) => until(s, (st) => st.phase === 'running' && st.epoch === epoch, `running at epoch ${epoch}`);
const row = (jobId: string) => t.db.selectFrom('jobs').selectAll().where('id', '=', jobId).executeTakeFirstOrThrow();
const held = async (jobId: string): Promise<number> =>
  (await t.db.selectFrom('allocations').select('id').where('job_id', '=', jobId).execute()).length;

afterEach(async () => {
  for (const s of submitted.splice(0)) {
    await h.client.cancel(s.tenant, s.jobId, 'test cleanup').catch((err) => {
      if (!(err instanceof OperatorActionRefusedError)) throw err;
    });
    await h.client.result(s.tenant, s.jobId);
  }
  await t.db.deleteFrom('quotas').execute();
  expect(await checkInvariants(t.db)).toEqual([]);
  expect(await t.db.selectFrom('nominations').selectAll().execute()).toEqual([]);
});

test('premium work on a full cluster of basic jobs is placed after the grace period; the victim keeps its checkpoint and queue place', async () => {
  // pb-2 can checkpoint, so stopping it loses (almost) nothing: it is the cheaper victim.
  const b1 = spec('pb-1');
  const b2 = spec('pb-2', { checkpointable: true });
  await submit(b1);
  await running(b1);
  await submit(b2);
  await running(b2);
  await new Promise((r) => setTimeout(r, 1000)); // some work to checkpoint
  const b2Queued = (await row('pb-2')).enqueued_at;
  const premium = spec('pp-1', { tier: 'premium' });
  const submittedAt = Date.now();
  await submit(premium);
  // During the grace period both sides say what is going on.
  await until(premium, (st) => /^preempting .*pb-2/.test(st.waitingReason ?? ''), 'showing its preemption');
  await until(b2, (st) => (st.waitingReason ?? '').startsWith('preempted for pp-1'), 'showing it is being preempted');
  const placed = await running(premium);
  expect(Date.now() - submittedAt).toBeGreaterThanOrEqual(GRACE_MS);
  // The victim is the one with least work lost; the other runs on.
  const victim = await until(b2, (st) => st.epoch === 2, 'requeued');
  expect(victim.lastRequeue).toBe('preempted for pp-1');
  expect(victim.checkpointMs).toBeGreaterThanOrEqual(1000);
  expect((await status(b1)).epoch).toBe(1);
  expect(placed.placement?.workers[0].nodeId).toBeDefined();
  expect(await row('pb-2')).toMatchObject({ enqueued_at: b2Queued, state: 'waiting', preempted_by: ['pp-1'] });
  // Both histories show it: the victim's preempt signal and the preemptor's wait.
  const history = await h.client.temporal.workflow.getHandle('job/acme/ml/pb-2').fetchHistory();
  const signals = (history.events ?? []).map((e) => e.workflowExecutionSignaledEventAttributes?.signalName).filter(Boolean);
  expect(signals).toContain('preempt');
  // Queue position kept: a later basic job does not overtake the victim when room appears.
  const late = spec('pb-late');
  await submit(late);
  await until(late, (st) => st.phase === 'waiting' && !!st.waitingReason, 'waiting');
  await h.client.cancel('acme/ml', 'pp-1');
  const resumed = await running(b2, 2);
  expect(resumed.checkpointMs).toBeGreaterThanOrEqual(1000);
  expect((await status(late)).phase).toBe('waiting');
  // 'running' is entered as the run is asked for; the executor records the launch a moment later.
  const execs = await eventually(async () => {
    const rows = await t.db
      .selectFrom('executions')
      .select(['epoch', 'progress_ms', 'checkpoint_ms'])
      .where('job_id', '=', 'pb-2')
      .orderBy('epoch')
      .execute();
    return rows.length === 2 ? rows : undefined;
  }, "pb-2's second run launched");
  expect(execs[1].checkpoint_ms).toBe(execs[0].checkpoint_ms);
});

test('standard work cannot preempt standard work within quota', async () => {
  await setQuota(t.db, 'acme', 'A100', 16);
  await setQuota(t.db, 'acme/a', 'A100', 8);
  await setQuota(t.db, 'acme/b', 'A100', 8);
  const a = spec('ss-a', { tenant: 'acme/a', tier: 'standard' });
  const b = spec('ss-b', { tenant: 'acme/b', tier: 'standard' });
  await submit(a);
  await running(a);
  await submit(b);
  await running(b);
  const c = spec('ss-c', { tenant: 'globex/x', tier: 'standard' });
  await submit(c);
  await until(c, (st) => st.phase === 'waiting' && (st.waitingReason ?? '').includes('no room'), 'waiting for room');
  await new Promise((r) => setTimeout(r, GRACE_MS + 1000));
  expect((await status(a)).epoch).toBe(1);
  expect((await status(b)).epoch).toBe(1);
  expect(await t.db.selectFrom('nominations').selectAll().execute()).toEqual([]);
});

test('a team under its nominal reclaims capacity lent to a borrowing sibling', async () => {
  await setQuota(t.db, 'acme', 'A100', 16);
  await setQuota(t.db, 'acme/a', 'A100', 8, { borrowing: 8 });
  await setQuota(t.db, 'acme/b', 'A100', 8);
  const a1 = spec('rc-a1', { tenant: 'acme/a', tier: 'standard' });
  const a2 = spec('rc-a2', { tenant: 'acme/a', tier: 'standard' });
  await submit(a1);
  await running(a1);
  await submit(a2);
  await running(a2); // acme/a now borrows acme/b's idle 8
  const b = spec('rc-b', { tenant: 'acme/b', tier: 'standard' });
  await submit(b);
  await running(b);
  const victim = await until(a2, (st) => st.epoch === 2, 'reclaimed');
  expect(victim.lastRequeue).toBe('preempted for rc-b');
  expect((await status(a1)).epoch).toBe(1);
  expect(
    Number((await t.db.selectFrom('quotas').select('used_milli').where('tenant', '=', 'acme/a').executeTakeFirstOrThrow()).used_milli),
  ).toBe(8000);
});

test('a gang is preempted whole', async () => {
  const gang = spec('gg-gang', {
    devices: 4,
    workers: 2,
    request: { acceleratorTypes: ['A100'], workers: 2, devicesPerWorker: 4, topology: 'any', antiAffinity: true },
  });
  await submit(gang);
  await running(gang);
  const s1 = spec('gg-s1', { devices: 4 });
  const s2 = spec('gg-s2', { devices: 4 });
  await submit(s1);
  await running(s1);
  await submit(s2);
  await running(s2);
  // One whole node is needed: the gang (4 on each node) and one single must go.
  const premium = spec('gg-p', { tier: 'premium', devices: 8 });
  await submit(premium);
  await running(premium);
  expect((await status(gang)).epoch).toBe(2);
  expect(await held('gg-gang')).toBe(0);
  const singles = [await status(s1), await status(s2)].map((st) => st.epoch).sort();
  expect(singles).toEqual([1, 2]);
});

test('a preemptor cancelled during the grace period spares its victim', async () => {
  const b1 = spec('cx-1');
  const b2 = spec('cx-2');
  await submit(b1);
  await running(b1);
  await submit(b2);
  await running(b2);
  const premium = spec('cx-p', { tier: 'premium' });
  await submit(premium);
  await eventually(async () => ((await t.db.selectFrom('nominations').selectAll().execute()).length ? true : undefined), 'nomination');
  await h.client.cancel('acme/ml', 'cx-p');
  await new Promise((r) => setTimeout(r, GRACE_MS + 1500));
  expect((await status(b1)).epoch).toBe(1);
  expect((await status(b2)).epoch).toBe(1);
  expect((await status(b2)).phase).toBe('running');
});

test('a reservation opens and closes on time, lends idle capacity to basic work only, and refuses overbooking', async () => {
  const start = Date.now() + 1500;
  const r1 = {
    id: 'res-1',
    tenant: 'acme/a',
    acceleratorType: 'A100',
    devices: 8,
    startsAt: new Date(start).toISOString(),
    endsAt: new Date(start + 9000).toISOString(),
  };
  expect(await h.client.reserve(r1)).toMatchObject({ id: 'res-1', state: 'pending' });
  await expect(h.client.reserve({ ...r1, id: 'res-2', tenant: 'acme/b', devices: 12 })).rejects.toThrow(
    /reservation res-2: 12 A100 from .* would reserve 20 of the region's 16 A100 at .* \(overlaps res-1: 8\)/,
  );
  await expect(h.client.reserve({ ...r1, id: 'res-bad', devices: 0 })).rejects.toThrow('devices: 0 must be a positive integer');
  expect(await t.db.selectFrom('reservations').select('id').execute()).toEqual([{ id: 'res-1' }]);
  const res = () => t.db.selectFrom('reservations').select('state').where('id', '=', 'res-1').executeTakeFirstOrThrow();
  await eventually(async () => ((await res()).state === 'active' ? true : undefined), 'reservation active', 10_000);
  expect(Date.now()).toBeGreaterThanOrEqual(start - 100);
  // Others' standard work may not take the reserved half; their basic work may borrow it.
  const std = spec('rs-std', { tenant: 'globex/x', tier: 'standard', devices: 8, workers: 2 });
  await submit(std);
  await until(std, (st) => st.phase === 'waiting' && (st.waitingReason ?? '').includes('capacity reserved'), 'held by the reservation');
  const b1 = spec('rs-b1', { tenant: 'globex/x' });
  const b2 = spec('rs-b2', { tenant: 'globex/x' });
  await submit(b1);
  await running(b1);
  await submit(b2);
  await running(b2);
  // The owner arrives: basic work on its reservation is preempted for it.
  const owner = spec('rs-owner', { tenant: 'acme/a', tier: 'standard' });
  await submit(owner);
  await running(owner);
  expect([(await status(b1)).epoch, (await status(b2)).epoch].sort()).toEqual([1, 2]);
  await eventually(async () => ((await res()).state === 'ended' ? true : undefined), 'reservation ended', 15_000);
  expect(Date.now()).toBeGreaterThanOrEqual(start + 9000 - 100);
});
