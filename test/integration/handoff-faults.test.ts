// Fault injection at every step of the handoff protocol, on two real regions whose workers are
// processes: the home's or the peer's worker is SIGKILLed at each step (a failpoint stops it there),
// or held at a step while the home's or the peer's Temporal server is SIGKILLed and restarted.
// Each time the job must end exactly once: completed, run in one region only, never holding
// devices in two regions at once, nothing left behind, the invariant checker clean in both.
import fs from 'node:fs';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { checkInvariants } from '../../db/invariants';
import type { JobSpec } from '../../api/types';
import type { SchedulerClient } from '../../api/client';
import { Regions } from '../../scripts/regions';
import type { Failpoint } from '../../activities/failpoints';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { eventually } from '../helpers/temporal';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';

let regions: Regions;
let client: SchedulerClient;
let seq = 0;

const spawn = (name: 'home' | 'peer', env: Record<string, string> = {}): ChildProcess =>
  regions.spawnWorker(name, { bundlePath: WORKFLOW_BUNDLE, publishEveryMs: 500, env });

async function freshWorkers(faulty?: { side: 'home' | 'peer'; point: Failpoint; pause: boolean; dir: string }): Promise<void> {
  await regions.killWorkerProcesses('home');
  await regions.killWorkerProcesses('peer');
  for (const side of ['home', 'peer'] as const)
    spawn(
      side,
      faulty?.side === side
        ? { SCHED_FAILPOINTS: faulty.point, SCHED_FAILPOINT_DIR: faulty.dir, ...(faulty.pause ? { SCHED_FAILPOINT_ACTION: 'pause' } : {}) }
        : {},
    );
  // The home holds a fresh summary of the peer: its workers publish again.
  const since = Date.now();
  await eventually(
    async () => {
      const row = await regions
        .get('home')
        .db.selectFrom('peer_summaries')
        .select('received_at')
        .where('region', '=', 'peer')
        .executeTakeFirst();
      return row && row.received_at.getTime() > since ? true : undefined;
    },
    'a fresh summary of the peer at home',
    60_000,
  );
}

/** Samples both regions' allocations of `jobId` until stopped; true if both ever held some at once. */
function watchBothHold(jobId: string): { stop(): Promise<boolean> } {
  let both = false;
  let running = true;
  const loop = (async () => {
    while (running) {
      const [h, p] = await Promise.all(
        ['home', 'peer'].map(
          async (r) => (await regions.get(r).db.selectFrom('allocations').select('id').where('job_id', '=', jobId).execute()).length,
        ),
      );
      if (h > 0 && p > 0) both = true;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return both;
    },
  };
}

async function expectExactlyOnce(jobId: string): Promise<void> {
  const result = await client.result('acme/ml', jobId);
  expect(result).toMatchObject({ outcome: 'completed', region: 'peer' });
  const runs = async (r: string) =>
    regions.get(r).db.selectFrom('executions').select(['epoch', 'state']).where('job_id', '=', jobId).execute();
  expect(await runs('home')).toEqual([]);
  expect(await runs('peer')).toEqual([expect.objectContaining({ state: 'succeeded' })]);
  const row = (r: string) => regions.get(r).db.selectFrom('jobs').select('state').where('id', '=', jobId).executeTakeFirst();
  expect(await row('home')).toEqual({ state: 'completed' });
  expect(await row('peer')).toEqual({ state: 'completed' });
  for (const r of ['home', 'peer']) {
    expect(await checkInvariants(regions.get(r).db)).toEqual([]);
    expect((await regions.get(r).db.selectFrom('allocations').select('id').execute()).length).toBe(0);
  }
}

const job = (): JobSpec => ({
  jobId: `fault-${++seq}`,
  tenant: 'acme/ml',
  tier: 'standard',
  priority: 0,
  durationMs: 1500,
  // No H100 at home: the job is handed to the peer at once.
  request: { acceleratorTypes: ['H100'], workers: 1, devicesPerWorker: 8, topology: 'any' },
});

beforeAll(async () => {
  regions = await Regions.start(['home', 'peer'], { tag: `fault${process.pid}` });
  await seedFleet(regions.get('home').db, { nodes: [['A100', 8, 1]] });
  await seedFleet(regions.get('peer').db, { nodes: [['H100', 8, 2]] });
  for (const r of ['home', 'peer']) await seedTenants(regions.get(r).db, ['acme/ml']);
  client = await regions.client('home');
}, 120_000);

afterAll(async () => {
  await regions?.stop();
});

const workerKills: Array<['home' | 'peer', Failpoint]> = [
  ['home', 'handoff.home.marked'],
  ['home', 'handoff.home.started'],
  ['home', 'handoff.home.deciding'],
  ['home', 'handoff.home.decided'],
  ['home', 'handoff.home.telling'],
  ['peer', 'handoff.copy.admitted'],
  ['peer', 'handoff.copy.activated'],
  ['peer', 'handoff.copy.ending'],
];

describe('a worker SIGKILLed at each step of the handoff', () => {
  test.each(workerKills)('the %s worker killed at %s: the job ends once, at the peer', async (side, point) => {
    const dir = fs.mkdtempSync(path.join(regions.dir, 'fp-'));
    await freshWorkers({ side, point, pause: false, dir });
    const s = job();
    const watch = watchBothHold(s.jobId);
    await client.submit(s);
    // The failpoint fired: the worker died right there.
    await eventually(async () => (fs.existsSync(path.join(dir, `${point}.reached`)) ? true : undefined), `${point} reached`, 60_000);
    await eventually(
      async () => (regions.get(side).processes.every((p) => p.exitCode !== null || p.signalCode !== null) ? true : undefined),
      `${side} worker dead`,
    );
    spawn(side);
    await expectExactlyOnce(s.jobId);
    expect(await watch.stop()).toBe(false);
  });
});

const serverKills: Array<['home' | 'peer', Failpoint, 'home' | 'peer']> = [
  ['home', 'handoff.home.started', 'peer'],
  ['home', 'handoff.home.decided', 'home'],
  ['peer', 'handoff.copy.activated', 'peer'],
  ['peer', 'handoff.copy.ending', 'home'],
];

describe("a region's Temporal server SIGKILLed and restarted between steps", () => {
  test.each(serverKills)(
    "held at the %s worker's %s, the %s server killed: the job ends once, at the peer",
    async (side, point, server) => {
      const dir = fs.mkdtempSync(path.join(regions.dir, 'fp-'));
      await freshWorkers({ side, point, pause: true, dir });
      const s = job();
      const watch = watchBothHold(s.jobId);
      await client.submit(s);
      await eventually(async () => (fs.existsSync(path.join(dir, `${point}.reached`)) ? true : undefined), `${point} reached`, 60_000);
      await regions.killServer(server);
      await new Promise((r) => setTimeout(r, 1000));
      await regions.startServer(server);
      fs.writeFileSync(path.join(dir, `${point}.release`), '');
      await expectExactlyOnce(s.jobId);
      expect(await watch.stop()).toBe(false);
    },
  );
});
