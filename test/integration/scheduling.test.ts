// The lifecycle as services and operators see it, on a real Temporal dev server and PostgreSQL:
// admission policy, hierarchical quota, queue order with aging and backfill, and every operator
// action (cancel, requeue, setPriority, cordon, uncordon, drain) including refusals.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { sql } from 'kysely';
import { checkInvariants } from '../../db/invariants';
import { OperatorActionRefusedError } from '../../api/client';
import type { JobSpec, JobStatus } from '../../api/types';
import { requeueUpdate, setPriorityUpdate } from '../../api/messages';
import { requireTemporalBinary } from '../../scripts/temporal-server';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants, setQuota } from '../helpers/fleet';
import { NAMESPACE, eventually, jobProbes, startTemporal, type TemporalHarness } from '../helpers/temporal';

let t: TestDatabase;
let h: TemporalHarness;
let nodeNames: string[];
const run = promisify(execFile);

beforeAll(async () => {
  t = await createTestDatabase('sched');
  const ids = await seedFleet(t.db, { nodes: [['A100', 8, 2]] });
  nodeNames = (await t.db.selectFrom('nodes').select('name').where('id', 'in', ids).orderBy('id').execute()).map((n) => n.name);
  await seedTenants(t.db, ['acme/ml', 'acme/a', 'acme/b', 'globex/x']);
  h = await startTemporal('jobs-scheduling');
  await h.startWorker(t.db);
});
afterAll(async () => {
  await h?.teardown();
  await t?.drop();
});

let seq = 0;
const spec = (jobId: string, o: Partial<JobSpec> & { devices?: number; workers?: number } = {}): JobSpec => {
  const { devices = 8, workers = 1, ...rest } = o;
  return {
    jobId,
    tenant: 'acme/ml',
    tier: 'standard',
    priority: 0,
    durationMs: 60_000,
    request: { acceleratorTypes: ['A100'], workers, devicesPerWorker: devices, topology: 'any' },
    ...rest,
  };
};
const submitted: Array<[string, string]> = [];
const submit = async (s: JobSpec): Promise<void> => {
  submitted.push([s.tenant, s.jobId]);
  await h.client.submit(s);
};
const status = (s: JobSpec): Promise<JobStatus> => jobProbes(h).status(s);
const until = (s: JobSpec, ok: (st: JobStatus) => boolean, what: string, timeoutMs?: number): Promise<JobStatus> =>
  jobProbes(h).until(s, ok, what, timeoutMs);
const running = (s: JobSpec) => until(s, (st) => st.phase === 'running', 'running');
const waitingWith = (s: JobSpec, text: string) =>
  until(s, (st) => st.phase === 'waiting' && (st.waitingReason ?? '').includes(text), `waiting: ${text}`);
const row = (jobId: string) => t.db.selectFrom('jobs').selectAll().where('id', '=', jobId).executeTakeFirst();
const heldOn = async (jobId: string): Promise<string[]> =>
  (
    await t.db
      .selectFrom('allocations as a')
      .innerJoin('nodes as n', 'n.id', 'a.node_id')
      .select('n.name')
      .where('a.job_id', '=', jobId)
      .execute()
  ).map((r) => r.name);

/** Cancels whatever a test left running, then checks the inventory and quota invariants. */
afterEach(async () => {
  for (const [tenant, jobId] of submitted.splice(0)) {
    await h.client.cancel(tenant, jobId, 'test cleanup').catch((err) => {
      if (!(err instanceof OperatorActionRefusedError)) throw err;
    });
    await h.client.result(tenant, jobId);
  }
  await t.db.updateTable('nodes').set({ state: 'ready' }).execute();
  expect(await checkInvariants(t.db)).toEqual([]);
  expect(await t.db.selectFrom('allocations').select('id').execute()).toEqual([]);
});

