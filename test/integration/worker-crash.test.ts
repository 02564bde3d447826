// A worker process killed with SIGKILL while its job runs: another worker finishes the job,
// and nothing leaks.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkInvariants } from '../../db/invariants';
import type { JobSpec } from '../../api/types';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { NAMESPACE, REGION, eventually, startTemporal, type TemporalHarness } from '../helpers/temporal';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';
import { schedulerTaskQueue, schedulerWorkflowId } from '../../api/ids';
import { kickSignal } from '../../api/messages';

let t: TestDatabase;
let h: TemporalHarness;
const children: ChildProcess[] = [];

beforeAll(async () => {
  t = await createTestDatabase('crash');
  await seedFleet(t.db, { nodes: [['A100', 8, 2]] });
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('jobs-crash');
});
afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  await h?.teardown();
  await t?.drop();
});

function startWorkerProcess(extraEnv: Record<string, string> = {}): { child: ChildProcess; output: () => string } {
  const root = path.join(__dirname, '..', '..');
  // `node --import tsx` (not the tsx CLI, which forks) so the pid is the worker itself.
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'worker', 'main.ts')], {
    cwd: root,
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: h.address,
      TEMPORAL_NAMESPACE: NAMESPACE,
      TASK_QUEUE: h.taskQueue,
      DATABASE_URL: t.url,
      REGION,
      WORKFLOW_BUNDLE,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  children.push(child);
  return { child, output: () => out };
}

test('a job whose worker is killed with SIGKILL is finished by another worker and nothing leaks', async () => {
  const first = startWorkerProcess();
  const spec: JobSpec = {
    jobId: 'survivor',
    tenant: 'acme/ml',
    tier: 'standard',
    priority: 1,
    durationMs: 6000,
    request: { acceleratorTypes: ['A100'], workers: 2, devicesPerWorker: 4, topology: 'node' },
  };
  await h.client.submit(spec);
  await eventually(
    async () => ((await h.client.status('acme/ml', 'survivor').catch(() => undefined))?.phase === 'running' ? true : undefined),
    'job running',
    60_000,
  );
  // Let the executor heartbeat progress at least once before the kill.
  await new Promise((r) => setTimeout(r, 2500));
  first.child.kill('SIGKILL');
  await new Promise((r) => first.child.once('exit', r));
  const held = await t.db.selectFrom('allocations').select('id').where('job_id', '=', 'survivor').execute();
  expect(held).toHaveLength(8); // still held: the job is alive, only its worker died

  const second = startWorkerProcess();
  const result = await h.client.result('acme/ml', 'survivor');
  expect(result.outcome).toBe('completed');
  // The run was watched twice: attempt 1 on the killed worker, attempt 2 on the new one, which
  // picked the run up where it was (the run itself lives in the executor, not the worker).
  const history = await h.client.temporal.workflow.getHandle('job/acme/ml/survivor').fetchHistory();
  const attempts = (history.events ?? []).map((e) => e.activityTaskStartedEventAttributes).filter((a) => a && a.attempt === 2);
  expect(attempts.map((a) => a?.identity)).toEqual([`test-worker-${second.child.pid}`]);
  expect(second.output()).toMatch(/"event":"executor.watch-resumed"[^\n]*"progressMs":[1-9]/);
  expect(second.output()).toMatch(/"region":"test"[^\n]*"jobId":"survivor"|"jobId":"survivor"[^\n]*"region":"test"/);
  expect(await t.db.selectFrom('allocations').select('id').where('job_id', '=', 'survivor').execute()).toHaveLength(0);
  expect(await checkInvariants(t.db)).toEqual([]);
  second.child.kill('SIGTERM');
  const code = await new Promise((r) => second.child.once('exit', (c, s) => r(c ?? s)));
  expect(code).toBe(0);
  expect(second.output()).toContain('"event":"worker.stop"');
});

test('a worker killed mid-cycle: the cycle is retried once its heartbeats stop, not after its start-to-close timeout', async () => {
  // The failpoint SIGKILLs the first worker inside its first scheduling cycle (once per directory);
  // the scheduler is started with a kick, so a cycle is due at once.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cycle-crash-'));
  const env = { SCHED_FAILPOINTS: 'cycle.running', SCHED_FAILPOINT_DIR: dir };
  const first = startWorkerProcess(env);
  await h.client.temporal.workflow.signalWithStart('RegionSchedulerWorkflow', {
    workflowId: schedulerWorkflowId(REGION),
    taskQueue: schedulerTaskQueue(h.taskQueue),
    args: [{ region: REGION }],
    signal: kickSignal,
    signalArgs: [],
  });
  await new Promise((r) => first.child.once('exit', r));
  expect(fs.existsSync(path.join(dir, 'cycle.running.reached'))).toBe(true);

  const second = startWorkerProcess(env);
  // The lost attempt ended by its heartbeat timeout (TIMEOUT_TYPE_HEARTBEAT = 4, not START_TO_CLOSE = 1);
  // the retry ran on the new worker.
  const handle = h.client.temporal.workflow.getHandle(schedulerWorkflowId(REGION));
  const retried = await eventually(
    async () => {
      const history = await handle.fetchHistory();
      return (
        (history.events ?? [])
          .map((e) => e.activityTaskStartedEventAttributes)
          .find((a) => a && (a.attempt ?? 1) > 1 && a.lastFailure?.timeoutFailureInfo) ?? undefined
      );
    },
    'the cycle retried',
    90_000,
  );
  expect(Number(retried.lastFailure?.timeoutFailureInfo?.timeoutType)).toBe(4);
  expect(retried.identity).toBe(`test-worker-${second.child.pid}-scheduler`);
  // And the region schedules again.
  await h.client.submit({
    jobId: 'after-cycle-crash',
    tenant: 'acme/ml',
    tier: 'standard',
    priority: 1,
    durationMs: 500,
    request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 1, topology: 'node' },
  });
  expect((await h.client.result('acme/ml', 'after-cycle-crash')).outcome).toBe('completed');
  expect(await checkInvariants(t.db)).toEqual([]);
  second.child.kill('SIGTERM');
  await new Promise((r) => second.child.once('exit', r));
});
