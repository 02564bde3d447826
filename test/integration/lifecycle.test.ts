// The job lifecycle through a real Temporal dev server and the real PostgreSQL allocator.
import { checkInvariants } from '../../db/invariants';
import { InvalidJobSpecError } from '../../api/client';
import type { JobSpec } from '../../api/types';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { eventually, startTemporal, type TemporalHarness } from '../helpers/temporal';

let t: TestDatabase;
let h: TemporalHarness;

beforeAll(async () => {
  t = await createTestDatabase('life');
  await seedFleet(t.db, { nodes: [['A100', 8, 2]] });
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('jobs-lifecycle');
  await h.startWorker(t.db);
});
afterAll(async () => {
  await h?.teardown();
  await t?.drop();
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
const jobState = async (jobId: string): Promise<string | undefined> =>
  (await t.db.selectFrom('jobs').select('state').where('id', '=', jobId).executeTakeFirst())?.state;

describe('job lifecycle on Temporal', () => {
  afterEach(async () => {
    expect(await checkInvariants(t.db)).toEqual([]);
  });

  test('a job is placed, runs, completes and releases its devices', async () => {
    await h.client.submit(spec('happy-1'));
    const result = await h.client.result('acme/ml', 'happy-1');
    expect(result.outcome).toBe('completed');
    expect(result.placement?.workers[0].deviceIdx).toHaveLength(4);
    expect(await held('happy-1')).toBe(0);
    expect(await jobState('happy-1')).toBe('completed');
    const described = await h.client.temporal.workflow.getHandle('job/acme/ml/happy-1').describe();
    expect(described.typedSearchAttributes.getAll().map((p) => [p.key.name, p.value])).toEqual(
      expect.arrayContaining([
        ['JobState', 'completed'],
        ['Tenant', 'acme/ml'],
        ['Tier', 'standard'],
        ['JobId', 'happy-1'],
        ['AcceleratorType', 'A100'],
      ]),
    );
  });

  test('in an idle region a job is placed on admission, in its first workflow task, with one activity for the run', async () => {
    await h.client.submit(spec('fast-1'));
    expect((await h.client.result('acme/ml', 'fast-1')).outcome).toBe('completed');
    const { events } = await h.client.temporal.workflow.getHandle('job/acme/ml/fast-1').fetchHistory();
    const count = (has: (e: NonNullable<typeof events>[number]) => unknown): number => (events ?? []).filter(has).length;
    // Admission and placement: a local activity's marker; the run: the only activity task.
    // (The other marker, `core_patch`, records the global-handoff patch in the same task.)
    expect(count((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity')).toBe(1);
    expect(count((e) => e.activityTaskScheduledEventAttributes?.activityType?.name)).toBe(1);
    expect(
      (events ?? []).find((e) => e.activityTaskScheduledEventAttributes)?.activityTaskScheduledEventAttributes?.activityType?.name,
    ).toBe('runJob');
    // The run was scheduled by the first workflow task: nothing waited for a scheduling cycle.
    const firstTaskDone = (events ?? []).findIndex((e) => e.workflowTaskCompletedEventAttributes);
    const runScheduled = (events ?? []).findIndex((e) => e.activityTaskScheduledEventAttributes);
    expect(runScheduled).toBeGreaterThan(firstTaskDone);
    expect((events ?? []).slice(0, runScheduled).filter((e) => e.workflowTaskCompletedEventAttributes).length).toBe(1);
  });

  test('a job still being admitted elsewhere is not a queue: the next job is placed on admission too', async () => {
    // Another admission caught between recording its job and placing it.
    await t.db
      .insertInto('jobs')
      .values({
        id: 'mid-admission',
        tenant: 'acme/ml',
        tier: 'basic',
        region: 'test',
        workflow_id: 'elsewhere',
        spec: '{}',
        state: 'submitted',
        epoch: 1,
      })
      .execute();
    try {
      await h.client.submit(spec('after-mid'));
      expect((await h.client.result('acme/ml', 'after-mid')).outcome).toBe('completed');
      const { events } = await h.client.temporal.workflow.getHandle('job/acme/ml/after-mid').fetchHistory();
      // A queued job is placed by a scheduling cycle, which delivers the placement as a signal.
      expect((events ?? []).filter((e) => e.workflowExecutionSignaledEventAttributes)).toEqual([]);
      expect((events ?? []).filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_local_activity')).toHaveLength(1);
    } finally {
      await t.db.deleteFrom('jobs').where('id', '=', 'mid-admission').execute();
    }
  });

  test('a job that arrives while another waits joins the queue behind it', async () => {
    await h.client.submit(
      spec('q-blocker', { durationMs: 60_000, request: { acceleratorTypes: ['A100'], workers: 2, devicesPerWorker: 8, topology: 'any' } }),
    );
    await eventually(
      async () => ((await h.client.status('acme/ml', 'q-blocker')).phase === 'running' ? true : undefined),
      'blocker running',
    );
    await h.client.submit(spec('q-first'));
    await eventually(async () => ((await h.client.status('acme/ml', 'q-first')).phase === 'waiting' ? true : undefined), 'first waiting');
    await h.client.submit(spec('q-second'));
    const second = await eventually(async () => {
      const s = await h.client.status('acme/ml', 'q-second');
      return s.phase === 'waiting' ? s : undefined;
    }, 'second waiting');
    expect(second.waitingReason).toMatch(/queued|no room/);
    expect(await jobState('q-second')).toBe('waiting');
    await h.client.cancel('acme/ml', 'q-blocker');
    for (const id of ['q-first', 'q-second']) expect((await h.client.result('acme/ml', id)).outcome).toBe('completed');
    const placedAt = async (id: string) =>
      (await t.db.selectFrom('jobs').select('placed_at').where('id', '=', id).executeTakeFirstOrThrow()).placed_at!.getTime();
    expect(await placedAt('q-first')).toBeLessThanOrEqual(await placedAt('q-second'));
  });

  test('a job cancelled while running stops and releases its devices', async () => {
    await h.client.submit(spec('cancel-running', { durationMs: 60_000 }));
    await eventually(async () => ((await h.client.status('acme/ml', 'cancel-running')).phase === 'running' ? true : undefined), 'running');
    expect(await held('cancel-running')).toBe(4);
    await h.client.cancel('acme/ml', 'cancel-running', 'operator test');
    const result = await h.client.result('acme/ml', 'cancel-running');
    expect(result.outcome).toBe('cancelled');
    expect(await held('cancel-running')).toBe(0);
    expect(await jobState('cancel-running')).toBe('cancelled');
  });

  test('a job cancelled while waiting for capacity never holds devices', async () => {
    await h.client.submit(
      spec('blocker', { durationMs: 60_000, request: { acceleratorTypes: ['A100'], workers: 2, devicesPerWorker: 8, topology: 'any' } }),
    );
    await eventually(async () => ((await h.client.status('acme/ml', 'blocker')).phase === 'running' ? true : undefined), 'blocker running');
    await h.client.submit(spec('cancel-waiting'));
    const waiting = await eventually(async () => {
      const s = await h.client.status('acme/ml', 'cancel-waiting');
      return s.phase === 'waiting' && s.waitingReason?.includes('no room') ? s : undefined;
    }, 'waiting with a reason');
    expect(waiting.waitingReason).toContain('no room for 1×4 of A100');
    const ids: string[] = [];
    await eventually(async () => {
      ids.length = 0;
      for await (const wf of h.client.temporal.workflow.list({ query: `JobState = "waiting" AND Tenant = "acme/ml"` }))
        ids.push(wf.workflowId);
      return ids.includes('job/acme/ml/cancel-waiting') ? true : undefined;
    }, 'the waiting job to be found by search attributes');
    await h.client.cancel('acme/ml', 'cancel-waiting');
    expect((await h.client.result('acme/ml', 'cancel-waiting')).outcome).toBe('cancelled');
    expect(await held('cancel-waiting')).toBe(0);
    await h.client.cancel('acme/ml', 'blocker');
    expect((await h.client.result('acme/ml', 'blocker')).outcome).toBe('cancelled');
  });

  test('an invalid spec is refused by the client with the field and the rule, and nothing is written', async () => {
    const bad = spec('bad-1', { request: { acceleratorTypes: ['A100'], workers: 0, devicesPerWorker: 4, topology: 'any' } });
    await expect(h.client.submit(bad)).rejects.toThrow(InvalidJobSpecError);
    await expect(h.client.submit(bad)).rejects.toThrow('request.workers: 0 must be an integer from 1 to 1024');
    expect(await jobState('bad-1')).toBeUndefined();
  });

  test('an invalid spec that reaches the workflow is rejected durably, with nothing written', async () => {
    await h.client.submit(spec('bad-2', { tier: 'gold' as never }), { validate: false });
    const result = await h.client.result('acme/ml', 'bad-2');
    expect(result).toMatchObject({
      outcome: 'rejected',
      reason: expect.stringContaining('tier: "gold" must be one of premium, standard, basic'),
    });
    expect(await jobState('bad-2')).toBeUndefined();
  });

  test("a request for an unknown accelerator type is rejected with the allocator's reason and holds nothing", async () => {
    await h.client.submit(spec('bad-3', { request: { acceleratorTypes: ['H900'], workers: 1, devicesPerWorker: 1, topology: 'any' } }));
    const result = await h.client.result('acme/ml', 'bad-3');
    expect(result).toMatchObject({ outcome: 'rejected', reason: expect.stringContaining('unknown accelerator type "H900"') });
    expect(await jobState('bad-3')).toBeUndefined();
    expect(await held('bad-3')).toBe(0);
  });

  test('a job its tenant policy refuses leaves no row behind, and runs under the same id once the policy allows it', async () => {
    await seedTenants(t.db, ['paused/team'], { active: false });
    const s = spec('refused-1', { tenant: 'paused/team' });
    await h.client.submit(s);
    expect(await h.client.result('paused/team', 'refused-1')).toMatchObject({
      outcome: 'rejected',
      reason: expect.stringContaining('not active'),
    });
    expect(await jobState('refused-1')).toBeUndefined();
    await t.db.updateTable('tenants').set({ active: true }).where('path', '=', 'paused/team').execute();
    await h.client.submit(s);
    expect((await h.client.result('paused/team', 'refused-1')).outcome).toBe('completed');
    expect(await jobState('refused-1')).toBe('completed');
    expect(await held('refused-1')).toBe(0);
  });

  test('submitting the same job twice starts one workflow', async () => {
    const a = await h.client.submit(spec('twice-1'));
    const b = await h.client.submit(spec('twice-1'));
    expect(a).toBe(b);
    expect((await h.client.result('acme/ml', 'twice-1')).outcome).toBe('completed');
  });
});