describe('admission', () => {
  test('an unknown or inactive tenant, a refused tier, type or size is rejected with the reason, and nothing is queued', async () => {
    await t.db.insertInto('tenants').values({ path: 'dormant', parent: null, active: false }).execute();
    await seedTenants(t.db, ['globex/x'], { allowed_tiers: ['basic', 'standard'], allowed_types: ['A100'], max_devices_per_job: 8 });
    const cases: Array<[JobSpec, string]> = [
      [spec(`adm-${++seq}`, { tenant: 'nobody/here' }), 'tenant: nobody/here is not a registered tenant'],
      [spec(`adm-${++seq}`, { tenant: 'dormant' }), 'tenant: dormant is not active'],
      [
        spec(`adm-${++seq}`, { tenant: 'globex/x', tier: 'premium' }),
        'tier: premium is not allowed for globex/x (policy of globex/x allows basic, standard)',
      ],
      [
        spec(`adm-${++seq}`, { tenant: 'globex/x', devices: 4, workers: 3 }),
        'request: 12 devices exceed the limit of 8 per job for globex/x',
      ],
      [
        { ...spec(`adm-${++seq}`, { tenant: 'globex/x' }), allowedRegions: ['eu-west'] },
        'allowedRegions: eu-west is neither this region (test) nor one of its peers (none)',
      ],
    ];
    for (const [s, reason] of cases) {
      await h.client.submit(s);
      const result = await h.client.result(s.tenant, s.jobId);
      expect(result).toMatchObject({ outcome: 'rejected', reason: expect.stringContaining(reason) });
      const described = await h.client.temporal.workflow.getHandle(`job/${s.tenant}/${s.jobId}`).describe();
      const attrs = Object.fromEntries(described.typedSearchAttributes.getAll().map((p) => [p.key.name, p.value]));
      expect(attrs).toMatchObject({ JobState: 'rejected', WaitingReason: expect.stringContaining(reason.slice(0, 40)) });
      expect(await row(s.jobId)).toBeUndefined();
    }
  });

  test('a policy change applies to the next submission without a restart', async () => {
    await seedTenants(t.db, ['acme/b'], { allowed_types: ['H100'] });
    const first = spec(`adm-${++seq}`, { tenant: 'acme/b', devices: 1, durationMs: 200 });
    await h.client.submit(first);
    expect(await h.client.result('acme/b', first.jobId)).toMatchObject({
      outcome: 'rejected',
      reason: expect.stringContaining('A100 not allowed for acme/b'),
    });
    await t.db
      .updateTable('tenants')
      .set({ allowed_types: ['A100', 'H100'] })
      .where('path', '=', 'acme/b')
      .execute();
    const second = spec(`adm-${++seq}`, { tenant: 'acme/b', devices: 1, durationMs: 200 });
    await h.client.submit(second);
    expect((await h.client.result('acme/b', second.jobId)).outcome).toBe('completed');
    await t.db.updateTable('tenants').set({ allowed_types: null }).where('path', '=', 'acme/b').execute();
  });
});

describe('hierarchical quota', () => {
  afterAll(async () => {
    await t.db.deleteFrom('quotas').execute();
  });

  test('a team borrows idle nominal from its cohort up to its borrowing limit; the lender keeps what it does not lend', async () => {
    await setQuota(t.db, 'acme', 'A100', 16);
    await setQuota(t.db, 'acme/a', 'A100', 8, { borrowing: 4 });
    await setQuota(t.db, 'acme/b', 'A100', 8, { lending: 4 });
    const a1 = spec('qa-1', { tenant: 'acme/a', devices: 8 });
    const a2 = spec('qa-2', { tenant: 'acme/a', devices: 4 });
    const a3 = spec('qa-3', { tenant: 'acme/a', devices: 1 });
    for (const s of [a1, a2]) {
      await submit(s);
      await running(s);
    }
    // acme/a now holds 12 of nominal 8: 4 borrowed from acme/b's idle nominal.
    await submit(a3);
    const waits = await waitingWith(a3, 'over quota');
    expect(waits.waitingReason).toBe('A100: over quota: acme/a uses 12 of nominal 8 A100, borrowing limit 4 reached');
    const [q] = await t.db.selectFrom('quotas').select('used_milli').where('tenant', '=', 'acme/a').execute();
    expect(Number(q.used_milli)).toBe(12_000);
    // acme/b's unlendable half (nominal 8 − lending limit 4) is still there for it.
    const b1 = spec('qb-1', { tenant: 'acme/b', devices: 4 });
    await submit(b1);
    await running(b1);
    const described = await h.client.temporal.workflow.getHandle('job/acme/a/qa-3').describe();
    expect(described.typedSearchAttributes.getAll().find((p) => p.key.name === 'WaitingReason')?.value).toContain(
      'borrowing limit 4 reached',
    );
    // When a1 finishes, a3 fits within acme/a's own nominal.
    await h.client.cancel('acme/a', 'qa-1');
    await running(a3);
    expect(await checkInvariants(t.db)).toEqual([]);
  });
});

