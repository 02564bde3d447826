// Job workflows that end without their cleanup (terminated by an operator, reset, cut at the
// history limit): release only runs in the workflow's own `finally`, so before the reconciler
// their devices, their queue rows and the capacity nominated to them stayed taken for good.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'kysely';
import { checkInvariants } from '../../db/invariants';
import { allocationsWithoutLiveWorkflow } from '../../activities/reconcile';
import { reconcilerStatusQuery } from '../../api/reconciler';
import { reconcilerWorkflowId } from '../../api/ids';
import type { JobSpec } from '../../api/types';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { REGION, eventually, startTemporal, type TemporalHarness } from '../helpers/temporal';

let t: TestDatabase;
let h: TemporalHarness;

beforeAll(async () => {
  t = await createTestDatabase('reconcile');
  await seedFleet(t.db, { nodes: [['A100', 8, 2]] });
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('jobs-reconcile');
  await h.startWorker(t.db, undefined, { reconcile: { everyMs: 1000, graceMs: 1500 } });
});
afterAll(async () => {
  await h?.teardown();
  await t?.drop();
});
afterEach(async () => {
  expect(await checkInvariants(t.db)).toEqual([]);
  expect(await allocationsWithoutLiveWorkflow(t.db, h.client.temporal)).toEqual([]);
});

const spec = (jobId: string, o: Partial<JobSpec> = {}, devices = 4): JobSpec => ({
  jobId,
  tenant: 'acme/ml',
  tier: 'standard',
  priority: 5,
  durationMs: 600_000,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: devices, topology: 'any' },
  ...o,
});
const held = async (jobId: string): Promise<number> =>
  (await t.db.selectFrom('allocations').select('id').where('job_id', '=', jobId).execute()).length;
const row = (jobId: string) => t.db.selectFrom('jobs').select(['state', 'waiting_reason']).where('id', '=', jobId).executeTakeFirst();
const phase = async (jobId: string) => (await h.client.status('acme/ml', jobId)).phase;
const terminate = (jobId: string) => h.client.temporal.workflow.getHandle(`job/acme/ml/${jobId}`).terminate('test: ended without cleanup');

test('a running job whose workflow is terminated is released by the reconciler, and its devices serve the next job', async () => {
  await h.client.submit(spec('term-run', {}, 8));
  await eventually(async () => ((await phase('term-run')) === 'running' ? true : undefined), 'term-run running');
  expect(await held('term-run')).toBe(8);
  await terminate('term-run');
  // Invariant 4 is broken now, until the reconciler's next pass.
  const freed = await eventually(async () => {
    const r = await row('term-run');
    return r?.state === 'failed' ? r : undefined;
  }, 'the reconciler to release term-run');
  expect(freed.waiting_reason).toMatch(
    /its workflow job\/acme\/ml\/term-run is terminated and never released the job \(released by the reconciler\)/,
  );
  expect(await held('term-run')).toBe(0);
  // The pass that released it reports it once it returns.
  await eventually(async () => {
    const status = await h.client.temporal.workflow.getHandle(reconcilerWorkflowId(REGION)).query(reconcilerStatusQuery);
    return status.released >= 1 && status.last !== undefined ? true : undefined;
  }, 'the reconciler to report the release');
  // The freed devices are placed again.
  await h.client.submit(spec('after-run', { durationMs: 500 }, 8));
  await h.client.submit(spec('after-run-2', { durationMs: 500 }, 8));
  expect((await h.client.result('acme/ml', 'after-run')).outcome).toBe('completed');
  expect((await h.client.result('acme/ml', 'after-run-2')).outcome).toBe('completed');
});

test('a waiting job whose workflow is terminated is never handed devices it cannot use', async () => {
  await h.client.submit(spec('blocker', {}, 8));
  await h.client.submit(spec('blocker-2', {}, 8));
  await eventually(async () => ((await phase('blocker-2')) === 'running' ? true : undefined), 'the fleet full');
  await h.client.submit(spec('term-wait', { durationMs: 500 }, 8));
  await eventually(async () => ((await phase('term-wait')) === 'waiting' ? true : undefined), 'term-wait waiting');
  await terminate('term-wait');
  await h.client.cancel('acme/ml', 'blocker', 'free a node');
  await h.client.result('acme/ml', 'blocker');
  const gone = await eventually(async () => {
    const r = await row('term-wait');
    return r?.state === 'failed' ? r : undefined;
  }, 'term-wait ended as failed');
  expect(gone.waiting_reason).toMatch(/job\/acme\/ml\/term-wait (had ended when its placement was delivered|is terminated)/);
  expect(await held('term-wait')).toBe(0);
  // The node it would have taken runs the next job.
  await h.client.submit(spec('after-wait', { durationMs: 500 }, 8));
  expect((await h.client.result('acme/ml', 'after-wait')).outcome).toBe('completed');
  await h.client.cancel('acme/ml', 'blocker-2', 'test done');
  await h.client.result('acme/ml', 'blocker-2');
});

