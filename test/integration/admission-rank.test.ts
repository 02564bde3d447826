// Placement on admission while others wait: a new job is placed at once when no waiting job that
// competes with it (shares an accelerator type) may rank at or ahead of it in the cycle's queue
// order, and joins the queue behind them otherwise. On a real Temporal dev server and PostgreSQL.
import { sql } from 'kysely';
import { checkInvariants } from '../../db/invariants';
import { TIERS, type JobSpec, type JobStatus } from '../../api/types';
import { rankedAheadSql } from '../../activities/admission';
import { DEFAULT_QUEUE_CONFIG, mayRankAhead, type QueueConfig } from '../../scheduling/queue';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { jobProbes, startTemporal, trackedSubmissions, type TemporalHarness } from '../helpers/temporal';

let t: TestDatabase;
let h: TemporalHarness;

beforeAll(async () => {
  t = await createTestDatabase('admrank');
  await seedFleet(t.db, {
    nodes: [
      ['A100', 8, 2],
      ['L4', 8, 1],
    ],
  });
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('jobs-admission-rank');
  await h.startWorker(t.db);
});
afterAll(async () => {
  await h?.teardown();
  await t?.drop();
});

const MINUTE = 60_000;
const spec = (jobId: string, tier: JobSpec['tier'], devices: number, o: Partial<JobSpec> = {}): JobSpec => ({
  jobId,
  tenant: 'acme/ml',
  tier,
  priority: 0,
  durationMs: 10 * MINUTE,
  request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: devices, topology: 'any' },
  ...o,
});
const { submit, endAll } = trackedSubmissions(() => h.client);
const until = (s: JobSpec, ok: (st: JobStatus) => boolean, what: string): Promise<JobStatus> => jobProbes(h).until(s, ok, what);
const running = (s: JobSpec) => until(s, (st) => st.phase === 'running', 'running');
/** Waiting, as its workflow says and as the queue the cycle reads has it. */
const waiting = async (s: JobSpec, reason: RegExp): Promise<void> => {
  await until(s, (st) => st.phase === 'waiting' && reason.test(st.waitingReason ?? ''), `waiting (${reason})`);
  expect((await t.db.selectFrom('jobs').select('state').where('id', '=', s.jobId).executeTakeFirstOrThrow()).state).toBe('waiting');
};

/**
 * How the job came to be placed, from its history: on admission (no placement was ever delivered
 * to it, and it never entered the `waiting` phase: its JobState went from admission straight to
 * placed), or by a cycle (a `placed` signal after it waited).
 */
