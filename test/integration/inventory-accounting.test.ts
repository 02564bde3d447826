// What a region tells its peers about its queue, what a home counts as on its way to a peer, and
// how a job that accepts several accelerator types (most openb jobs accept any) is weighed against
// them: per type, the room of the types no queued job named first looked free, and bench:global
// sent copies to a region that already had them queued while another region had room.
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

test('a queued job counts once, under its first type', async () => {
  await job('q-any', { types: ['A100', 'H100'], devices: 4, state: 'waiting' });
  await job('q-h100', { types: ['H100'], devices: 2, state: 'pending' });
  const s = await summarizeInventory(t.db, 'home');
  expect(s.types.A100.queue.standard).toMatchObject({ jobs: 1, milli: 4000 });
  expect(s.types.H100.queue.standard).toMatchObject({ jobs: 1, milli: 2000 });
  expect(s.types.A100.queue.premium).toMatchObject({ jobs: 0, milli: 0 });
});

test('on its way to a peer: a handoff still being made counts however long ago it was marked', async () => {
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
  expect(Object.fromEntries(inFlight.get('eu') ?? [])).toEqual({ A100: 4000, H100: 2000 });
});

test('jobs that accept several types are weighed against the room of all of them together', async () => {
  // eu's summary: 8 A100 and 8 H100 free, nothing queued.
  const eu = await summarizeInventory(t.db, 'eu');
  const held = new Map<string, HeldSummary>([['eu', { summary: { ...eu, region: 'eu' }, receivedAt: Date.now() }]]);
  const next = { tier: 'standard' as const, request: { ...request(['A100', 'H100'], 8), topology: 'any' as const } };
  const choose = async () => choosePeer(next, ['eu'], held, { now: Date.now(), inFlight: await readInFlight(t.db, held) });
  // One 8-device job on its way (counted under A100, its first type): the H100 room is still there.
  await job('going-1', { types: ['A100', 'H100'], devices: 8, state: 'handing-off', peer: 'eu', updatedAt: new Date(Date.now() - 60_000) });
  expect((await choose()).peer).toBe('eu');
  // Two: together they may take both types' room, though neither names H100 first.
  await job('going-2', { types: ['A100', 'H100'], devices: 8, state: 'handing-off', peer: 'eu' });
  const choice = await choose();
  expect(choice.peer).toBeUndefined();
  expect(choice.reason).toMatch(/queued ahead or on its way/);
});