describe('queue order', () => {
  test('a later premium job is placed before an earlier basic one', async () => {
    // A premium blocker: never preempted, so the order is decided by the queue alone.
    const blocker = spec('ord-blocker', { tier: 'premium', devices: 8, workers: 2 });
    await submit(blocker);
    await running(blocker);
    const low = spec('ord-low', { tier: 'basic', devices: 8, workers: 2 });
    const high = spec('ord-high', { tier: 'premium', devices: 8, workers: 2 });
    await submit(low);
    await waitingWith(low, 'no room');
    await submit(high);
    await waitingWith(high, 'no room');
    await h.client.cancel('acme/ml', 'ord-blocker');
    await running(high);
    expect((await status(low)).phase).toBe('waiting');
  });

  test('aging lets a long-waiting basic job through ahead of a fresh standard one', async () => {
    const blocker = spec('age-blocker', { devices: 8, workers: 2 });
    await submit(blocker);
    await running(blocker);
    const old = spec('age-old', { tier: 'basic', devices: 8, workers: 2 });
    await submit(old);
    await waitingWith(old, 'no room');
    // It has waited three hours (50 points a minute outweighs the 1000-point tier step).
    await sql`UPDATE jobs SET enqueued_at = now() - interval '3 hours' WHERE id = 'age-old'`.execute(t.db);
    const fresh = spec('age-fresh', { tier: 'standard', priority: 900, devices: 8, workers: 2 });
    await submit(fresh);
    await waitingWith(fresh, 'held for higher-ranked job age-old');
    await h.client.cancel('acme/ml', 'age-blocker');
    await running(old);
    expect((await status(fresh)).phase).toBe('waiting');
  });

  test('a small job backfills only if it ends before the blocked head job could start', async () => {
    const blocker = spec('bf-blocker', { tier: 'premium', devices: 6, workers: 2, durationMs: 60_000 });
    await submit(blocker);
    await running(blocker);
    const head = spec('bf-head', { tier: 'premium', devices: 8 });
    await submit(head);
    await waitingWith(head, 'no room');
    const long = spec('bf-long', { tier: 'basic', devices: 2, durationMs: 600_000 });
    const short = spec('bf-short', { tier: 'basic', devices: 2, durationMs: 3_000 });
    await submit(long);
    await submit(short);
    const held = await waitingWith(long, 'held for higher-ranked job bf-head');
    expect(held.waitingReason).toMatch(
      /needs 8 A100, expected to start by \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); this job's 600s would delay it/,
    );
    await until(short, (st) => st.phase === 'running' || st.phase === 'completed', 'backfilled');
    expect((await status(head)).phase).toBe('waiting');
  });
});

