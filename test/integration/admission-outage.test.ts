// Admission while the inventory cannot be read (a PostgreSQL restart, a lost connection): the step
// fails and is retried by the workflow; it never refuses the job. Found by the chaos run, where two
// jobs admitted during a PostgreSQL restart were rejected with the connection error as their
// reason and no row, and counted lost.
import type { Kysely } from 'kysely';
import { MockActivityEnvironment } from '@temporalio/testing';
import { Allocator } from '../../activities/allocator';
import { admitAndPlace } from '../../activities/admission';
import { admitCopy } from '../../activities/handoff';
import type { Region } from '../../activities/region';
import type { JobSpec } from '../../api/types';
import { openDatabase } from '../../db/connection';
import type { Database } from '../../db/schema';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';

let t: TestDatabase;
/** A database nobody listens for: every statement fails to connect, as during a restart. */
let down: Kysely<Database>;

beforeAll(async () => {
  t = await createTestDatabase('admout');
  await seedFleet(t.db, { nodes: [['A100', 8, 2]], nodesPerRack: 2 });
  await seedTenants(t.db, ['acme']);
  down = openDatabase('postgres://postgres@127.0.0.1:1/unreachable', 1);
});
afterAll(async () => {
  await down.destroy();
  await t.drop();
});

/** The parts of a region admission touches; the peers are one configured peer, `east`. */
function region(allocator: Allocator): Region {
  const part = {
    name: 'local',
    db: t.db,
    allocator,
    peers: { names: ['east'], config: (name: string) => (name === 'east' ? { name } : undefined) },
    kick: async () => undefined,
  };
  // Admission reads only these members; the Temporal client and executor are not needed here.
  return part as unknown as Region;
}

const spec = (jobId: string, devices = 2): JobSpec => ({
  jobId,
  tenant: 'acme',
  tier: 'standard',
  priority: 0,
  durationMs: 1000,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: devices, topology: 'any' },
});

/** Runs admission as the worker does, inside an activity's context (it logs through it). */
const admit = (r: Region, s: JobSpec, workflowId: string) => new MockActivityEnvironment().run(admitAndPlace, r, s, workflowId);

const row = (id: string) => t.db.selectFrom('jobs').select(['state', 'waiting_reason']).where('id', '=', id).executeTakeFirst();

test('an inventory that cannot be read fails admission (to be retried) instead of refusing the job', async () => {
  const unreadable = region(new Allocator(down, { region: 'local' }));
  await expect(admit(unreadable, spec('out-1'), 'job/acme/out-1')).rejects.toThrow(/ECONNREFUSED|connect/);
  expect(await row('out-1')).toBeUndefined();

  // The retry, with the database back, admits and places the job.
  const readable = region(new Allocator(t.db, { region: 'local' }));
  const admitted = await admit(readable, spec('out-1'), 'job/acme/out-1');
  expect(admitted).toMatchObject({ admitted: true, state: 'placed' });
  expect((await row('out-1'))?.state).toBe('placed');
});

test('a request no node here can hold is still refused at once, with the reason', async () => {
  const readable = region(new Allocator(t.db, { region: 'local' }));
  const refused = await admit(readable, { ...spec('out-2', 16), handoff: { enabled: false } }, 'job/acme/out-2');
  expect(refused).toMatchObject({ admitted: false });
  expect(JSON.stringify(refused)).toMatch(/16/);
  expect(await row('out-2')).toBeUndefined();
});

test('a copy handed over while the inventory cannot be read is not refused either', async () => {
  const origin = { region: 'east', epoch: 1 };
  await expect(admitCopy(region(new Allocator(down, { region: 'local' })), spec('out-3'), origin, 'job/acme/out-3@local')).rejects.toThrow(
    /ECONNREFUSED|connect/,
  );
  const copy = await admitCopy(region(new Allocator(t.db, { region: 'local' })), spec('out-3'), origin, 'job/acme/out-3@local');
  expect(copy).toMatchObject({ admitted: true });
});

test('a batch whose inventory cannot be read fails as a whole; a bad request in it is refused alone', async () => {
  await expect(
    new Allocator(down, { region: 'local' }).allocateBatch([{ jobId: 'out-4', epoch: 1, request: spec('out-4').request }]),
  ).rejects.toThrow(/ECONNREFUSED|connect/);
  const [item] = await new Allocator(t.db, { region: 'local' }).allocateBatch([
    { jobId: 'out-5', epoch: 1, request: spec('out-5', 16).request },
  ]);
  expect(item.error).toMatch(/16/);
});
