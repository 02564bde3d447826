// What a region tells its peers about its queue, and what a home counts as on its way to a peer,
// for jobs that accept several accelerator types (most openb jobs accept any). Counted under their
// first type only, the room of their other types looked free to the peers, and bench:global sent
// copies to a region that already had them queued while another region had room.
import { sql } from 'kysely';
import { readInFlight, summarizeInventory } from '../../activities/inventory';
import type { InventorySummary } from '../../api/peers';
import type { HeldSummary } from '../../scheduling/handoff';
import type { StoredJobState } from '../../api/types';
import { choosePeer } from '../../scheduling/handoff';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase('invacct');
  await seedFleet(t.db, {
    nodes: [
      ['A100', 8, 1],
      ['H100', 8, 1],
    ],
  });
  await seedTenants(t.db, ['acme']);
});
afterAll(() => t.drop());

const request = (types: string[], devices: number) => ({ acceleratorTypes: types, workers: 1, devicesPerWorker: devices, topology: 'any' });

async function job(
  id: string,
  o: { types: string[]; devices: number; state: StoredJobState; peer?: string; updatedAt?: Date; tier?: string },
): Promise<void> {
  await t.db
    .insertInto('jobs')
    .values({
      id,
      tenant: 'acme',
      tier: o.tier ?? 'standard',
      region: 'home',
      workflow_id: `job/acme/${id}`,
      spec: JSON.stringify({ jobId: id, tenant: 'acme', tier: o.tier ?? 'standard', priority: 0, request: request(o.types, o.devices) }),
      state: o.state,
      epoch: 1,
      handoff_peer: o.peer ?? null,
      handoff_epoch: o.peer ? 1 : null,
      updated_at: o.updatedAt ?? new Date(),
    })
    .execute();
}

afterEach(async () => {
  await sql`DELETE FROM jobs`.execute(t.db);
});

test('a queued job that accepts two types counts in the queue of each', async () => {
  await job('q-any', { types: ['A100', 'H100'], devices: 4, state: 'waiting' });
  await job('q-a100', { types: ['A100'], devices: 2, state: 'pending' });
  const s = await summarizeInventory(t.db, 'home');
  expect(s.types.A100.queue.standard).toMatchObject({ jobs: 2, milli: 6000 });
  expect(s.types.H100.queue.standard).toMatchObject({ jobs: 1, milli: 4000 });
  expect(s.types.A100.queue.premium).toMatchObject({ jobs: 0, milli: 0 });
});

test('on its way to a peer: every type the job accepts; a handoff still being made counts however long ago it was marked', async () => {
  const summaryAt = Date.now();
  const held = new Map<string, HeldSummary>([
    [
      'eu',
      {
        summary: { region: 'eu', version: 1, generatedAt: new Date(summaryAt).toISOString(), types: {} } as InventorySummary,
        receivedAt: summaryAt,
      },
    ],
  ]);
  const before = new Date(summaryAt - 5_000);
  const after = new Date(summaryAt + 1_000);
  // Marked before the summary and still without the peer's answer: the summary may not show it.
  await job('marked-early', { types: ['A100', 'H100'], devices: 4, state: 'handing-off', peer: 'eu', updatedAt: before });
  // Decided before the summary: the summary shows it (queued or placed there).
  await job('decided-early', { types: ['A100'], devices: 8, state: 'handed-off', peer: 'eu', updatedAt: before });
  // Decided after it: not in it yet.
  await job('decided-late', { types: ['H100'], devices: 2, state: 'handed-off', peer: 'eu', updatedAt: after });
  const inFlight = await readInFlight(t.db, held);
  expect(Object.fromEntries(inFlight.get('eu') ?? [])).toEqual({ A100: 4000, H100: 6000 });
});

test('a peer whose room a multi-type job on its way may take is not offered the next job', async () => {
  // eu's summary: 8 A100 and 8 H100 free, nothing queued.
  const home = await summarizeInventory(t.db, 'eu');
  const held = new Map<string, HeldSummary>([['eu', { summary: { ...home, region: 'eu' }, receivedAt: Date.now() }]]);
  const next = { tier: 'standard' as const, request: { ...request(['A100', 'H100'], 8), topology: 'any' as const } };
  expect(choosePeer(next, ['eu'], held, { now: Date.now(), inFlight: await readInFlight(t.db, held) }).peer).toBe('eu');
  // A job that may take either type is being handed to eu: the next 8-device job fits in neither for sure.
  await job('going', { types: ['A100', 'H100'], devices: 8, state: 'handing-off', peer: 'eu', updatedAt: new Date(Date.now() - 60_000) });
  const choice = choosePeer(next, ['eu'], held, { now: Date.now(), inFlight: await readInFlight(t.db, held) });
  expect(choice.peer).toBeUndefined();
  expect(choice.reason).toMatch(/queued ahead or on its way/);
});