describe('operator control', () => {
  test('setPriority reorders the queue; a bad priority is refused by the workflow and changes nothing', async () => {
    const blocker = spec('pri-blocker', { devices: 8, workers: 2 });
    await submit(blocker);
    await running(blocker);
    const first = spec('pri-first', { devices: 8, workers: 2 });
    const second = spec('pri-second', { devices: 8, workers: 2 });
    await submit(first);
    await waitingWith(first, 'no room');
    await submit(second);
    await waitingWith(second, 'held for higher-ranked job pri-first');
    const handle = h.client.temporal.workflow.getHandle('job/acme/ml/pri-second');
    const refused = handle.executeUpdate(setPriorityUpdate, { args: [5000] });
    await expect(refused).rejects.toThrow(WorkflowUpdateFailedError);
    await expect(refused).rejects.toMatchObject({
      cause: { message: expect.stringContaining('priority: 5000 must be an integer from 0 to 1000') },
    });
    expect((await row('pri-second'))?.priority).toBe(0);
    expect((await status(second)).priority).toBe(0);
    const after = await h.client.setPriority('acme/ml', 'pri-second', 700);
    expect(after.priority).toBe(700);
    expect((await row('pri-second'))?.priority).toBe(700);
    await h.client.cancel('acme/ml', 'pri-blocker');
    await running(second);
    expect((await status(first)).phase).toBe('waiting');
  });

  test("each action is accepted or refused according to the job's state", async () => {
    const blocker = spec('st-blocker', { devices: 8, workers: 2 });
    await submit(blocker);
    await running(blocker);
    const waiting = spec('st-waiting', { devices: 1 });
    await submit(waiting);
    await waitingWith(waiting, 'no room');
    // Waiting: requeue refused, priority accepted.
    await expect(h.client.requeue('acme/ml', 'st-waiting')).rejects.toThrow(
      'requeue: job st-waiting is waiting; only a placed or running job can be requeued',
    );
    await expect(h.client.setPriority('acme/ml', 'st-waiting', 10)).resolves.toMatchObject({ priority: 10 });
    // Running: bad update arguments refused before anything changes.
    await expect(
      h.client.temporal.workflow.getHandle('job/acme/ml/st-blocker').executeUpdate(requeueUpdate, { args: [42 as never] }),
    ).rejects.toMatchObject({ cause: { message: 'requeue: reason 42 must be a string' } });
    expect((await status(blocker)).epoch).toBe(1);
    // Finished: every action refused, the result unchanged.
    await h.client.cancel('acme/ml', 'st-blocker');
    expect((await h.client.result('acme/ml', 'st-blocker')).outcome).toBe('cancelled');
    await expect(h.client.cancel('acme/ml', 'st-blocker')).rejects.toThrow('cancel: job st-blocker is already cancelled');
    await expect(h.client.requeue('acme/ml', 'st-blocker')).rejects.toThrow(OperatorActionRefusedError);
    await expect(h.client.setPriority('acme/ml', 'st-blocker', 3)).rejects.toThrow('setPriority: job st-blocker is already cancelled');
    expect((await h.client.result('acme/ml', 'st-blocker')).outcome).toBe('cancelled');
  });

  test('requeue sends a running job back with its queue position and, if checkpointable, its progress', async () => {
    const s = spec('rq-1', { devices: 4, durationMs: 8_000, checkpointable: true });
    await submit(s);
    await running(s);
    // `running` means the run was asked for; wait until the executor has it, then let it progress.
    await eventually(
      async () => (await t.db.selectFrom('executions').select('epoch').where('job_id', '=', 'rq-1').executeTakeFirst()) ?? undefined,
      'rq-1 launched',
    );
    const before = await row('rq-1');
    await new Promise((r) => setTimeout(r, 1500));
    await h.client.requeue('acme/ml', 'rq-1', 'operator wants it moved');
    const again = await until(s, (st) => st.epoch === 2 && st.phase === 'running', 'running at epoch 2');
    expect(again.lastRequeue).toBe('operator wants it moved');
    expect(again.checkpointMs).toBeGreaterThan(1000);
    const after = await row('rq-1');
    expect(after?.enqueued_at.getTime()).toBe(before?.enqueued_at.getTime());
    expect(after?.epoch).toBe(2);
    // `running` means the run was asked for; the executor records the launch a moment later.
    const execs = await eventually(async () => {
      const rows = await t.db
        .selectFrom('executions')
        .select(['epoch', 'state', 'checkpoint_ms'])
        .where('job_id', '=', 'rq-1')
        .orderBy('epoch')
        .execute();
      return rows.length === 2 ? rows : undefined;
    }, "rq-1's second run launched");
    expect(execs[0]).toMatchObject({ epoch: 1, state: 'stopped' });
    expect(Number(execs[1].checkpoint_ms)).toBeGreaterThan(1000); // bigint, read as a string
    expect((await h.client.result('acme/ml', 'rq-1')).outcome).toBe('completed');
  });

  test('cordon keeps new work off a node; drain also moves its jobs; a node going down requeues its job', async () => {
    const [n0, n1] = nodeNames;
    expect(await h.client.cordon(n0)).toMatchObject({ node: n0, state: 'cordoned' });
    const a = spec('node-a', { devices: 4 });
    await submit(a);
    await running(a);
    expect(await heldOn('node-a')).toEqual([n1, n1, n1, n1]);
    await h.client.uncordon(n0);
    // Drain n1: its job is requeued and lands on n0.
    const drained = await h.client.drain(n1);
    expect(drained).toEqual({ node: n1, state: 'draining', requeued: ['node-a'] });
    const moved = await until(a, (st) => st.epoch === 2 && st.phase === 'running', 'moved off the drained node');
    expect(moved.lastRequeue).toBe(`node ${n1} is draining`);
    expect(await heldOn('node-a')).toEqual([n0, n0, n0, n0]);
    await h.client.uncordon(n1);
    // n0 fails under it: the executor sees the node down and the job goes back to the queue.
    await t.db.updateTable('nodes').set({ state: 'down' }).where('name', '=', n0).execute();
    const recovered = await until(a, (st) => st.epoch === 3 && st.phase === 'running', 'requeued after node loss');
    expect(recovered.lastRequeue).toBe(`node down: ${n0}`);
    expect(await heldOn('node-a')).toEqual([n1, n1, n1, n1]);
    // The lost run was told to stop (a gang's workers on live nodes would run on) before its devices went back.
    const history = await h.client.temporal.workflow.getHandle('job/acme/ml/node-a').fetchHistory();
    const stops = (history.events ?? [])
      .filter((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'stopRun')
      .map((e) => JSON.parse(Buffer.from(e.activityTaskScheduledEventAttributes!.input!.payloads![2].data!).toString('utf8')) as string);
    expect(stops).toContain(`lost: node down: ${n0}`);
    await expect(h.client.cordon('no-such-node')).rejects.toThrow('node "no-such-node" does not exist');
  });

  test("a failed attempt is retried under the job's retry policy, then given up", async () => {
    const retried = spec('fail-once', { devices: 1, durationMs: 600, maxAttempts: 2, simulatedFailures: 1 });
    const gaveUp = spec('fail-twice', { devices: 1, durationMs: 600, maxAttempts: 2, simulatedFailures: 2 });
    await submit(retried);
    await submit(gaveUp);
    expect(await h.client.result('acme/ml', 'fail-once')).toMatchObject({ outcome: 'completed' });
    expect((await status(retried)).attempt).toBe(2);
    expect(await h.client.result('acme/ml', 'fail-twice')).toMatchObject({
      outcome: 'failed',
      reason: 'attempt 2 of 2 failed: simulated failure at 300 ms',
    });
    expect((await row('fail-twice'))?.state).toBe('failed');
  });

  test('a job that cannot be placed within maxWaitMs fails with its last waiting reason', async () => {
    const blocker = spec('mw-blocker', { devices: 8, workers: 2 });
    await submit(blocker);
    await running(blocker);
    const s = spec('mw-1', { devices: 8, maxWaitMs: 1500 });
    await submit(s);
    expect(await h.client.result('acme/ml', 'mw-1')).toMatchObject({
      outcome: 'failed',
      reason: expect.stringContaining('not placed within maxWaitMs 1500: A100: no room'),
    });
  });

  test('the Temporal CLI commands in the README reach the same updates', async () => {
    const blocker = spec('cli-blocker', { devices: 8, workers: 2 });
    await submit(blocker);
    await running(blocker);
    const s = spec('cli-1', { devices: 1 });
    await submit(s);
    await waitingWith(s, 'no room');
    const cli = (...args: string[]) => run(requireTemporalBinary(), [...args, '--address', h.address, '--namespace', NAMESPACE]);
    await cli('workflow', 'update', 'execute', '--workflow-id', 'job/acme/ml/cli-1', '--name', 'setPriority', '--input', '250');
    expect((await row('cli-1'))?.priority).toBe(250);
    await expect(
      cli('workflow', 'update', 'execute', '--workflow-id', 'job/acme/ml/cli-1', '--name', 'requeue', '--input', '"why not"'),
    ).rejects.toThrow(/only a placed or running job can be requeued/);
    await cli(
      'workflow',
      'update',
      'execute',
      '--workflow-id',
      'scheduler/test',
      '--name',
      'cordon',
      '--input',
      JSON.stringify(nodeNames[0]),
    );
    expect((await t.db.selectFrom('nodes').select('state').where('name', '=', nodeNames[0]).executeTakeFirstOrThrow()).state).toBe(
      'cordoned',
    );
    await cli('workflow', 'update', 'execute', '--workflow-id', 'job/acme/ml/cli-1', '--name', 'cancel', '--input', '"on-call"');
    expect((await h.client.result('acme/ml', 'cli-1')).outcome).toBe('cancelled');
  });
});

test('the region scheduler continues as new and keeps scheduling across runs', async () => {
  // Restart the scheduler with tiny per-run limits, so a few kicks make it continue as new.
  const handle = h.client.temporal.workflow.getHandle('scheduler/test');
  await handle.terminate('test: restart with small per-run limits').catch((err: Error) => {
    if (err.name !== 'WorkflowNotFoundError') throw err; // not started yet when this test runs alone
  });
  await h.client.temporal.workflow.start('RegionSchedulerWorkflow', {
    workflowId: 'scheduler/test',
    taskQueue: `${h.taskQueue}-scheduler`,
    args: [{ region: 'test', cyclesPerRun: 2, kicksPerRun: 3 }],
  });
  const firstRun = (await handle.describe()).runId;
  // Each job takes the whole fleet, so all but the first wait for the scheduler, which places
  // them one after another as each release wakes it.
  const jobs = Array.from({ length: 6 }, (_, i) => spec(`can-${i}`, { devices: 8, workers: 2, durationMs: 300 }));
  await Promise.all(jobs.map(submit));
  for (const s of jobs) expect((await h.client.result(s.tenant, s.jobId)).outcome).toBe('completed');
  const described = await handle.describe();
  expect(described.runId).not.toBe(firstRun);
  expect(described.status.name).toBe('RUNNING');
  const st = await h.client.schedulerStatus();
  // Every job but the first was placed by a cycle (the first on admission).
  expect(st.cycles).toBeGreaterThanOrEqual(jobs.length - 1);
});
