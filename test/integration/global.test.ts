// Global scheduling on three real regions (each its own Temporal dev server and database, its
// worker configured with the other two as peers): jobs that cannot run at home, or wait there too
// long, are handed to a peer with room; a peer that refuses, or is down, sends the job elsewhere
// or keeps it at home; a handed-off job is found, watched and cancelled from its home's client.
import { sql } from 'kysely';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { checkInvariants } from '../../db/invariants';
import type { JobSpec, JobStatus } from '../../api/types';
import type { InventorySummary } from '../../api/peers';
import { offerSummaryUpdate } from '../../api/messages';
import { peerExchangeWorkflowId, schedulerWorkflowId } from '../../api/ids';
import type { SchedulerClient } from '../../api/client';
import { Regions } from '../../scripts/regions';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { eventually } from '../helpers/temporal';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';

let regions: Regions;
let us: SchedulerClient;

const spec = (jobId: string, over: Partial<JobSpec> = {}, request: Partial<JobSpec['request']> = {}): JobSpec => ({
  jobId,
  tenant: 'acme/ml',
  tier: 'standard',
  priority: 0,
  durationMs: 1500,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 4, topology: 'any', ...request },
  ...over,
});

const rowIn = (region: string, id: string) =>
  regions
    .get(region)
    .db.selectFrom('jobs')
    .select(['state', 'epoch', 'handoff_peer', 'origin_region'])
    .where('id', '=', id)
    .executeTakeFirst();
const heldIn = async (region: string, id: string) =>
  (await regions.get(region).db.selectFrom('allocations').select('id').where('job_id', '=', id).execute()).length;

/** Waits until `home` holds a fresh summary from each of `peers`. */
async function summariesReach(home: string, peers: string[]): Promise<void> {
  await eventually(
    async () => {
      const rows = await regions.get(home).db.selectFrom('peer_summaries').select(['region', 'received_at']).execute();
      const fresh = rows.filter((r) => Date.now() - r.received_at.getTime() < 3000).map((r) => r.region);
      return peers.every((p) => fresh.includes(p)) ? true : undefined;
    },
    `${home} to hold fresh summaries of ${peers.join(', ')}`,
    60_000,
  );
}

beforeAll(async () => {
  regions = await Regions.start(['us', 'eu', 'ap'], { tag: `glob${process.pid}` });
  // us: A100 only; eu: A100 and one H100 node; ap: H100 only.
  await seedFleet(regions.get('us').db, { nodes: [['A100', 8, 2]] });
  await seedFleet(regions.get('eu').db, {
    nodes: [
      ['A100', 8, 2],
      ['H100', 8, 1],
    ],
  });
  await seedFleet(regions.get('ap').db, { nodes: [['H100', 8, 2]] });
  for (const r of ['us', 'eu', 'ap']) await seedTenants(regions.get(r).db, ['acme/ml']);
  await seedTenants(regions.get('us').db, ['globex/x']); // known at home only
  for (const r of ['us', 'eu', 'ap']) await regions.startWorker(r, { bundlePath: WORKFLOW_BUNDLE, publishEveryMs: 500 });
  us = await regions.client('us');
  await summariesReach('us', ['eu', 'ap']);
}, 180_000);

afterAll(async () => {
  await regions?.stop();
});

afterEach(async () => {
  for (const r of regions.list) expect(await checkInvariants(r.db)).toEqual([]);
});

