// Publishing on large changes, on two real regions whose period is a minute: a peer hears of a
// type filling up, or of room appearing, long before the period ends; a small change waits for
// the period. (With a one-minute period, a newer summary at the peer within the test can only be
// an early publication.)
import type { JobSpec } from '../../api/types';
import type { PeerExchangeStatus } from '../../api/messages';
import { peerExchangeWorkflowId } from '../../api/ids';
import type { SchedulerClient } from '../../api/client';
import { checkInvariants } from '../../db/invariants';
import { Regions } from '../../scripts/regions';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { eventually } from '../helpers/temporal';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';

const PERIOD_MS = 60_000;
let regions: Regions;
let eu: SchedulerClient;

const spec = (jobId: string, workers: number, devicesPerWorker: number): JobSpec => ({
  jobId,
  tenant: 'acme/ml',
  tier: 'standard',
  priority: 0,
  durationMs: 600_000,
  request: { acceleratorTypes: ['A100'], workers, devicesPerWorker, topology: 'any' },
});

/** eu's summary as us holds it: its version and free A100. */
async function euAtUs(): Promise<{ version: number; free: number } | undefined> {
  const row = await regions
    .get('us')
    .db.selectFrom('peer_summaries')
    .select(['version', 'summary'])
    .where('region', '=', 'eu')
    .executeTakeFirst();
  return row ? { version: Number(row.version), free: row.summary.types.A100?.freeWhole ?? -1 } : undefined;
}
const euExchange = async (): Promise<PeerExchangeStatus> =>
  eu.temporal.workflow.getHandle(peerExchangeWorkflowId('eu')).query<PeerExchangeStatus>('status');

beforeAll(async () => {
  regions = await Regions.start(['us', 'eu'], { tag: `early${process.pid}` });
  for (const r of ['us', 'eu']) {
    await seedFleet(regions.get(r).db, { nodes: [['A100', 8, 2]] });
    await seedTenants(regions.get(r).db, ['acme/ml']);
  }
  for (const r of ['us', 'eu']) await regions.startWorker(r, { bundlePath: WORKFLOW_BUNDLE, publishEveryMs: PERIOD_MS });
  eu = await regions.client('eu');
  // The first publication goes out at once.
  await eventually(async () => ((await euAtUs())?.free === 16 ? true : undefined), 'eu’s first summary at us', 60_000);
}, 180_000);

afterAll(async () => {
  await regions?.stop();
});

afterEach(async () => {
  for (const r of regions.list) expect(await checkInvariants(r.db)).toEqual([]);
});

test('a small change waits for the period; a type filling up and room appearing reach the peer at once', async () => {
  const first = (await euAtUs())!;

  // One device of 16 is under 10% of the type: left to the period.
  const small = spec('small', 1, 1);
  await eu.submit(small);
  await eventually(async () => ((await eu.status(small.tenant, small.jobId)).phase === 'running' ? true : undefined), 'small job running');
  await new Promise((r) => setTimeout(r, 3_000)); // six polls of eu's publication and more than its early gap
  expect(await euAtUs()).toEqual(first);
  expect((await euExchange()).early ?? 0).toBe(0);

  // The rest of eu's A100 taken: the type is full, and us hears of it long before the minute.
  const big = spec('big', 1, 7);
  const rest = spec('rest', 1, 8);
  await eu.submit(big);
  await eu.submit(rest);
  const full = await eventually(async () => {
    const s = await euAtUs();
    return s && s.version > first.version && s.free === 0 ? s : undefined;
  }, 'eu full, at us');
  // eu's status records a publication when its activity returns, after us has it: wait for it.
  const afterFull = await eventually(async () => {
    const x = await euExchange();
    return (x.early ?? 0) >= 1 && (x.published.us?.sent ?? 0) >= 2 ? x : undefined;
  }, 'eu to record its early publication');
  expect(afterFull.lastEarlyReason).toMatch(/^A100: full \(\d+ → 0 free of 16\)$/);

  // Room appearing: 8 devices back (50% of the type) reach us at once too.
  await eu.cancel(rest.tenant, rest.jobId, 'test: room appears');
  await eu.result(rest.tenant, rest.jobId);
  const roomy = await eventually(async () => {
    const s = await euAtUs();
    return s && s.version > full.version && s.free === 8 ? s : undefined;
  }, 'room at eu, at us');
  expect(roomy.free).toBe(8);
  const afterRoom = await eventually(async () => {
    const x = await euExchange();
    return (x.early ?? 0) > (afterFull.early ?? 0) ? x : undefined;
  }, 'eu to record the second early publication');
  expect(afterRoom.lastEarlyReason).toBe('A100: 0 → 8 free of 16');

  for (const j of [small, big]) {
    await eu.cancel(j.tenant, j.jobId, 'test done');
    await eu.result(j.tenant, j.jobId);
  }
});