test('capacity nominated to a job that no longer waits is given back', async () => {
  await h.client.submit(spec('nom-done', { durationMs: 200 }));
  await h.client.result('acme/ml', 'nom-done');
  const node = await t.db.selectFrom('nodes').select('id').orderBy('id').executeTakeFirstOrThrow();
  // A nomination left for a preemptor that has finished (as a lost cleanup would leave it).
  await sql`INSERT INTO nominations (preemptor, victim, node_id) VALUES ('nom-done', 'after-wait', ${node.id})`.execute(t.db);
  await eventually(
    async () => ((await t.db.selectFrom('nominations').select('preemptor').execute()).length === 0 ? true : undefined),
    'the nomination dropped',
  );
});

describe('quota usage follows the rules', () => {
  const used = async (tenant: string): Promise<number | undefined> => {
    const q = await t.db
      .selectFrom('quotas')
      .select('used_milli')
      .where('tenant', '=', tenant)
      .where('accelerator_type', '=', 'A100')
      .executeTakeFirst();
    return q === undefined ? undefined : Number(q.used_milli);
  };

  test('a rule added while the tenant runs jobs starts at what they hold, so the tenant cannot go past it', async () => {
    await h.client.submit(spec('q-run', {}, 8));
    await eventually(async () => ((await phase('q-run')) === 'running' ? true : undefined), 'q-run running');
    await t.db
      .insertInto('quotas')
      .values({ tenant: 'acme', accelerator_type: 'A100', nominal: 8, borrowing_limit: 0, lending_limit: null })
      .execute();
    expect(await used('acme')).toBe(8000);
    // Eight more would put acme at 16 of its 8: refused by quota, not placed on the free node.
    await h.client.submit(spec('q-over', { durationMs: 500 }, 8));
    const waiting = await eventually(async () => {
      const st = await h.client.status('acme/ml', 'q-over');
      return st.phase === 'waiting' && /over quota/.test(st.waitingReason ?? '') ? st : undefined;
    }, 'q-over held by quota');
    expect(waiting.waitingReason).toMatch(/acme uses 8 of nominal 8 A100/);
    await h.client.cancel('acme/ml', 'q-over', 'test done');
    await h.client.result('acme/ml', 'q-over');
  });

  test('a rule removed and added again while a job holds devices: its release still frees them', async () => {
    await t.db.deleteFrom('quotas').where('tenant', '=', 'acme').execute();
    await t.db
      .insertInto('quotas')
      .values({ tenant: 'acme', accelerator_type: 'A100', nominal: 16, borrowing_limit: 0, lending_limit: null })
      .execute();
    expect(await used('acme')).toBe(8000);
    await h.client.cancel('acme/ml', 'q-run', 'test done');
    expect((await h.client.result('acme/ml', 'q-run')).outcome).toBe('cancelled');
    expect(await held('q-run')).toBe(0);
    expect(await used('acme')).toBe(0);
  });

  test('usage that drifted from what holds devices is repaired by the reconciler', async () => {
    await h.client.submit(spec('q-drift', {}, 4));
    await eventually(async () => ((await phase('q-drift')) === 'running' ? true : undefined), 'q-drift running');
    await sql`UPDATE quotas SET used_milli = 12000 WHERE tenant = 'acme'`.execute(t.db);
    await eventually(async () => ((await used('acme')) === 4000 ? true : undefined), 'the reconciler to repair acme');
    await h.client.cancel('acme/ml', 'q-drift', 'test done');
    await h.client.result('acme/ml', 'q-drift');
    expect(await used('acme')).toBe(0);
    await t.db.deleteFrom('quotas').where('tenant', '=', 'acme').execute();
  });
});

