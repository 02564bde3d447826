// The `sched` CLI run as a child process (bin/sched.mjs, as npm installs it) against a live HTTP
// API on 127.0.0.1 over a real region (PostgreSQL + Temporal dev server + worker): what a user
// types and reads, --json output scripts can parse, and exit codes with reasons for bad input,
// a missing key and an API that is not there.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { startApiServer } from '../../worker/api-server';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { REGION, eventually, startTemporal, type TemporalHarness } from '../helpers/temporal';

const BOOTSTRAP = 'bootstrap-admin-key-for-the-cli-tests-0123456789abcdef';
const SCHED = path.join(__dirname, '../../bin/sched.mjs');
let t: TestDatabase;
let h: TemporalHarness;
let api: Awaited<ReturnType<typeof startApiServer>>;
let home: string;
let adminKey: string;
let nodeNames: string[];

interface Run {
  code: number;
  out: string;
  err: string;
}
/** Runs `sched args…` with the API's address and a key in its environment (and an empty HOME: no config file). */
function sched(args: string[], env: Record<string, string | undefined> = {}): Promise<Run> {
  const base: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: home, SCHED_API_URL: api.url, SCHED_API_KEY: adminKey };
  for (const [k, v] of Object.entries(env))
    if (v === undefined) delete base[k];
    else base[k] = v;
  return new Promise((resolve) => {
    execFile(process.execPath, [SCHED, ...args], { env: base, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, out: stdout, err: stderr });
    });
  });
}
/** `sched --json args…`, parsed; fails the test with its stderr when it does not exit 0. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- CLI output is read loosely in assertions
async function json<T = any>(args: string[]): Promise<T> {
  const r = await sched(['--json', ...args]);
  if (r.code !== 0) throw new Error(`sched ${args.join(' ')} exited ${r.code}: ${r.err}`);
  return JSON.parse(r.out) as T;
}
const specFile = (name: string, spec: unknown): string => {
  const file = path.join(home, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(spec));
  return file;
};
const spec = (jobId: string, workers: number, devicesPerWorker: number) => ({
  jobId,
  tenant: 'acme/ml',
  tier: 'standard',
  priority: 0,
  durationMs: 600_000,
  request: { acceleratorTypes: ['A100'], workers, devicesPerWorker, topology: 'any' },
});
const phaseOf = async (jobId: string) => (await json(['status', jobId])).status?.phase as string | undefined;
const untilPhase = (jobId: string, want: string) =>
  eventually(async () => ((await phaseOf(jobId)) === want ? true : undefined), `${jobId} ${want}`, 60_000);

beforeAll(async () => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'sched-cli-'));
  t = await createTestDatabase('cli');
  const ids = await seedFleet(t.db, { nodes: [['A100', 4, 2]] });
  nodeNames = (await t.db.selectFrom('nodes').select('name').where('id', 'in', ids).orderBy('id').execute()).map((n) => n.name);
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('cli');
  await h.startWorker(t.db);
  api = await startApiServer({ db: t.db, client: h.client, region: REGION, bootstrapKey: BOOTSTRAP });
  const res = await fetch(`${api.url}/v1/admin/api-keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${BOOTSTRAP}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'cli-admin', tenant: '*', role: 'admin', reason: 'cli tests' }),
  });
  expect(res.status).toBe(201);
  adminKey = ((await res.json()) as { key: string }).key;
});
afterAll(async () => {
  await api?.close();
  await h?.teardown();
  await t?.drop();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

test('submit from a file, again idempotently, and see the job in ls and status once it runs', async () => {
  const file = specFile('one', spec('cli-1', 1, 2));
  const first = await sched(['submit', '-f', file]);
  expect(first).toMatchObject({ code: 0, err: '' });
  expect(first.out).toBe(`submitted: job cli-1 of acme/ml in region ${REGION}, workflow job/acme/ml/cli-1\n`);
  expect(await json(['submit', '-f', file])).toEqual({
    jobId: 'cli-1',
    tenant: 'acme/ml',
    workflowId: 'job/acme/ml/cli-1',
    region: REGION,
    created: false,
  });

  await untilPhase('cli-1', 'running');
  const table = await sched(['ls']);
  expect(table.code).toBe(0);
  const [header, ...rows] = table.out.trimEnd().split('\n');
  expect(header.split(/\s{2,}/)).toEqual(['JOB', 'TENANT', 'STATE', 'TIER', 'PRIO', 'TYPES', 'REGION', 'AGE', 'WAITING REASON']);
  expect(rows.map((r) => r.split(/\s+/).slice(0, 3))).toEqual([['cli-1', 'acme/ml', 'running']]);
  expect((await json(['ls', '--state', 'waiting'])).jobs).toEqual([]);

  const status = await sched(['status', 'cli-1']);
  expect(status.out).toMatch(/^phase:\s+running$/m);
  expect(status.out).toMatch(/^placement:\s+n\d+-\d\[\d,\d\]$/m);
});

test('ls pages with --limit and --cursor, or follows every page with --all', async () => {
  for (const id of ['cli-p1', 'cli-p2']) expect((await sched(['submit', '-f', specFile(id, spec(id, 1, 1))])).code).toBe(0);
  const page1 = await json(['ls', '--limit', '2']);
  expect(page1.jobs).toHaveLength(2);
  expect(page1.nextCursor).toEqual(expect.any(String));
  const human = await sched(['ls', '--limit', '2']);
  expect(human.out).toContain(`more: add --cursor ${page1.nextCursor}`);
  const page2 = await json(['ls', '--limit', '2', '--cursor', page1.nextCursor]);
  const all = await json(['ls', '--limit', '1', '--all']);
  expect(all.jobs.map((j: { jobId: string }) => j.jobId).sort()).toEqual(
    [...page1.jobs, ...page2.jobs].map((j: { jobId: string }) => j.jobId).sort(),
  );
  expect(all.jobs.map((j: { jobId: string }) => j.jobId).sort()).toEqual(['cli-1', 'cli-p1', 'cli-p2']);
  for (const id of ['cli-p1', 'cli-p2']) expect((await sched(['cancel', id, '--reason', 'paging done'])).code).toBe(0);
  for (const id of ['cli-p1', 'cli-p2']) await untilPhase(id, 'cancelled');
});

test('a job too big to place: why says what it waits for, top shows it queued, priority and cancel act on it', async () => {
  expect((await sched(['submit', '-f', specFile('big', spec('cli-big', 2, 4))])).code).toBe(0);
  await untilPhase('cli-big', 'waiting');
  const why = await sched(['why', 'cli-big']);
  expect(why.code).toBe(0);
  expect(why.out).toMatch(/^waiting:\s+yes$/m);
  expect(why.out).toMatch(/^reason:\s+\S/m);
  expect(why.out).toMatch(/^to unblock:\n {2}- \S/m);
  const whyJson = await json(['why', 'cli-big']);
  expect(whyJson).toMatchObject({ jobId: 'cli-big', waiting: true, waitingReason: expect.any(String) });

  const top = await json(['top']);
  expect(top.types).toEqual([expect.objectContaining({ acceleratorType: 'A100', devices: 8 })]);
  const standard = top.queue.find((q: { tier: string }) => q.tier === 'standard');
  expect(standard).toMatchObject({ waiting: 1, byType: { A100: 1 }, jobs: [expect.objectContaining({ jobId: 'cli-big' })] });
  const topText = (await sched(['top'])).out;
  expect(topText).toMatch(/^A100\s+2\s/m);
  expect(topText).toMatch(/^standard\s+1\s+1 A100\s.*cli-big/m);

  const prio = await sched(['priority', 'cli-big', '7', '--reason', 'deadline']);
  expect(prio).toMatchObject({ code: 0, out: 'job cli-big: priority 7 (waiting)\n' });
  expect((await sched(['cancel', 'cli-big', '--reason', 'too big'])).code).toBe(0);
  await untilPhase('cli-big', 'cancelled');
});

test('nodes lists the fleet; drain needs a reason and sends the job on the node back to the queue', async () => {
  const nodes = await sched(['nodes']);
  expect(
    nodes.out
      .trimEnd()
      .split('\n')
      .slice(1)
      .map((l) => l.split(/\s+/).slice(0, 3)),
  ).toEqual(nodeNames.map((n) => [n, 'A100', 'ready']));
  const onNode = (await json(['status', 'cli-1'])).status.placement.workers[0].nodeName as string;

  const noReason = await sched(['drain', onNode]);
  expect(noReason.code).toBe(2);
  expect(noReason.err).toContain("required option '--reason <text>' not specified");

  const drained = await sched(['drain', onNode, '--reason', 'replace a fan']);
  expect(drained.code).toBe(0);
  expect(drained.out).toMatch(new RegExp(`^node ${onNode}: (draining|cordoned); requeued cli-1`));
  expect((await json(['nodes', '--state', 'draining'])).nodes.concat((await json(['nodes', '--state', 'cordoned'])).nodes)).toEqual([
    expect.objectContaining({ name: onNode }),
  ]);
  // It runs again, on the other node.
  const other = await eventually(
    async () => {
      const s = (await json(['status', 'cli-1'])).status;
      return s.phase === 'running' && s.placement.workers[0].nodeName !== onNode ? s.placement.workers[0].nodeName : undefined;
    },
    'cli-1 running elsewhere',
    60_000,
  );
  expect(nodeNames).toContain(other);
  expect((await sched(['uncordon', onNode, '--reason', 'fan replaced'])).code).toBe(0);
});

test('quota: set shows the stored rule, show lists it, bad values are refused with the field and rule', async () => {
  const set = await sched([
    'quota',
    'set',
    'acme/ml',
    'A100',
    '--nominal',
    '6',
    '--borrowing',
    '2',
    '--lending',
    'none',
    '--reason',
    'q4 plan',
  ]);
  expect(set).toMatchObject({ code: 0, err: '' });
  expect(set.out.split('\n')[1].split(/\s+/)).toEqual(['acme/ml', 'A100', '6', '2', 'none', '2']);
  expect((await json(['quota'])).quotas).toEqual([
    { tenant: 'acme/ml', acceleratorType: 'A100', nominal: 6, borrowingLimit: 2, lendingLimit: null, usedDevices: 2 },
  ]);
  const bad = await sched(['quota', 'set', 'Acme ML', 'A100', '--nominal', '1', '--reason', 'typo']);
  expect(bad.code).toBe(1);
  expect(bad.err).toMatch(/^sched: refused \(400 bad-request\): /);
  expect(bad.err).toMatch(/^ {2}tenant: .+$/m);
  const notNumber = await sched(['quota', 'set', 'acme/ml', 'A100', '--nominal', 'many', '--reason', 'x']);
  expect(notNumber.code).toBe(2);
  expect(notNumber.err).toContain('--nominal must be a whole number ≥ 0, not "many"');
});

test('reserve: create, list and cancel a reservation', async () => {
  const made = await json([
    'reserve',
    'create',
    '--id',
    'cli-r1',
    '--tenant',
    'acme/ml',
    '--type',
    'A100',
    '--devices',
    '2',
    '--start',
    '+1h',
    '--end',
    '+3h',
    '--reason',
    'demo',
  ]);
  expect(made).toMatchObject({ id: 'cli-r1', tenant: 'acme/ml', acceleratorType: 'A100', devices: 2 });
  const ls = await sched(['reserve']);
  expect(ls.out).toMatch(/^cli-r1\s+acme\/ml\s+A100\s+2\s/m);
  expect((await sched(['reserve', 'cancel', 'cli-r1', '--reason', 'no longer needed'])).out).toBe('cancelled reservation cli-r1\n');
  expect((await json(['reserve', 'ls', '--state', 'cancelled'])).reservations).toEqual([expect.objectContaining({ id: 'cli-r1' })]);
  const backwards = await sched([
    'reserve',
    'create',
    '--id',
    'cli-r2',
    '--tenant',
    'acme/ml',
    '--type',
    'A100',
    '--devices',
    '1',
    '--start',
    '+2h',
    '--end',
    '+1h',
    '--reason',
    'x',
  ]);
  expect(backwards.code).toBe(1);
  expect(backwards.err).toMatch(/^ {2}endsAt: /m);
});

test('bad input, a missing key, a bad config file and an absent API each exit non-zero with the reason', async () => {
  const incomplete = await sched(['submit', '-f', specFile('bad', { jobId: 'cli-bad', tenant: 'acme/ml', tier: 'gold' })]);
  expect(incomplete.code).toBe(1);
  expect(incomplete.err).toMatch(/^sched: refused \(400 bad-request\)/);
  expect(incomplete.err).toMatch(/^ {2}tier: /m);
  expect(incomplete.err).toMatch(/^ {2}request: /m);
  expect((await json(['ls'])).jobs.map((j: { jobId: string }) => j.jobId)).not.toContain('cli-bad');

  fs.writeFileSync(path.join(home, 'broken.json'), '{not json');
  const notJson = await sched(['submit', '-f', path.join(home, 'broken.json')]);
  expect(notJson.code).toBe(2);
  expect(notJson.err).toContain('broken.json: not JSON');

  const noKey = await sched(['ls'], { SCHED_API_KEY: undefined });
  expect(noKey.code).toBe(2);
  expect(noKey.err).toMatch(/^sched: no API key: set SCHED_API_KEY/);
  const wrongKey = await sched(['ls'], { SCHED_API_KEY: 'sched_nope_nope' });
  expect(wrongKey.code).toBe(1);
  expect(wrongKey.err).toMatch(/^sched: refused \(401 unauthenticated\)/);

  // A port nothing listens on (taken and let go).
  const closed = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
  const unreachable = await sched(['ls'], { SCHED_API_URL: `http://127.0.0.1:${closed}` });
  expect(unreachable.code).toBe(3);
  expect(unreachable.err).toBe(
    `sched: cannot reach the scheduler API at http://127.0.0.1:${closed} (ECONNREFUSED); is it running, and is SCHED_API_URL right?\n`,
  );

  // The config file stands in for the environment.
  const config = path.join(home, 'config.json');
  fs.writeFileSync(config, JSON.stringify({ url: api.url, key: adminKey }));
  const viaFile = await sched(['--config', config, 'whoami'], { SCHED_API_URL: undefined, SCHED_API_KEY: undefined });
  expect(viaFile).toMatchObject({ code: 0 });
  expect(viaFile.out).toMatch(/^role:\s+admin$/m);
  fs.writeFileSync(config, JSON.stringify({ url: api.url, token: adminKey }));
  const badFile = await sched(['--config', config, 'whoami'], { SCHED_API_URL: undefined, SCHED_API_KEY: undefined });
  expect(badFile.code).toBe(2);
  expect(badFile.err).toContain('unknown field "token" (allowed: url, key)');
});
