// The queue is read in rank order: a cycle that reads only `scanLimit` waiting jobs still sees
// the head of the queue when more older jobs wait than that and none of them can be placed.
import { sql } from 'kysely';
import { checkInvariants } from '../../db/invariants';
import { TIERS, type JobSpec } from '../../api/types';
import { DEFAULT_QUEUE_CONFIG, queueKey, type QueueConfig } from '../../scheduling/queue';
import { waitingQueueQuery } from '../../activities/cycle';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants, setQuota } from '../helpers/fleet';
import { jobProbes, startTemporal, trackedSubmissions, type TemporalHarness } from '../helpers/temporal';

const SCAN_LIMIT = 4;
let t: TestDatabase;
let h: TemporalHarness;

beforeAll(async () => {
  t = await createTestDatabase('backlog');
  await seedFleet(t.db, { nodes: [['A100', 8, 1]] });
  await seedTenants(t.db, ['acme/over', 'acme/ml']);
  // acme/over may hold nothing: its jobs wait for quota that never comes.
  await setQuota(t.db, 'acme/over', 'A100', 0, { borrowing: 0 });
  h = await startTemporal('jobs-queue-backlog');
  await h.startWorker(t.db, { scanLimit: SCAN_LIMIT });
});
afterAll(async () => {
  await h?.teardown();
  await t?.drop();
});

const spec = (jobId: string, o: Partial<JobSpec> = {}): JobSpec => ({
  jobId,
  tenant: 'acme/ml',
  tier: 'basic',
  priority: 0,
  durationMs: 60_000,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 1, topology: 'any' },
  ...o,
});
const { submit, endAll } = trackedSubmissions(() => h.client);

afterEach(async () => {
  await endAll();
  expect(await checkInvariants(t.db)).toEqual([]);
});

test('a fresh premium job is placed behind more older unplaceable jobs than a cycle reads', async () => {
  const backlog = Array.from({ length: SCAN_LIMIT * 3 }, (_, i) => spec(`bl-${String(i).padStart(2, '0')}`, { tenant: 'acme/over' }));
  for (const s of backlog) await submit(s);
  const { until } = jobProbes(h);
  // Each waits for quota; one admitted behind others the cycle does not read (past scanLimit) says
  // it is queued rather than why, as no cycle tries it (the quota reason comes from its own try on
  // admission, which it makes only when nobody ranks ahead of it: a race of the admissions).
  for (const s of backlog) await until(s, (st) => st.phase === 'waiting' && /quota|queued/.test(st.waitingReason ?? ''), 'waiting');
  // Older than anything a cycle stamps now: the backlog is the oldest part of the queue.
  await sql`UPDATE jobs SET enqueued_at = now() - interval '10 seconds' WHERE tenant = 'acme/over'`.execute(t.db);
  // The node is full of premium work nobody may preempt, so the premium job cannot be placed on
  // admission (nothing ranks ahead of it, but there is no room): a cycle must find it when room appears.
  const holder = spec('bl-holder', {
    tier: 'premium',
    request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 8, topology: 'any' },
  });
  await submit(holder);
  await until(holder, (st) => st.phase === 'running', 'running');
  const premium = spec('bl-premium', { tier: 'premium' });
  await submit(premium);
  await until(premium, (st) => st.phase === 'waiting' && /no room/.test(st.waitingReason ?? ''), 'waiting for room');
  await h.client.cancel(holder.tenant, holder.jobId, 'room for bl-premium');
  const placed = await until(premium, (st) => st.phase === 'running', 'running', 20_000);
  expect(placed.placement?.acceleratorType).toBe('A100');
  for (const s of backlog) expect((await jobProbes(h).status(s)).phase).toBe('waiting');
});

test('with the default queue settings the cycle reads the queue through the rank index, never sorting the whole queue', async () => {
  const query = waitingQueueQuery('test', SCAN_LIMIT).compile(t.db);
  // The table is tiny here: forbid the plans a planner prefers for a few rows, so only an index
  // that yields the rank order can serve the statement without a sort.
  const plan = await t.db.transaction().execute(async (trx) => {
    await sql`SET LOCAL enable_seqscan = off`.execute(trx);
    await sql`SET LOCAL enable_sort = off`.execute(trx);
    const explain = sql<{ 'QUERY PLAN': string }>`EXPLAIN ${sql.raw(inline(query.sql, query.parameters))}`;
    return (await explain.execute(trx)).rows.map((r) => r['QUERY PLAN']).join('\n');
  });
  expect(plan).toContain('jobs_queue_rank');
  expect(plan).not.toMatch(/Sort/);
});

test('the queue is read in key order, with the default settings and with others', async () => {
  const now = Date.now();
  const rows = Array.from({ length: 24 }, (_, i) => ({
    id: `ko-${i}`,
    tenant: 'acme',
    tier: TIERS[i % 3],
    region: 'key-order',
    workflow_id: `job/acme/ko-${i}`,
    spec: '{}',
    state: 'waiting' as const,
    epoch: 1,
    priority: (i * 337) % 1001,
    enqueued_at: new Date(now - ((i * 7919) % 180) * 60_000),
  }));
  await t.db.insertInto('jobs').values(rows).execute();
  try {
    const flat: QueueConfig = { tierWeight: 0, agingIntervalMs: 1000, agingStep: 1 };
    for (const cfg of [DEFAULT_QUEUE_CONFIG, flat]) {
      const read = (await waitingQueueQuery('key-order', 10, cfg).execute(t.db)).rows.map((r) => r.id);
      const expected = rows
        .map((r) => ({ id: r.id, key: queueKey({ tier: r.tier, priority: r.priority, enqueuedAt: r.enqueued_at.getTime() }, cfg) }))
        .sort((a, b) => b.key - a.key)
        .slice(0, 10)
        .map((r) => r.id);
      expect(read).toEqual(expected);
    }
  } finally {
    await t.db.deleteFrom('jobs').where('region', '=', 'key-order').execute();
  }
});

/** A statement with its parameters written in, for EXPLAIN (numbers and strings only). */
function inline(text: string, parameters: readonly unknown[]): string {
  return text.replace(/\$(\d+)/g, (_, n: string) => {
    const v = parameters[Number(n) - 1];
    return typeof v === 'number' ? String(v) : `'${String(v).replace(/'/g, "''")}'`;
  });
}