test('a drain does not wait on a job whose workflow never answers, and scheduling goes on', async () => {
  const node = await t.db.selectFrom('nodes').select(['id', 'name']).orderBy('id').executeTakeFirstOrThrow();
  // A job holding 4 devices on the node whose workflow runs nowhere (no worker polls its queue):
  // it accepts no update, as a workflow stuck on a failing task would.
  const wedged = spec('wedged');
  await h.client.temporal.workflow.start('JobWorkflow', {
    workflowId: 'job/acme/ml/wedged',
    taskQueue: 'nowhere',
    args: [{ spec: wedged, region: REGION }],
  });
  await sql`INSERT INTO jobs (id, tenant, tier, priority, region, workflow_id, spec, state, epoch)
    VALUES ('wedged', 'acme/ml', 'standard', 5, ${REGION}, 'job/acme/ml/wedged', ${JSON.stringify(wedged)}::jsonb, 'running', 1)`.execute(
    t.db,
  );
  await sql`INSERT INTO allocations (job_id, epoch, node_id, device_idx, milli, worker_idx) SELECT 'wedged', 1, ${node.id}, d, 1000, 0 FROM generate_series(0, 3) d`.execute(
    t.db,
  );
  const drained = await h.client.drain(node.name);
  expect(drained).toMatchObject({ node: node.name, state: 'draining', requeued: [], unanswered: ['wedged'] });
  // The region goes on scheduling (on the other node).
  await h.client.submit(spec('after-drain', { durationMs: 500 }, 8));
  expect((await h.client.result('acme/ml', 'after-drain')).outcome).toBe('completed');
  // Its workflow ended without cleanup: the reconciler gives its devices back.
  await h.client.temporal.workflow.getHandle('job/acme/ml/wedged').terminate('test done');
  await eventually(async () => ((await held('wedged')) === 0 ? true : undefined), 'the wedged job released');
  await h.client.uncordon(node.name);
});

test('a cancel while a requeue releases the job is taken, and the job ends cancelled instead of running again', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fp-'));
  Object.assign(process.env, { SCHED_FAILPOINTS: 'job.requeue', SCHED_FAILPOINT_DIR: dir, SCHED_FAILPOINT_ACTION: 'pause' });
  try {
    await h.client.submit(spec('rq-cancel', {}, 4));
    await eventually(async () => ((await phase('rq-cancel')) === 'running' ? true : undefined), 'rq-cancel running');
    await h.client.requeue('acme/ml', 'rq-cancel', 'move it');
    await eventually(
      async () => (fs.existsSync(path.join(dir, 'job.requeue.reached')) ? true : undefined),
      'the requeue to start its release',
    );
    expect(await phase('rq-cancel')).toBe('releasing');
    // Refused before ("already releasing"), and the job then ran again.
    expect(await h.client.cancel('acme/ml', 'rq-cancel', 'stop it')).toMatchObject({ cancelRequested: true });
    fs.writeFileSync(path.join(dir, 'job.requeue.release'), '');
    expect(await h.client.result('acme/ml', 'rq-cancel')).toMatchObject({ outcome: 'cancelled' });
    expect(await held('rq-cancel')).toBe(0);
  } finally {
    delete process.env.SCHED_FAILPOINTS;
  }
});

test('a job that waits long continues as new with a fresh history, keeps its place, and runs when room frees', async () => {
  await h.client.submit(spec('cw-block-1', {}, 8));
  await h.client.submit(spec('cw-block-2', {}, 8));
  await eventually(async () => ((await phase('cw-block-2')) === 'running' ? true : undefined), 'the fleet full');
  await h.client.submit(spec('cw-wait', { durationMs: 500 }, 8));
  await eventually(async () => ((await phase('cw-wait')) === 'waiting' ? true : undefined), 'cw-wait waiting');
  const handle = h.client.temporal.workflow.getHandle('job/acme/ml/cw-wait');
  const first = (await handle.describe()).runId;
  // A busy wait's history: stale notices, each an event of its own (as weeks of waiting would make).
  for (let i = 0; i < 44; i++)
    await Promise.all(Array.from({ length: 50 }, () => handle.signal('waiting', { epoch: 99, reason: 'stale notice' })));
  const next = await eventually(
    async () => {
      const d = await handle.describe();
      return d.runId !== first && d.status.name === 'RUNNING' ? d : undefined;
    },
    'cw-wait to continue as new',
    60_000,
  );
  expect(next.historyLength).toBeLessThan(200);
  expect(await h.client.status('acme/ml', 'cw-wait')).toMatchObject({ phase: 'waiting', epoch: 1, attempt: 0 });
  await h.client.cancel('acme/ml', 'cw-block-1', 'make room');
  expect(await h.client.result('acme/ml', 'cw-wait')).toMatchObject({ outcome: 'completed' });
  expect(await row('cw-wait')).toMatchObject({ state: 'completed' });
  expect(await held('cw-wait')).toBe(0);
  await h.client.cancel('acme/ml', 'cw-block-2', 'test done');
  await h.client.result('acme/ml', 'cw-block-2');
});
