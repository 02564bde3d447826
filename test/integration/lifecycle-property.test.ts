// A property test of the lifecycle's database side: random sequences of submit, scheduling
// cycle, cancel, complete and requeue — the steps the workflows take — against the real
// PostgreSQL with a cohort quota. After every sequence the invariant checker is clean, no waiting
// job holds devices, and once everything is released no capacity or quota is left behind.
import fc from 'fast-check';
import { sql } from 'kysely';
import { checkInvariants } from '../../db/invariants';
import { Allocator } from '../../activities/allocator';
import { runCycle } from '../../activities/cycle';
import { enqueueJob, requeueJob } from '../../activities/jobs';
import type { JobSpec, Tier } from '../../api/types';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants, setQuota } from '../helpers/fleet';

let t: TestDatabase;
let allocator: Allocator;

beforeAll(async () => {
  t = await createTestDatabase('prop');
  await seedFleet(t.db, {
    nodes: [
      ['A100', 8, 4],
      ['H100', 4, 2],
    ],
  });
  await seedTenants(t.db, ['acme/a', 'acme/b', 'globex/x']);
  await setQuota(t.db, 'acme', 'A100', 24);
  await setQuota(t.db, 'acme/a', 'A100', 12, { borrowing: 6 });
  await setQuota(t.db, 'acme/b', 'A100', 12, { lending: 6 });
  allocator = new Allocator(t.db, 'best-fit');
});
afterAll(async () => {
  await t?.drop();
});

const TENANTS = ['acme/a', 'acme/b', 'globex/x'];
const TIERS: Tier[] = ['premium', 'standard', 'basic'];

type Op =
  | { op: 'submit'; tenant: number; tier: number; workers: number; devices: number; share: boolean; h100: boolean }
  | { op: 'cycle' }
  | { op: 'cancel' | 'complete' | 'requeue'; pick: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant('submit' as const),
    tenant: fc.nat(2),
    tier: fc.nat(2),
    workers: fc.integer({ min: 1, max: 3 }),
    devices: fc.integer({ min: 1, max: 8 }),
    share: fc.boolean(),
    h100: fc.boolean(),
  }),
  fc.constant({ op: 'cycle' as const }),
  fc.record({ op: fc.constantFrom('cancel' as const, 'complete' as const, 'requeue' as const), pick: fc.nat(50) }),
);

let run = 0;

test('random submit/cycle/cancel/complete/requeue sequences keep every invariant', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 30 }), async (ops) => {
      run++;
      // Each run starts from an empty fleet, even after an earlier run failed midway.
      for (const j of await t.db
        .selectFrom('jobs')
        .select(['id', 'epoch'])
        .where('state', 'in', ['waiting', 'placed', 'running'])
        .execute()) {
        await allocator.finish(j.id, j.epoch, 'cancelled', null);
      }
      const live: string[] = [];
      let n = 0;
      const jobOf = async (pick: number) => {
        if (!live.length) return undefined;
        const id = live[pick % live.length];
        return t.db.selectFrom('jobs').select(['id', 'state', 'epoch']).where('id', '=', id).executeTakeFirstOrThrow();
      };
      const finish = async (id: string, epoch: number, state: 'cancelled' | 'completed') => {
        await allocator.finish(id, epoch, state, null);
        live.splice(live.indexOf(id), 1);
      };
      for (const o of ops) {
        if (o.op === 'submit') {
          const id = `p${run}-${n++}`;
          const spec: JobSpec = {
            jobId: id,
            tenant: TENANTS[o.tenant],
            tier: TIERS[o.tier],
            priority: 0,
            durationMs: 60_000,
            request: o.share
              ? {
                  acceleratorTypes: o.h100 ? ['H100', 'A100'] : ['A100'],
                  workers: o.workers,
                  devicesPerWorker: 0,
                  milliPerWorker: 250 * o.workers,
                  topology: 'any',
                }
              : {
                  acceleratorTypes: o.h100 ? ['H100', 'A100'] : ['A100'],
                  workers: o.workers,
                  devicesPerWorker: Math.min(o.devices, 4),
                  topology: 'any',
                },
          };
          await enqueueJob(t.db, spec, 'test', `job/${spec.tenant}/${id}`);
          live.push(id);
        } else if (o.op === 'cycle') {
          await runCycle(t.db, allocator, 'test');
        } else {
          const job = await jobOf(o.pick);
          if (!job) continue;
          if (o.op === 'cancel') await finish(job.id, job.epoch, 'cancelled');
          else if (o.op === 'complete' && job.state === 'placed') await finish(job.id, job.epoch, 'completed');
          else if (o.op === 'requeue' && job.state === 'placed') {
            await allocator.release(job.id, job.epoch);
            expect(await requeueJob(t.db, job.id, job.epoch, 1, 'property test')).toBe(job.epoch + 1);
          }
        }
      }
      expect(await checkInvariants(t.db)).toEqual([]);
      const waitingHolders = await sql<{ id: string }>`
        SELECT DISTINCT j.id FROM jobs j JOIN allocations a ON a.job_id = j.id WHERE j.state = 'waiting'`.execute(t.db);
      expect(waitingHolders.rows).toEqual([]);
      // Wind down: everything released leaves no capacity and no quota behind.
      for (const id of [...live]) {
        const job = await t.db.selectFrom('jobs').select(['epoch']).where('id', '=', id).executeTakeFirstOrThrow();
        await finish(id, job.epoch, 'cancelled');
      }
      expect(await checkInvariants(t.db)).toEqual([]);
      const used = await t.db.selectFrom('quotas').select(['tenant', 'used_milli']).where('used_milli', '<>', '0').execute();
      expect(used).toEqual([]);
      const busy = await sql<{ n: number }>`SELECT count(*)::int AS n FROM nodes WHERE free_whole <> device_count`.execute(t.db);
      expect(busy.rows[0].n).toBe(0);
    }),
    { numRuns: 25 },
  );
});