describe('global scheduling across three regions', () => {
  test('a job no node at home can hold is handed at once to a peer that can, and ends there exactly once', async () => {
    const s = spec('h100-abroad', {}, { acceleratorTypes: ['H100'], devicesPerWorker: 8 });
    await us.submit(s);
    const result = await us.result(s.tenant, s.jobId);
    expect(result).toMatchObject({ outcome: 'completed', region: 'ap' }); // ap: 16 H100 free, eu: 8
    expect(result.placement?.acceleratorType).toBe('H100');
    const home: JobStatus = await us.temporal.workflow.getHandle(`job/${s.tenant}/${s.jobId}`).query('status');
    expect(home.handoff).toMatchObject({ peer: 'ap', state: 'committed' });
    expect(await rowIn('us', s.jobId)).toMatchObject({ state: 'completed', handoff_peer: 'ap' });
    expect(await rowIn('ap', s.jobId)).toMatchObject({ state: 'completed', origin_region: 'us' });
    expect(await rowIn('eu', s.jobId)).toBeUndefined(); // never offered to eu
    // It ran once: one run in ap's executor, none at home.
    const runs = await regions.get('ap').db.selectFrom('executions').select('epoch').where('job_id', '=', s.jobId).execute();
    expect(runs).toHaveLength(1);
    expect(await regions.get('us').db.selectFrom('executions').select('epoch').where('job_id', '=', s.jobId).execute()).toEqual([]);
    // Nobody waited in ap: the copy was placed when it was activated, and ap's scheduler, which
    // only a waiting job starts, never had to run a cycle for it.
    const ap = await regions.client('ap');
    await expect(ap.temporal.workflow.getHandle(schedulerWorkflowId('ap')).describe()).rejects.toThrow(WorkflowNotFoundError);
  });

  test('a job waiting at home past handoff.afterMs goes to a peer with room; the home queue no longer holds it', async () => {
    const blocker = spec('us-blocker', { durationMs: 120_000 }, { workers: 2, devicesPerWorker: 8 });
    await us.submit(blocker);
    await eventually(
      async () => ((await us.status(blocker.tenant, blocker.jobId)).phase === 'running' ? true : undefined),
      'blocker running',
    );
    const s = spec('a100-wait', { handoff: { afterMs: 1000 } });
    await us.submit(s);
    const result = await us.result(s.tenant, s.jobId);
    expect(result).toMatchObject({ outcome: 'completed', region: 'eu' }); // the only peer with A100
    expect(await rowIn('us', s.jobId)).toMatchObject({ state: 'completed', handoff_peer: 'eu' });
    await us.cancel(blocker.tenant, blocker.jobId, 'test done');
    await us.result(blocker.tenant, blocker.jobId);
  });

  test('a peer that refuses (tenant unknown there) is an answer: the job stays home and runs there when room frees', async () => {
    const blocker = spec('us-blocker-2', { durationMs: 120_000 }, { workers: 2, devicesPerWorker: 8 });
    await us.submit(blocker);
    await eventually(
      async () => ((await us.status(blocker.tenant, blocker.jobId)).phase === 'running' ? true : undefined),
      'blocker running',
    );
    const s = spec('globex-1', { tenant: 'globex/x', handoff: { afterMs: 500 } });
    await us.submit(s);
    const refused = await eventually(async () => {
      const st = await us.status(s.tenant, s.jobId);
      return st.handoff?.state === 'aborted' ? st : undefined;
    }, 'the handoff to eu to be aborted');
    expect(refused.handoff).toMatchObject({
      peer: 'eu',
      state: 'aborted',
      reason: expect.stringContaining('globex/x is not a registered tenant'),
    });
    expect(refused.epoch).toBe(2); // back in the queue at a new epoch
    // eu's copy ended without ever being schedulable there.
    await eventually(
      async () => ((await rowIn('eu', s.jobId))?.state === 'cancelled' ? true : undefined),
      "eu's copy withdrawn",
      30_000,
    ).catch(async () => expect(await rowIn('eu', s.jobId)).toBeUndefined());
    expect(await heldIn('eu', s.jobId)).toBe(0);
    await us.cancel(blocker.tenant, blocker.jobId, 'make room');
    const result = await us.result(s.tenant, s.jobId);
    expect(result).toMatchObject({ outcome: 'completed', region: 'us' });
  });

  test('a handed-off job is located, watched and cancelled through its home client', async () => {
    const s = spec('h100-long', { durationMs: 120_000 }, { acceleratorTypes: ['H100'], devicesPerWorker: 8 });
    await us.submit(s);
    const at = await eventually(async () => {
      const loc = await us.locate(s.tenant, s.jobId);
      return loc.status.phase === 'running' ? loc : undefined;
    }, 'the job running abroad');
    expect(at.chain[0]).toBe('us');
    expect(['eu', 'ap']).toContain(at.region);
    expect(at.status.origin).toMatchObject({ region: 'us' });
    expect((await us.status(s.tenant, s.jobId)).region).toBe(at.region);
    expect(await heldIn(at.region, s.jobId)).toBeGreaterThan(0);
    await us.cancel(s.tenant, s.jobId, 'cancelled from home');
    const result = await us.result(s.tenant, s.jobId);
    expect(result).toMatchObject({ outcome: 'cancelled', region: at.region });
    expect(await heldIn(at.region, s.jobId)).toBe(0);
    expect(await rowIn('us', s.jobId)).toMatchObject({ state: 'cancelled' });
  });

  test('bad input is refused with its reason and changes nothing', async () => {
    // A spec naming a region that is neither home nor a peer.
    const s = spec('mars-1', { allowedRegions: ['us', 'mars'] });
    await us.submit(s);
    expect(await us.result(s.tenant, s.jobId)).toMatchObject({
      outcome: 'rejected',
      reason: expect.stringContaining('allowedRegions: mars is neither this region (us) nor one of its peers (eu, ap)'),
    });
    expect(await rowIn('us', s.jobId)).toBeUndefined();
    // Summaries: an older version, a malformed one, one from a region that is not a peer.
    const exchange = us.temporal.workflow.getHandle(peerExchangeWorkflowId('us'));
    const held = await regions.get('us').db.selectFrom('peer_summaries').selectAll().where('region', '=', 'eu').executeTakeFirstOrThrow();
    const old: InventorySummary = { ...held.summary, version: Math.max(1, Number(held.version) - 1) };
    const refusal = async (summary: unknown) => {
      try {
        await exchange.executeUpdate(offerSummaryUpdate, { args: [summary as InventorySummary] });
      } catch (err) {
        expect(err).toBeInstanceOf(WorkflowUpdateFailedError);
        let cause: unknown = err;
        while (cause instanceof Error && cause.cause instanceof Error) cause = cause.cause;
        return (cause as Error).message;
      }
      return 'accepted';
    };
    expect(await refusal(old)).toMatch(/^summary refused: version \d+ from eu is not newer than the version \d+ held$/);
    expect(await refusal({ region: 'eu', version: 'x', types: [] })).toMatch(/summary\.version: "x" must be a positive integer/);
    expect(await refusal({ ...held.summary, region: 'mars', version: 1 })).toBe(
      'summary refused: region mars is not a configured peer (peers: eu, ap)',
    );
    const after = await regions.get('us').db.selectFrom('peer_summaries').select('region').execute();
    expect(after.map((r) => r.region).sort()).toEqual(['ap', 'eu']);
  });

  test('a region that stops answering is not sent work once its summary expires; it takes work again when it is back', async () => {
    await regions.stopWorkers('ap');
    // Past the summary TTL (10 s), ap counts as absent at us.
    await eventually(
      async () => {
        const ap = await regions
          .get('us')
          .db.selectFrom('peer_summaries')
          .select('received_at')
          .where('region', '=', 'ap')
          .executeTakeFirstOrThrow();
        return Date.now() - ap.received_at.getTime() > 11_000 ? true : undefined;
      },
      "ap's summary to expire at us",
      30_000,
    );
    // eu has one H100 node: a 2-node H100 gang fits only ap, which is silent now.
    const s = spec('h100-gang', {}, { acceleratorTypes: ['H100'], workers: 2, devicesPerWorker: 8 });
    await us.submit(s);
    const waiting = await eventually(
      async () => {
        const st = await us.status(s.tenant, s.jobId);
        return st.phase === 'waiting-abroad' && /ap: summary \d+ s old/.test(st.waitingReason ?? '') ? st : undefined;
      },
      'the job to wait abroad, ap counted absent',
      40_000,
    );
    expect(waiting.waitingReason).toMatch(/eu: 2×8 of H100 needs 16 devices, the region has 8 H100 in all/);
    // Nothing was offered to the silent region.
    expect(await rowIn('ap', s.jobId)).toBeUndefined();
    await regions.startWorker('ap', { bundlePath: WORKFLOW_BUNDLE, publishEveryMs: 500 });
    const result = await us.result(s.tenant, s.jobId);
    expect(result).toMatchObject({ outcome: 'completed', region: 'ap' });
  });

  /** Runs `body` while us's A100 are all held by a long job, then frees them. */
  async function whileUsIsFull(tag: string, body: () => Promise<void>): Promise<void> {
    const blocker = spec(`us-full-${tag}`, { durationMs: 300_000 }, { workers: 2, devicesPerWorker: 8 });
    await us.submit(blocker);
    await eventually(
      async () => ((await us.status(blocker.tenant, blocker.jobId)).phase === 'running' ? true : undefined),
      'blocker running',
    );
    try {
      await body();
    } finally {
      await us.cancel(blocker.tenant, blocker.jobId, 'test done');
      await us.result(blocker.tenant, blocker.jobId);
    }
  }

  test('a peer over the tenant quota refuses; the job stays home', async () => {
    for (const r of ['us', 'eu', 'ap']) await seedTenants(regions.get(r).db, ['acme/q']);
    await regions
      .get('eu')
      .db.insertInto('quotas')
      .values({ tenant: 'acme/q', accelerator_type: 'A100', nominal: 0, borrowing_limit: 0, lending_limit: null })
      .execute();
    await whileUsIsFull('quota', async () => {
      const s = spec('quota-1', { tenant: 'acme/q', handoff: { afterMs: 500 } });
      await us.submit(s);
      const st = await eventually(async () => {
        const x = await us.status(s.tenant, s.jobId);
        return x.handoff?.state === 'aborted' ? x : undefined;
      }, 'the handoff to eu to be aborted');
      expect(st.handoff?.reason).toMatch(/eu refused: .*over quota: acme\/q uses 0 of nominal 0 A100/);
      expect(['waiting', 'handing-off']).toContain((await us.status(s.tenant, s.jobId)).phase);
      await us.cancel(s.tenant, s.jobId, 'test done');
      expect((await us.result(s.tenant, s.jobId)).outcome).toBe('cancelled');
    });
  });

  test('a pinned job is never offered abroad', async () => {
    await whileUsIsFull('pin', async () => {
      const s = spec('pinned-1', { handoff: { afterMs: 2000 } });
      await us.submit(s);
      await eventually(async () => ((await us.status(s.tenant, s.jobId)).phase === 'waiting' ? true : undefined), 'waiting');
      const pinned = await us.pin(s.tenant, s.jobId, 'keep it in us');
      expect(pinned.pinned).toBe(true);
      await new Promise((r) => setTimeout(r, 4000));
      const st = await us.status(s.tenant, s.jobId);
      expect(st).toMatchObject({ phase: 'waiting', pinned: true });
      expect(st.handoff).toBeUndefined();
      expect(await rowIn('eu', s.jobId)).toBeUndefined();
      await us.cancel(s.tenant, s.jobId, 'test done');
      await us.result(s.tenant, s.jobId);
    });
  });

  test('a handed-off job not yet placed at the peer can be recalled, by an operator or by its home once it has room; once placed, a recall is refused', async () => {
    // eu's A100 are all reserved for another tenant: a copy admitted there waits (its summary still shows them free).
    await seedTenants(regions.get('eu').db, ['other']);
    const eu = await regions.client('eu');
    await eu.reserve({
      id: 'eu-hold',
      tenant: 'other',
      acceleratorType: 'A100',
      devices: 16,
      startsAt: new Date().toISOString(),
      endsAt: new Date(Date.now() + 3600_000).toISOString(),
    });
    await eventually(
      async () =>
        (await regions.get('eu').db.selectFrom('reservations').select('state').where('id', '=', 'eu-hold').executeTakeFirst())?.state ===
        'active'
          ? true
          : undefined,
      'the reservation open',
    );
    try {
      await whileUsIsFull('recall', async () => {
        const s = spec('recall-1', { handoff: { afterMs: 500 } });
        await us.submit(s);
        await eventually(async () => {
          const at = await us.locate(s.tenant, s.jobId);
          return at.region === 'eu' && at.status.phase === 'waiting' ? true : undefined;
        }, 'the job waiting at eu');
        const back = await us.recall(s.tenant, s.jobId, 'eu cannot run it soon');
        expect(back.handoff).toMatchObject({ peer: 'eu' });
        const home = await eventually(async () => {
          const st = await us.status(s.tenant, s.jobId);
          return st.phase === 'waiting' && st.handoff?.state === 'recalled' ? st : undefined;
        }, 'the job back home');
        expect(home).toMatchObject({ pinned: true, region: 'us' });
        expect(await rowIn('eu', s.jobId)).toMatchObject({ state: 'cancelled' });
        expect(await rowIn('us', s.jobId)).toMatchObject({ state: 'waiting' });
        await us.cancel(s.tenant, s.jobId, 'test done');
        expect(await us.result(s.tenant, s.jobId)).toMatchObject({ outcome: 'cancelled', region: 'us' });
      });
      // The home has room again while the copy still waits abroad: the home takes it back by
      // itself (within one look, 15 s), not pinned, and runs it.
      const auto = spec('recall-auto', { handoff: { afterMs: 500 } });
      await whileUsIsFull('auto', async () => {
        await us.submit(auto);
        await eventually(async () => {
          const at = await us.locate(auto.tenant, auto.jobId);
          return at.region === 'eu' && at.status.phase === 'waiting' ? true : undefined;
        }, 'the job waiting at eu');
      });
      expect(await us.result(auto.tenant, auto.jobId)).toMatchObject({ outcome: 'completed', region: 'us' });
      expect(await us.status(auto.tenant, auto.jobId)).toMatchObject({ pinned: false, handoff: { peer: 'eu', state: 'recalled' } });
      expect(await rowIn('eu', auto.jobId)).toMatchObject({ state: 'cancelled' });
      expect(await rowIn('us', auto.jobId)).toMatchObject({ state: 'completed' });
      // Placed at the peer: refused, and nothing changes.
      const s = spec('recall-2', { durationMs: 120_000 }, { acceleratorTypes: ['H100'], devicesPerWorker: 8 });
      await us.submit(s);
      const at = await eventually(async () => {
        const loc = await us.locate(s.tenant, s.jobId);
        return loc.status.phase === 'running' ? loc : undefined;
      }, 'the job running abroad');
      await expect(us.recall(s.tenant, s.jobId, 'too late')).rejects.toThrow(
        new RegExp(`recall: ${at.region} would not give it back: giveBack: job recall-2 is running in ${at.region}`),
      );
      expect((await us.locate(s.tenant, s.jobId)).status.phase).toBe('running');
      await us.cancel(s.tenant, s.jobId, 'test done');
      await us.result(s.tenant, s.jobId);
    } finally {
      await eu.cancelReservation('eu-hold');
    }
  });

  test('every region is clean afterwards: no allocation of a job that is not live there', async () => {
    for (const r of regions.list) {
      const live = await sql<{ n: number }>`SELECT count(*)::int AS n FROM allocations`.execute(r.db);
      expect(live.rows[0].n).toBe(0);
    }
  });
});