async function placedOnAdmission(s: JobSpec): Promise<boolean> {
  const events = (await h.client.temporal.workflow.getHandle(`job/${s.tenant}/${s.jobId}`).fetchHistory()).events ?? [];
  const delivered = events.some((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'placed');
  const states = events.flatMap((e) => {
    const field = e.upsertWorkflowSearchAttributesEventAttributes?.searchAttributes?.indexedFields?.JobState?.data;
    return field ? [JSON.parse(Buffer.from(field).toString('utf8')) as string] : [];
  });
  const ran = events.some((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'runJob');
  return ran && !delivered && states.includes('running') && !states.includes('waiting');
}

afterEach(async () => {
  await endAll();
  expect(await checkInvariants(t.db)).toEqual([]);
});

test('a premium job that fits is placed on admission while basic jobs wait for room', async () => {
  // 12 of the 16 A100 devices busy with standard work the basic jobs cannot preempt.
  const holders = [spec('ra-hold-8', 'standard', 8), spec('ra-hold-4', 'standard', 4)];
  for (const s of holders) {
    await submit(s);
    await running(s);
  }
  const basic = [spec('ra-basic-1', 'basic', 8), spec('ra-basic-2', 'basic', 8)];
  for (const s of basic) {
    await submit(s);
    // The second may also be told it is held for the first (equal rank, the same room).
    await waiting(s, /no room|queued|held for higher-ranked job ra-basic-1/);
  }
  const premium = spec('ra-premium', 'premium', 4);
  await submit(premium);
  const placed = await running(premium);
  expect(placed.placement?.acceleratorType).toBe('A100');
  expect(await placedOnAdmission(premium)).toBe(true);
  for (const s of basic) expect((await jobProbes(h).status(s)).phase).toBe('waiting');
});

test('a job that fits is not placed on admission past an equal-ranked job waiting for the same type', async () => {
  // Premium work nobody may preempt holds 12 of 16 A100 devices; a premium job of 8 waits for it.
  const holders = [spec('rb-hold-8', 'premium', 8), spec('rb-hold-4', 'premium', 4)];
  for (const s of holders) {
    await submit(s);
    await running(s);
  }
  const first = spec('rb-first', 'premium', 8);
  await submit(first);
  await waiting(first, /no room/);
  // Same tier and priority, later: it ranks behind, and its 20 minutes would delay the first job
  // (which starts when the holders end), so neither admission nor a cycle places it in the 4 free.
  const later = spec('rb-later', 'premium', 4, { durationMs: 20 * MINUTE });
  await submit(later);
  await waiting(later, /held for higher-ranked job rb-first/);
  // A lower tier is held back all the more.
  const lower = spec('rb-lower', 'standard', 4, { priority: 1000, durationMs: 20 * MINUTE });
  await submit(lower);
  await waiting(lower, /held for higher-ranked job rb-first/);
  for (const id of ['rb-later', 'rb-lower'])
    expect(await t.db.selectFrom('allocations').select('id').where('job_id', '=', id).execute()).toEqual([]);
  // A higher priority ranks ahead of the waiting job: it is placed on admission past it.
  const urgent = spec('rb-urgent', 'premium', 4, { priority: 100, durationMs: 20 * MINUTE });
  await submit(urgent);
  await running(urgent);
  expect(await placedOnAdmission(urgent)).toBe(true);
  // A job for another type competes with none of them: placed on admission though it ranks last.
  const other = spec('rb-other', 'basic', 4, { request: { acceleratorTypes: ['L4'], workers: 1, devicesPerWorker: 4, topology: 'any' } });
  await submit(other);
  await running(other);
  expect(await placedOnAdmission(other)).toBe(true);
  expect((await jobProbes(h).status(first)).phase).toBe('waiting');
  for (const s of [later, lower]) expect((await jobProbes(h).status(s)).phase).toBe('waiting');
});

describe("admission's rank rule in SQL", () => {
  const arrivalAt = Date.UTC(2026, 11, 3, 12, 0, 0);
  const arrival = { jobId: 'arrival', tier: 'standard' as const, priority: 500, request: spec('x', 'standard', 1).request };
  /** Waiting jobs around the arrival's rank: every tier, priorities across it, ages up to 45 minutes. */
  const cases = Array.from({ length: 90 }, (_, i) => ({
    tier: TIERS[i % 3],
    priority: (i * 337) % 1001,
    enqueuedAt: arrivalAt - ((i * 7919) % 45) * MINUTE - ((i * 131) % 60) * 1000,
  }));
  const sqlVerdicts = async (cfg: QueueConfig, types: string[]): Promise<boolean[]> => {
    // One region per waiting job, so each EXISTS sees that job alone.
    await t.db
      .insertInto('jobs')
      .values(
        cases.map((c, i) => ({
          id: `rr-${i}`,
          tenant: 'acme/ml',
          tier: c.tier,
          priority: c.priority,
          region: `rank-rule-${i}`,
          workflow_id: `job/acme/ml/rr-${i}`,
          spec: JSON.stringify({ request: { acceleratorTypes: types } }),
          state: 'waiting' as const,
          epoch: 1,
          enqueued_at: new Date(c.enqueuedAt),
        })),
      )
      .execute();
    try {
      return await Promise.all(
        cases.map(async (_, i) => {
          const at = sql<Date>`${new Date(arrivalAt).toISOString()}::timestamptz`;
          const r = await sql<{ ahead: boolean }>`SELECT ${rankedAheadSql(`rank-rule-${i}`, arrival, at, cfg)} AS ahead`.execute(t.db);
          return r.rows[0].ahead;
        }),
      );
    } finally {
      await t.db.deleteFrom('jobs').where('region', 'like', 'rank-rule-%').execute();
    }
  };

  test('agrees with mayRankAhead for waiting jobs of every tier, priority and age, with the default settings and others', async () => {
    const flat: QueueConfig = { tierWeight: 0, agingIntervalMs: 10 * MINUTE, agingStep: 30 };
    for (const cfg of [DEFAULT_QUEUE_CONFIG, flat]) {
      const expected = cases.map((c) => mayRankAhead(c, { ...arrival, enqueuedAt: arrivalAt }, cfg));
      // Both verdicts occur, so the comparison means something.
      expect(new Set(expected)).toEqual(new Set([true, false]));
      expect(await sqlVerdicts(cfg, ['A100'])).toEqual(expected);
    }
  });

  test('counts only waiting jobs that could use one of the arrival’s types', async () => {
    expect(await sqlVerdicts(DEFAULT_QUEUE_CONFIG, ['L4'])).toEqual(cases.map(() => false));
    const expected = cases.map((c) => mayRankAhead(c, { ...arrival, enqueuedAt: arrivalAt }));
    expect(await sqlVerdicts(DEFAULT_QUEUE_CONFIG, ['L4', 'A100'])).toEqual(expected);
  });

  test('reads the rank index from the head of the queue down to the arrival, not every waiting job', async () => {
    // A long queue, so the planner weighs the indexes as it would in a busy region.
    const now = Date.now();
    for (let b = 0; b < 5; b++)
      await t.db
        .insertInto('jobs')
        .values(
          Array.from({ length: 1000 }, (_, k) => {
            const i = b * 1000 + k;
            return {
              id: `rp-${i}`,
              tenant: 'acme/ml',
              tier: TIERS[i % 3],
              priority: (i * 37) % 1001,
              region: 'rank-plan',
              workflow_id: `job/acme/ml/rp-${i}`,
              spec: JSON.stringify({ request: { acceleratorTypes: ['A100'] } }),
              state: 'waiting' as const,
              epoch: 1,
              enqueued_at: new Date(now - (i % 7200) * 1000),
            };
          }),
        )
        .execute();
    try {
      await sql`ANALYZE jobs`.execute(t.db);
      const ahead = rankedAheadSql('rank-plan', { ...arrival, tier: 'basic', priority: 0 }, sql`now()`);
      const plan = (await sql<{ 'QUERY PLAN': string }>`EXPLAIN SELECT ${ahead}`.execute(t.db)).rows.map((r) => r['QUERY PLAN']).join('\n');
      // The queue key's bound is an index condition of the rank index: the scan stops where no job can rank ahead.
      expect(plan).toContain('jobs_queue_rank');
      expect(plan).toMatch(/Index Cond: .*region.*CASE tier.*>=/);
    } finally {
      await t.db.deleteFrom('jobs').where('region', '=', 'rank-plan').execute();
    }
  });
});
