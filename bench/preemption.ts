// `npm run bench:preemption`: on a full cluster (1k devices by default) of long-running basic
// jobs, submits premium jobs at a steady rate and reports how long each waits from submit to
// placed (with and without the victims' grace period), how many victims each preemption takes,
// and the device-seconds of work the victims lose against the least any chooser could lose.
// Runs one in-memory Temporal dev server, a fresh PostgreSQL bench database and in-process
// scheduler workers. Settings: PREEMPT_DEVICES (fleet size, multiple of 8), PREEMPT_JOBS
// (premium jobs), PREEMPT_RATE (premium jobs/s), PREEMPT_GRACE_MS (victims' grace period),
// PREEMPT_FILL_RATE (basic submissions/s while filling), PREEMPT_TIMEOUT_S (wait for the last
// premium placement), PREEMPT_WORKERS (in-process workers; default: enough activity slots for
// every running job, since each running job holds one for its whole run), PREEMPT_SEED,
// PREEMPT_BASELINE_JOBS (standard jobs submitted at PREEMPT_RATE to the empty cluster before the
// fill: the "any job" a premium job that finds room must be as fast as).
import os from 'node:os';
import { sql, type Kysely } from 'kysely';
import type { Client } from '@temporalio/client';
import type { SchedulerClient } from '../api/client';
import { schedulerWorkflowId } from '../api/ids';
import type { JobSpec, ResourceRequest } from '../api/types';
import { MAX_WATCHED_RUNS } from '../worker/worker';
import { checkInvariants } from '../db/invariants';
import type { Database } from '../db/schema';
import { envNumber, SettingError } from './env';
import { BENCH_REGION, BENCH_TYPES, seedSyntheticFleet, seeded } from './fleet';
import { freshBenchDatabase, runBench, say, seedTenants, sleep } from './harness';
import { fmt, quantiles } from './stats';
import { benchBundle, benchServer, eventMs, serveBenchRegion, wide, type HistoryEvent } from './temporal';

/** Rounded to whole nodes of 8. */
const DEVICES = Math.round(envNumber('PREEMPT_DEVICES', 1000, { integer: true, min: 48 }) / 8) * 8;
const PREMIUM_JOBS = envNumber('PREEMPT_JOBS', 100, { integer: true, min: 1 });
const RATE = envNumber('PREEMPT_RATE', 5, { min: 0.01 });
const GRACE_MS = envNumber('PREEMPT_GRACE_MS', 2000, { integer: true, min: 0 });
const FILL_RATE = envNumber('PREEMPT_FILL_RATE', 20, { min: 0.1 });
const TIMEOUT_MS = envNumber('PREEMPT_TIMEOUT_S', 600, { min: 1 }) * 1000;
const SEED = envNumber('PREEMPT_SEED', 7, { integer: true, min: 0 });
const BASELINE_JOBS = envNumber('PREEMPT_BASELINE_JOBS', 50, { integer: true, min: 1 });
/** Targets (issue 16): submit→placed minus grace p99, and the direct premium placement against the baseline. */
const TARGET_P99_MS = 2000;
const TARGET_DIRECT_RATIO = 1.5;
/** A baseline job runs this long, so the baseline has left the cluster before the fill starts. */
const BASELINE_RUN_MS = 500;
/** Job runs one worker watches at once: each running job holds one of its activity slots. */
const SLOTS_PER_WORKER = MAX_WATCHED_RUNS;
/** Long enough that nothing finishes during the bench. */
const LONG_MS = 6 * 3600_000;
/** Share of basic jobs that checkpoint when preempted (they lose ~nothing). */
const CHECKPOINTABLE_SHARE = 0.3;

const TASK_QUEUE = 'preemption-bench';
const BASIC_TENANT = 'bench/basic';
const PREMIUM_TENANT = 'bench/prem';
const STANDARD_TENANT = 'bench/std';
const POLL_MS = 100;
const PROGRESS_EVERY_MS = 10_000;

const load = (): string =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
/** a / b for the tables; a minimum of (nearly) zero makes any real loss infinitely worse. */
const ratioText = (a: number, b: number): string => (b >= 0.05 ? fmt(a / b, 2) : a >= 0.05 ? '∞' : '1.00');
/** Label column of the tables. */
const WIDTH = 42;

interface Shape {
  workers: number;
  devicesPerWorker: number;
}
const devicesOf = (s: Shape): number => s.workers * s.devicesPerWorker;
const shapeName = (s: Shape): string => (s.workers > 1 ? `${s.workers}×${s.devicesPerWorker}` : `${s.devicesPerWorker}`);

/**
 * The basic fill, as shares of each type's devices; the last shape takes the remainder so the
 * type is exactly full. Per-worker sizes are powers of two placed largest first (one wave per
 * size), so every node's free count stays a multiple of the next size and packing is perfect
 * whatever node the placement policy picks.
 */
const FILL_MIX: Array<{ shape: Shape; share: number }> = [
  { shape: { workers: 2, devicesPerWorker: 8 }, share: 0.1 },
  { shape: { workers: 1, devicesPerWorker: 8 }, share: 0.3 },
  { shape: { workers: 2, devicesPerWorker: 4 }, share: 0.1 },
  { shape: { workers: 1, devicesPerWorker: 4 }, share: 0.2 },
  { shape: { workers: 2, devicesPerWorker: 2 }, share: 0.05 },
  { shape: { workers: 1, devicesPerWorker: 2 }, share: 0.15 },
  { shape: { workers: 1, devicesPerWorker: 1 }, share: 0.1 },
];

/** Premium shapes, drawn with these weights. */
const PREMIUM_MIX: Array<{ shape: Shape; weight: number }> = [
  { shape: { workers: 1, devicesPerWorker: 1 }, weight: 0.25 },
  { shape: { workers: 1, devicesPerWorker: 2 }, weight: 0.25 },
  { shape: { workers: 1, devicesPerWorker: 4 }, weight: 0.22 },
  { shape: { workers: 1, devicesPerWorker: 8 }, weight: 0.16 },
  { shape: { workers: 2, devicesPerWorker: 2 }, weight: 0.06 },
  { shape: { workers: 2, devicesPerWorker: 4 }, weight: 0.06 },
];

function request(type: string, s: Shape): ResourceRequest {
  return { acceleratorTypes: [type], workers: s.workers, devicesPerWorker: s.devicesPerWorker, topology: 'any' };
}

/** Basic specs that fill each type's capacity exactly, grouped into waves by per-worker size (largest first). */
function fillPlan(capacity: Map<string, number>, rng: () => number): JobSpec[][] {
  const waves = new Map<number, JobSpec[]>();
  let n = 0;
  for (const [type, devices] of capacity) {
    let left = devices;
    FILL_MIX.forEach(({ shape, share }, i) => {
      const count = i === FILL_MIX.length - 1 ? left / devicesOf(shape) : Math.floor((share * devices) / devicesOf(shape));
      left -= count * devicesOf(shape);
      for (let k = 0; k < count; k++) {
        const spec: JobSpec = {
          jobId: `b-${String(++n).padStart(4, '0')}`,
          tenant: BASIC_TENANT,
          tier: 'basic',
          priority: 0,
          durationMs: LONG_MS,
          request: request(type, shape),
          checkpointable: rng() < CHECKPOINTABLE_SHARE,
        };
        waves.set(shape.devicesPerWorker, [...(waves.get(shape.devicesPerWorker) ?? []), spec]);
      }
    });
  }
  // Shuffled within a wave, so the start order (and so the work lost) does not follow type or id.
  return [...waves.entries()].sort((a, b) => b[0] - a[0]).map(([, specs]) => shuffle(specs, rng));
}

function premiumPlan(rng: () => number): JobSpec[] {
  const total = PREMIUM_MIX.reduce((s, m) => s + m.weight, 0);
  return Array.from({ length: PREMIUM_JOBS }, (_, i) => {
    let r = rng() * total;
    const { shape } = PREMIUM_MIX.find((m) => (r -= m.weight) < 0) ?? PREMIUM_MIX[0];
    return {
      jobId: `p-${String(i + 1).padStart(3, '0')}`,
      tenant: PREMIUM_TENANT,
      tier: 'premium',
      priority: 0,
      durationMs: LONG_MS,
      request: request(BENCH_TYPES[i % BENCH_TYPES.length], shape),
    };
  });
}

/** The baseline: standard jobs of the premium shapes, short enough to leave before the fill. */
function baselinePlan(rng: () => number): JobSpec[] {
  const total = PREMIUM_MIX.reduce((s, m) => s + m.weight, 0);
  return Array.from({ length: BASELINE_JOBS }, (_, i) => {
    let r = rng() * total;
    const { shape } = PREMIUM_MIX.find((m) => (r -= m.weight) < 0) ?? PREMIUM_MIX[0];
    return {
      jobId: `s-${String(i + 1).padStart(3, '0')}`,
      tenant: STANDARD_TENANT,
      tier: 'standard',
      priority: 0,
      durationMs: BASELINE_RUN_MS,
      request: request(BENCH_TYPES[i % BENCH_TYPES.length], shape),
    };
  });
}

function shuffle<T>(items: T[], rng: () => number): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/** Submits specs at `rate` per second, each at its slot, without waiting for the previous call. */
async function submitAtRate(client: SchedulerClient, specs: JobSpec[], rate: number, submittedAt?: Map<string, number>): Promise<void> {
  const t0 = Date.now();
  const calls: Array<Promise<string>> = [];
  for (const [i, spec] of specs.entries()) {
    const wait = t0 + (i * 1000) / rate - Date.now();
    if (wait > 0) await sleep(wait);
    submittedAt?.set(spec.jobId, Date.now());
    calls.push(client.submit(spec));
  }
  await Promise.all(calls);
}

/** Waits until every listed job holds its placement (state placed or running). */
async function waitPlaced(
  db: Kysely<Database>,
  ids: string[],
  what: string,
  timeoutMs: number,
  state: Array<'placed' | 'running' | 'completed'> = ['placed', 'running'],
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastReport = Date.now();
  for (;;) {
    const n = await db
      .selectFrom('jobs')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('id', 'in', ids)
      .where('state', 'in', state)
      .executeTakeFirstOrThrow();
    if (Number(n.n) === ids.length) return;
    if (Date.now() > deadline) {
      const stuck = await db
        .selectFrom('jobs')
        .select(['id', 'state', 'waiting_reason'])
        .where('id', 'in', ids)
        .where('state', 'not in', state)
        .limit(3)
        .execute();
      const running = await db
        .selectFrom('jobs')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('state', '=', 'running')
        .executeTakeFirstOrThrow();
      throw new Error(
        `${what}: only ${n.n} of ${ids.length} jobs reached ${state.join('/')} within ${timeoutMs / 1000} s ` +
          `(${running.n} jobs running in all; each holds one of the workers' ${SLOTS_PER_WORKER}-per-worker activity slots). ` +
          `Examples: ${stuck.map((s) => `${s.id} ${s.state}${s.waiting_reason ? ` (${s.waiting_reason})` : ''}`).join('; ') || 'none recorded'}`,
      );
    }
    if (Date.now() - lastReport >= PROGRESS_EVERY_MS) {
      lastReport = Date.now();
      say(`  ${what}: ${n.n}/${ids.length} ${state.join('/')}; load ${load()}`);
    }
    await sleep(250);
  }
}

/** One preemption as the scheduler planned it, with the bound computed on the same cluster state. */
interface PlanSnapshot {
  preemptor: string;
  plannedAt: number;
  victims: string[];
  /** Least device-ms any chooser could lose for this preemptor (see `snapshotPlan`). */
  boundDeviceMs: number;
  /** The looser bound that also ignores which node each device is on. */
  boundAnyNodeMs: number;
  /** The chosen victims under the same cost model (loss at plan time plus the grace period). */
  chosenDeviceMs: number;
  /** Bound and choice again with checkpointable jobs costed like the others (the chooser's own model: time since placed). */
  boundIgnoringCheckpointsMs: number;
  chosenIgnoringCheckpointsMs: number;
  /** No way to fit the preemptor on the candidates seen when observed (the bounds are then 0). */
  short: boolean;
}

/**
 * Least cost of room for `workers` × `perWorker` devices, each worker on one node, given each
 * candidate device's cost by node. Exact for one or two workers (two may share a node); for more
 * it falls back to the cheapest devices anywhere. Undefined when nothing fits.
 */
function cheapestRoom(devices: ReadonlyArray<{ node: number; cost: number }>, workers: number, perWorker: number): number | undefined {
  const byNode = new Map<number, number[]>();
  for (const d of devices) byNode.set(d.node, [...(byNode.get(d.node) ?? []), d.cost]);
  const sums = [...byNode.values()].map((costs) => {
    const sorted = costs.sort((a, b) => a - b);
    const prefix = [0];
    for (const c of sorted) prefix.push(prefix[prefix.length - 1] + c);
    return (k: number): number => (k < prefix.length ? prefix[k] : Infinity);
  });
  let best = Infinity;
  if (workers === 1) for (const c of sums) best = Math.min(best, c(perWorker));
  else if (workers === 2) {
    const one = sums.map((c) => c(perWorker)).sort((a, b) => a - b);
    if (one.length >= 2) best = one[0] + one[1];
    for (const c of sums) best = Math.min(best, c(2 * perWorker));
  } else {
    const all = devices.map((d) => d.cost).sort((a, b) => a - b);
    if (all.length >= workers * perWorker) best = all.slice(0, workers * perWorker).reduce((a, b) => a + b, 0);
  }
  return Number.isFinite(best) ? best : undefined;
}

/**
 * The "minimum possible" loss for one preemption, read right after the scheduler recorded its
 * nominations. Over the preemptor's candidate nodes at the moment of planning (its type, ready,
 * not kept for another preemptor), each device has a cost: 0 when free; 0 when its job is
 * checkpointable (it checkpoints when stopped); otherwise the job's progress since its last
 * checkpoint at planning time plus the grace period it must still run. Premium jobs and jobs
 * already winding down for an earlier preemptor are not candidates. The bound is the cheapest
 * room for the request: per worker, its devices on one node, summing their costs. It ignores
 * whole-job granularity (it may take part of a job, or one node of a gang) and rack/pod topology,
 * so no chooser facing the same state can lose less; it is a per-preemption bound, not an optimum
 * over different preemption histories.
 */
async function snapshotPlan(db: Kysely<Database>, preemptor: string, plannedAt: Date, spec: JobSpec): Promise<PlanSnapshot> {
  const type = spec.request.acceleratorTypes[0];
  const { workers, devicesPerWorker } = spec.request;
  // Progress a live non-premium job would lose if stopped at planning time, from the executor's row.
  const lostAtPlan = sql`
    SELECT j.id, j.epoch, (j.spec->>'checkpointable')::boolean IS TRUE AS ckpt,
           GREATEST(0, coalesce(LEAST(e.duration_ms, e.progress_ms + EXTRACT(EPOCH FROM clock_timestamp() - e.resumed_at) * 1000) - e.checkpoint_ms, 0)
                       - EXTRACT(EPOCH FROM clock_timestamp() - ${plannedAt}::timestamptz) * 1000)::float8 AS ms
    FROM jobs j LEFT JOIN executions e ON e.job_id = j.id AND e.epoch = j.epoch AND e.state = 'running'
    WHERE j.state IN ('placed', 'running') AND j.tier <> 'premium'`;
  const candidates = await sql<{ node: number; cost: number; naive: number }>`
    WITH earlier AS (SELECT victim, node_id FROM nominations WHERE preemptor <> ${preemptor} AND created_at < ${plannedAt}::timestamptz),
    cand AS (SELECT id, free_milli FROM nodes WHERE accelerator_type = ${type} AND state = 'ready' AND id NOT IN (SELECT node_id FROM earlier)),
    lost AS (${lostAtPlan})
    SELECT cand.id AS node, 0::float8 AS cost, 0::float8 AS naive FROM cand CROSS JOIN LATERAL unnest(cand.free_milli) AS f WHERE f = 1000
    UNION ALL
    SELECT a.node_id, CASE WHEN l.ckpt THEN 0 ELSE l.ms + ${GRACE_MS} END, l.ms + ${GRACE_MS}
    FROM allocations a JOIN lost l ON l.id = a.job_id AND l.epoch = a.epoch JOIN cand ON cand.id = a.node_id
    WHERE a.job_id NOT IN (SELECT victim FROM earlier)`.execute(db);
  const chosen = await sql<{ id: string; ckpt: boolean; ms: number; devices: number }>`
    WITH lost AS (${lostAtPlan})
    SELECT l.id, l.ckpt, l.ms, (SELECT count(*)::int FROM allocations a WHERE a.job_id = l.id AND a.epoch = l.epoch) AS devices
    FROM lost l WHERE l.id IN (SELECT victim FROM nominations WHERE preemptor = ${preemptor})`.execute(db);
  const victims = await db.selectFrom('nominations').select('victim').distinct().where('preemptor', '=', preemptor).execute();
  const rows = candidates.rows;
  const bound = cheapestRoom(rows, workers, devicesPerWorker);
  const naive = cheapestRoom(
    rows.map((r) => ({ node: r.node, cost: r.naive })),
    workers,
    devicesPerWorker,
  );
  const anyNode = cheapestRoom(
    rows.map((r) => ({ node: 0, cost: r.cost })),
    1,
    workers * devicesPerWorker,
  );
  return {
    preemptor,
    plannedAt: plannedAt.getTime(),
    victims: victims.map((v) => v.victim),
    boundDeviceMs: bound ?? 0,
    boundAnyNodeMs: anyNode ?? 0,
    chosenDeviceMs: chosen.rows.reduce((s, v) => s + v.devices * (v.ckpt ? 0 : v.ms + GRACE_MS), 0),
    boundIgnoringCheckpointsMs: naive ?? 0,
    chosenIgnoringCheckpointsMs: chosen.rows.reduce((s, v) => s + v.devices * (v.ms + GRACE_MS), 0),
    short: bound === undefined,
  };
}

interface Watch {
  placedAt: Map<string, number>;
  plans: PlanSnapshot[];
  /** Premium jobs seen (in the sampled waiting reasons) waiting behind a higher-ranked job's backfill hold. */
  everHeld: Set<string>;
}

/** How often the waiting premium jobs' own status is sampled for why they wait. */
const REASON_SAMPLE_MS = 2000;

/** Polls the database until every premium job is placed (or time runs out), snapshotting each preemption as it is planned. */
async function watchPremium(
  db: Kysely<Database>,
  premium: Map<string, JobSpec>,
  submitted: Map<string, number>,
  deadlineOf: () => number,
): Promise<Watch> {
  const w: Watch = { placedAt: new Map(), plans: [], everHeld: new Set() };
  const held = w.everHeld;
  const lastPlan = new Map<string, number>();
  const started = Date.now();
  let lastReport = started;
  let lastSample = 0;
  let why = new Map<string, number>();
  while (w.placedAt.size < premium.size && Date.now() < deadlineOf()) {
    const noms = await db
      .selectFrom('nominations')
      .select(['preemptor', (eb) => eb.fn.min<Date>('created_at').as('at')])
      .groupBy('preemptor')
      .execute();
    for (const n of noms) {
      const spec = premium.get(n.preemptor);
      const at = new Date(n.at).getTime();
      if (!spec || (lastPlan.get(n.preemptor) ?? 0) >= at) continue;
      lastPlan.set(n.preemptor, at);
      w.plans.push(await snapshotPlan(db, n.preemptor, new Date(n.at), spec));
    }
    const placed = await db
      .selectFrom('jobs')
      .select(['id', 'placed_at'])
      .where('tier', '=', 'premium')
      .where('placed_at', 'is not', null)
      .execute();
    for (const p of placed) if (!w.placedAt.has(p.id) && p.placed_at) w.placedAt.set(p.id, p.placed_at.getTime());
    if (Date.now() - lastSample >= REASON_SAMPLE_MS) {
      // From the database, which the allocator keeps current (asking 100 workflows would load the server measured).
      lastSample = Date.now();
      const waiting = await db
        .selectFrom('jobs')
        .select(['id', 'state', 'waiting_reason'])
        .where('tier', '=', 'premium')
        .where('state', 'not in', ['placed', 'running'])
        .execute();
      why = new Map();
      for (const w of waiting) {
        const r = w.waiting_reason ?? w.state;
        const kind = r.startsWith('held for')
          ? 'held behind a higher-ranked job'
          : r.startsWith('preempting')
            ? 'preempting'
            : r.startsWith('queued')
              ? 'queued'
              : r.split(':')[0];
        why.set(kind, (why.get(kind) ?? 0) + 1);
        if (kind.startsWith('held')) held.add(w.id);
      }
    }
    if (Date.now() - lastReport >= PROGRESS_EVERY_MS) {
      lastReport = Date.now();
      const victims = w.plans.reduce((s, p) => s + p.victims.length, 0);
      say(
        `  [${fmt((Date.now() - started) / 1000)} s] premium submitted ${submitted.size}/${premium.size}, placed ${w.placedAt.size}, ` +
          `preemptions planned ${w.plans.length} (${victims} victims), winding down now ${noms.length}; ` +
          `waiting: ${[...why].map(([k, v]) => `${v} ${k}`).join(', ') || 'none'}; load ${load()}`,
      );
    }
    await sleep(POLL_MS);
  }
  return w;
}

/** One victim's preemption, step by step, from its workflow history (server times). */
interface VictimSteps {
  preemptor: string;
  /** Scheduler's plan → the job saw the `preempt` signal. */
  signal: number;
  /** Signal → grace timer started (the workflow task that handled the signal). */
  handled: number;
  /** Timer started → fired: the grace period itself. */
  grace: number;
  /**
   * Timer → `requeue` done: the stand check, checkpoint and stop, release and requeue. One span:
   * run as local activities they complete inside one workflow task, and the history then dates
   * them all at its end.
   */
  release: number;
  /** When its grace timer fired, and when its requeue (the release) completed. */
  graceEndAt: number;
  releasedAt: number;
}

/** Activity completions in a history, regular (ActivityTaskCompleted) or local (a marker each). */
function activityCompletions(events: HistoryEvent[]): Array<{ name: string; at: number }> {
  const scheduled = new Map<number, string>();
  const out: Array<{ name: string; at: number }> = [];
  for (const e of events) {
    const name = e.activityTaskScheduledEventAttributes?.activityType?.name;
    if (name) scheduled.set(wide(e.eventId), name);
    const done = e.activityTaskCompletedEventAttributes;
    if (done) out.push({ name: scheduled.get(wide(done.scheduledEventId)) ?? '?', at: eventMs(e) });
    const marker = e.markerRecordedEventAttributes;
    const data = marker?.markerName === 'core_local_activity' ? marker.details?.data?.payloads?.[0]?.data : undefined;
    if (data) {
      const d = JSON.parse(Buffer.from(data).toString('utf8')) as { activity_type?: string; activityType?: string };
      out.push({ name: d.activity_type ?? d.activityType ?? '?', at: eventMs(e) });
    }
  }
  return out;
}

async function victimSteps(temporal: Client, jobId: string, preemptor: string, plannedAt: number): Promise<VictimSteps | undefined> {
  const history = await temporal.workflow.getHandle(`job/${BASIC_TENANT}/${jobId}`).fetchHistory();
  const events = history.events ?? [];
  const done = activityCompletions(events);
  const completed = (name: string, after: number): number | undefined => done.find((c) => c.name === name && c.at >= after)?.at;
  const signal = events.find((e) => {
    const a = e.workflowExecutionSignaledEventAttributes;
    const data = a?.signalName === 'preempt' ? a.input?.payloads?.[0]?.data : undefined;
    return data ? (JSON.parse(Buffer.from(data).toString('utf8')) as { preemptor?: string }).preemptor === preemptor : false;
  });
  if (!signal) return undefined;
  const t0 = eventMs(signal);
  const started = events.find((e) => e.timerStartedEventAttributes && eventMs(e) >= t0);
  const timer = started && events.find((e) => wide(e.timerFiredEventAttributes?.startedEventId) === wide(started.eventId));
  const timerAt = timer ? eventMs(timer) : undefined;
  const stands = timerAt === undefined ? undefined : completed('preemptionStands', timerAt);
  const stop = stands === undefined ? undefined : completed('stopRun', stands);
  const requeue = stop === undefined ? undefined : completed('requeue', stop);
  if (!started || timerAt === undefined || stands === undefined || stop === undefined || requeue === undefined) return undefined;
  return {
    preemptor,
    signal: t0 - plannedAt,
    handled: eventMs(started) - t0,
    grace: timerAt - eventMs(started),
    release: requeue - timerAt,
    graceEndAt: timerAt,
    releasedAt: requeue,
  };
}

/** One scheduling cycle as the region scheduler's history records it (server times). */
interface CycleSpan {
  scheduledAt: number;
  completedAt: number;
  /** The cycle's own time (its result's `ms`: queue read, placement, preemption planning), without debounce and delivery. */
  ms: number;
  considered: number;
  placed: number;
  /** Its steps (absent from cycles of a scheduler that did not report them). */
  phases?: Partial<Record<'queue' | 'capacity' | 'place' | 'plan' | 'deliver', number>>;
}

/** The region scheduler's cycles and kicks between `from` and `to`, over all its runs (it continues as new). */
async function schedulerHistory(temporal: Client, from: number, to: number): Promise<{ cycles: CycleSpan[]; kicks: number[] }> {
  const workflowId = schedulerWorkflowId(BENCH_REGION);
  const cycles: CycleSpan[] = [];
  const kicks: number[] = [];
  for await (const run of temporal.workflow.list({ query: `WorkflowId = '${workflowId}'` })) {
    const events = (await temporal.workflow.getHandle(workflowId, run.runId).fetchHistory()).events ?? [];
    const scheduled = new Map<number, number>();
    for (const e of events) {
      const at = eventMs(e);
      if (e.workflowExecutionSignaledEventAttributes?.signalName === 'kick' && at >= from && at <= to) kicks.push(at);
      if (e.activityTaskScheduledEventAttributes?.activityType?.name === 'scheduleCycle') scheduled.set(wide(e.eventId), at);
      const done = e.activityTaskCompletedEventAttributes;
      const t0 = done ? scheduled.get(wide(done.scheduledEventId)) : undefined;
      const data = done?.result?.payloads?.[0]?.data;
      if (t0 === undefined || !data || t0 < from || t0 > to) continue;
      const r = JSON.parse(Buffer.from(data).toString('utf8')) as Omit<CycleSpan, 'scheduledAt' | 'completedAt'>;
      cycles.push({ scheduledAt: t0, completedAt: at, ms: r.ms, considered: r.considered, placed: r.placed, phases: r.phases });
    }
  }
  cycles.sort((a, b) => a.scheduledAt - b.scheduledAt);
  return { cycles, kicks: kicks.sort((a, b) => a - b) };
}

/** Runs `f` over `items`, `width` at a time. */
async function inBatches<T, R>(items: T[], width: number, f: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += width) out.push(...(await Promise.all(items.slice(i, i + width).map(f))));
  return out;
}

/** Lets in-flight requeues and launches settle, so the final checks read a quiet database. */
async function settle(db: Kysely<Database>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const n = await sql<{ busy: number }>`
      SELECT (SELECT count(*) FROM nominations)::int + (SELECT count(*) FROM jobs WHERE state = 'placed')::int AS busy`.execute(db);
    if (n.rows[0].busy === 0) return;
    await sleep(250);
  }
}

runBench(async ({ cleanup }) => {
  const loadAtStart = load();
  const rng = seeded(SEED);
  say(`• database and fleet: ${DEVICES} devices; load ${loadAtStart}`);
  const { db } = await freshBenchDatabase(cleanup, 'sched_bench_preemption', 30);
  await seedSyntheticFleet(db, DEVICES);
  await seedTenants(db, [BASIC_TENANT, PREMIUM_TENANT, STANDARD_TENANT]);
  const capRows = await sql<{ type: string; devices: number }>`
    SELECT accelerator_type AS type, sum(device_count)::int AS devices FROM nodes GROUP BY accelerator_type ORDER BY accelerator_type`.execute(
    db,
  );
  const capacity = new Map(capRows.rows.map((r) => [r.type, r.devices]));
  const waves = fillPlan(capacity, rng);
  const basic = waves.flat();
  const premiumSpecs = premiumPlan(rng);
  const baselineSpecs = baselinePlan(rng);
  for (const [type, devices] of capacity) {
    const wanted = premiumSpecs.filter((s) => s.request.acceleratorTypes[0] === type).reduce((n, s) => n + devicesOf(s.request), 0);
    if (wanted > devices)
      throw new SettingError(
        `PREEMPT_JOBS=${PREMIUM_JOBS}: premium jobs want ${wanted} ${type} devices, the fleet has ${devices}; lower PREEMPT_JOBS or raise PREEMPT_DEVICES`,
      );
  }
  const premium = new Map(premiumSpecs.map((s) => [s.jobId, s]));
  const autoWorkers = Math.ceil((basic.length + premiumSpecs.length + 20) / SLOTS_PER_WORKER);
  const workers = envNumber('PREEMPT_WORKERS', autoWorkers, { integer: true, min: 1 });

  say('• Temporal dev server (in memory) and workflow bundle');
  const server = await benchServer(cleanup);
  const bundlePath = await benchBundle('preemption', cleanup);
  // Every running job holds an activity slot for its whole run, and one worker has
  // SLOTS_PER_WORKER of them: as many workers as it takes.
  const region = await serveBenchRegion(
    { server, bundlePath, db, taskQueue: TASK_QUEUE, workers, identity: 'preemption-bench', cycle: { preemptGraceMs: GRACE_MS } },
    cleanup,
  );
  const { client } = region;

  // Baseline: standard jobs of the premium shapes at the premium rate on the empty cluster. They
  // run briefly and leave, so the fill below starts from an empty cluster again.
  say(`• baseline: ${BASELINE_JOBS} standard jobs at ${RATE}/s on the empty cluster`);
  const baselineSubmitted = new Map<string, number>();
  const baselineStarted = Date.now();
  await submitAtRate(client, baselineSpecs, RATE, baselineSubmitted);
  const baselineIds = baselineSpecs.map((s) => s.jobId);
  await waitPlaced(db, baselineIds, 'baseline', 120_000, ['completed']);
  const baselineRows = await db.selectFrom('jobs').select(['id', 'placed_at']).where('id', 'in', baselineIds).execute();
  const baselineWaits = baselineRows.flatMap((r) => {
    const sub = baselineSubmitted.get(r.id);
    return sub !== undefined && r.placed_at ? [r.placed_at.getTime() - sub] : [];
  });
  const baselineSeconds = (Date.now() - baselineStarted) / 1000;

  // Fill: one wave per worker size, largest first, each placed before the next starts.
  const fillStarted = Date.now();
  for (const wave of waves) {
    const size = wave[0].request.devicesPerWorker;
    say(`• fill: ${wave.length} basic jobs of ${size} device(s) per worker at ${FILL_RATE}/s`);
    await submitAtRate(client, wave, FILL_RATE);
    await waitPlaced(
      db,
      wave.map((s) => s.jobId),
      `fill wave of ${size}`,
      120_000 + (wave.length / FILL_RATE) * 1000,
    );
  }
  await waitPlaced(
    db,
    basic.map((s) => s.jobId),
    'fill: all running',
    120_000,
    ['running'],
  );
  const fillSeconds = (Date.now() - fillStarted) / 1000;
  const free = await sql<{ free: number }>`SELECT coalesce(sum(free_whole), 0)::int AS free FROM nodes WHERE state = 'ready'`.execute(db);
  if (free.rows[0].free !== 0)
    throw new Error(`fill left ${free.rows[0].free} devices free; the cluster must be full before premium work arrives`);
  if (region.workerError) throw new Error('a worker stopped during the fill', { cause: region.workerError });
  say(`  cluster full: ${basic.length} basic jobs running after ${fmt(fillSeconds, 1)} s; load ${load()}`);

  // Premium jobs at a steady rate, watched until all are placed.
  say(`• ${PREMIUM_JOBS} premium jobs at ${RATE}/s, grace ${GRACE_MS} ms, ${workers} workers`);
  const xactBefore = await sql<{
    n: string;
  }>`SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()`.execute(db);
  const t0 = Date.now();
  const submitted = new Map<string, number>();
  let submitDone = false;
  const submitting = submitAtRate(client, premiumSpecs, RATE, submitted).finally(() => (submitDone = true));
  submitting.catch(() => undefined); // awaited below, after the watch
  const deadline = (): number => (submitDone ? Math.max(...submitted.values()) + TIMEOUT_MS : Infinity);
  const watch = await watchPremium(db, premium, submitted, deadline);
  await submitting;
  const watchSeconds = (Date.now() - t0) / 1000;
  const xactAfter = await sql<{
    n: string;
  }>`SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = current_database()`.execute(db);
  const loadAtEnd = load();
  await settle(db, 15_000);

  // Results, from the database once the dust has settled.
  const preemptions = await sql<{ preemptor: string; victims: number }>`
    SELECT p AS preemptor, count(*)::int AS victims FROM jobs, unnest(preempted_by) AS p GROUP BY p`.execute(db);
  const victimJobs = await sql<{ id: string; times: number; ckpt: boolean }>`
    SELECT id, cardinality(preempted_by) AS times, (spec->>'checkpointable')::boolean IS TRUE AS ckpt FROM jobs WHERE cardinality(preempted_by) > 0`.execute(
    db,
  );
  const stops = await sql<{ job_id: string; preemptor: string; lost_ms: number; devices: number; ckpt: boolean; stopped_at: Date }>`
    SELECT e.job_id, substring(e.detail FROM '^preempted for (.*)$') AS preemptor, (e.progress_ms - e.checkpoint_ms)::int AS lost_ms,
           ((j.spec->'request'->>'workers')::int * (j.spec->'request'->>'devicesPerWorker')::int) AS devices,
           (j.spec->>'checkpointable')::boolean IS TRUE AS ckpt, e.resumed_at AS stopped_at
    FROM executions e JOIN jobs j ON j.id = e.job_id WHERE e.state = 'stopped' AND e.detail LIKE 'preempted for %'`.execute(db);
  const premiumRows = await db
    .selectFrom('jobs')
    .select(['id', 'created_at', 'placed_at', 'epoch', 'preempted_by', 'state', 'waiting_reason'])
    .where('tier', '=', 'premium')
    .execute();
  const violations = await checkInvariants(db);
  const endState = await sql<{ free: number; waiting_basic: number; running_basic: number }>`
    SELECT (SELECT coalesce(sum(free_whole), 0) FROM nodes WHERE state = 'ready')::int AS free,
           (SELECT count(*) FROM jobs WHERE tier = 'basic' AND state = 'waiting')::int AS waiting_basic,
           (SELECT count(*) FROM jobs WHERE tier = 'basic' AND state = 'running')::int AS running_basic`.execute(db);

  // Submit → placed, and where the time goes for the jobs that preempted.
  const victimsOf = new Map(preemptions.rows.map((r) => [r.preemptor, r.victims]));
  const planOf = new Map<string, PlanSnapshot>();
  for (const p of watch.plans) if (!planOf.has(p.preemptor)) planOf.set(p.preemptor, p);
  const waits = { all: [] as number[], preempting: [] as number[], direct: [] as number[] };
  const phases = { admit: [] as number[], direct: [] as number[] };
  const notPlaced: string[] = [];
  for (const r of premiumRows) {
    const sub = submitted.get(r.id);
    const placed = watch.placedAt.get(r.id) ?? r.placed_at?.getTime();
    if (sub === undefined || placed === undefined) {
      notPlaced.push(`${r.id} ${r.state}${r.waiting_reason ? ` (${r.waiting_reason})` : ''}`);
      continue;
    }
    waits.all.push(placed - sub);
    const queued = r.created_at.getTime();
    phases.admit.push(queued - sub);
    if (victimsOf.has(r.id)) waits.preempting.push(placed - sub);
    else {
      waits.direct.push(placed - sub);
      phases.direct.push(placed - queued);
    }
  }
  for (const id of premium.keys()) if (!premiumRows.some((r) => r.id === id)) notPlaced.push(`${id} never reached the queue`);
  // Of those that found room: placed on admission (their history holds no placement delivered by a
  // cycle), or by a cycle after they queued.
  const directIds = premiumRows.filter((r) => !victimsOf.has(r.id) && r.placed_at).map((r) => r.id);
  const delivered = await inBatches(directIds, 16, async (id) => {
    const events = (await client.temporal.workflow.getHandle(`job/${PREMIUM_TENANT}/${id}`).fetchHistory()).events ?? [];
    return events.some((e) => e.workflowExecutionSignaledEventAttributes?.signalName === 'placed');
  });
  const directBy = { admission: [] as number[], cycle: [] as number[] };
  directIds.forEach((id, i) => {
    const sub = submitted.get(id);
    const placed = watch.placedAt.get(id) ?? premiumRows.find((r) => r.id === id)?.placed_at?.getTime();
    if (sub !== undefined && placed !== undefined) (delivered[i] ? directBy.cycle : directBy.admission).push(placed - sub);
  });
  const everVictim = premiumRows.filter((r) => r.preempted_by.length > 0 || r.epoch !== 1).map((r) => r.id);

  // Victims and work lost.
  const counts = [...victimsOf.values()];
  const totalVictims = counts.reduce((s, n) => s + n, 0);
  const meanVictims = counts.length ? totalVictims / counts.length : NaN;
  const histogram = new Map<number, number>();
  for (const n of counts) histogram.set(n, (histogram.get(n) ?? 0) + 1);
  const lostBy = new Map<string, number>();
  for (const s of stops.rows) lostBy.set(s.preemptor, (lostBy.get(s.preemptor) ?? 0) + s.lost_ms * s.devices);
  const actualAll = [...lostBy.values()].reduce((s, v) => s + v, 0) / 1000;
  const observed = [...planOf.values()].filter((p) => victimsOf.has(p.preemptor));
  const unobserved = [...victimsOf.keys()].filter((p) => !planOf.has(p));
  const actual = observed.reduce((s, p) => s + (lostBy.get(p.preemptor) ?? 0), 0) / 1000;
  const bound = observed.reduce((s, p) => s + p.boundDeviceMs, 0) / 1000;
  const chosen = observed.reduce((s, p) => s + p.chosenDeviceMs, 0) / 1000;
  const boundNaive = observed.reduce((s, p) => s + p.boundIgnoringCheckpointsMs, 0) / 1000;
  const chosenNaive = observed.reduce((s, p) => s + p.chosenIgnoringCheckpointsMs, 0) / 1000;
  const boundAnyNode = observed.reduce((s, p) => s + p.boundAnyNodeMs, 0) / 1000;
  const ratio = ratioText(actual, bound);
  const overGrace = stops.rows.flatMap((s) => {
    const plan = planOf.get(s.preemptor);
    return plan ? [new Date(s.stopped_at).getTime() - plan.plannedAt - GRACE_MS] : [];
  });
  const ckptVictims = stops.rows.filter((s) => s.ckpt).length;
  const ckptFleetShare = basic.filter((s) => s.checkpointable).length / basic.length;
  const short = observed.filter((p) => p.short).length;
  const xactPerSecond = (Number(xactAfter.rows[0].n) - Number(xactBefore.rows[0].n)) / watchSeconds;

  // Victims step by step, from every victim's history.
  const steps = (
    await inBatches(
      stops.rows.filter((s) => planOf.has(s.preemptor)),
      16,
      async (s) => {
        const st = await victimSteps(client.temporal, s.job_id, s.preemptor, planOf.get(s.preemptor)!.plannedAt).catch(() => undefined);
        return st && { ...st, stoppedAt: new Date(s.stopped_at).getTime() };
      },
    )
  ).filter((x): x is VictimSteps & { stoppedAt: number } => x !== undefined);
  // Per preemption, the victim that stopped last: its grace end and stop bound the preemptor's wait.
  // The stop is the executor's row (the release follows in the same step, and may place the
  // preemptor before the victim's history records the step, so its requeue time is no boundary).
  const lastVictim = new Map<string, (typeof steps)[number]>();
  for (const st of steps) if ((lastVictim.get(st.preemptor)?.stoppedAt ?? -Infinity) < st.stoppedAt) lastVictim.set(st.preemptor, st);
  const split = {
    toPlan: [] as number[],
    toGraceEnd: [] as number[],
    toRelease: [] as number[],
    toPlaced: [] as number[],
    total: [] as number[],
  };
  for (const r of premiumRows) {
    const plan = planOf.get(r.id);
    const last = lastVictim.get(r.id);
    const placed = watch.placedAt.get(r.id) ?? r.placed_at?.getTime();
    if (!plan || !last || placed === undefined || !victimsOf.has(r.id)) continue;
    const queued = r.created_at.getTime();
    split.toPlan.push(plan.plannedAt - queued);
    split.toGraceEnd.push(last.graceEndAt - plan.plannedAt);
    split.toRelease.push(last.stoppedAt - last.graceEndAt);
    split.toPlaced.push(placed - last.stoppedAt);
    split.total.push(placed - queued);
  }
  const sched = await schedulerHistory(client.temporal, t0, t0 + watchSeconds * 1000);
  // For each kick, how long until the next cycle was scheduled (a cycle in progress delays it).
  const kickToCycle: number[] = [];
  for (let i = 0, c = 0; i < sched.kicks.length; i++) {
    while (c < sched.cycles.length && sched.cycles[c].scheduledAt < sched.kicks[i]) c++;
    if (c < sched.cycles.length) kickToCycle.push(sched.cycles[c].scheduledAt - sched.kicks[i]);
  }

  // The table.
  const shapes = new Map<string, number>();
  for (const s of basic) shapes.set(shapeName(s.request), (shapes.get(shapeName(s.request)) ?? 0) + 1);
  const pShapes = new Map<string, number>();
  for (const s of premiumSpecs) pShapes.set(shapeName(s.request), (pShapes.get(shapeName(s.request)) ?? 0) + 1);
  const list = (m: Map<string, number>): string => [...m].map(([k, v]) => `${v}×${k}`).join(', ');
  console.log(
    `\npreemption: ${DEVICES} devices (${DEVICES / 8} nodes × 8; ${[...capacity].map(([t, d]) => `${t} ${d}`).join(', ')}), ` +
      `full with ${basic.length} basic jobs; ${PREMIUM_JOBS} premium jobs at ${RATE}/s; grace ${GRACE_MS} ms; ${workers} workers × ${SLOTS_PER_WORKER} activity slots`,
  );
  console.log(
    `basic jobs (devices per job): ${list(shapes)}; ${fmt(100 * ckptFleetShare)}% checkpointable; filled in ${fmt(fillSeconds, 1)} s (start ages differ by up to that)`,
  );
  console.log(`premium jobs (devices per job): ${list(pShapes)}`);
  console.log(
    `load average (1/5/15 min): ${loadAtStart} at start, ${loadAtEnd} at the end of the premium phase; bench database ${fmt(xactPerSecond)} transactions/s during it`,
  );
  console.log(`\n${'submit → placed (ms)'.padEnd(WIDTH)}     n      p50      p99      max`);
  const row = (label: string, v: number[], minus = 0): void => {
    const q = quantiles(v.map((x) => x - minus));
    console.log(
      `${label.padEnd(WIDTH)} ${String(q.n).padStart(5)}  ${fmt(q.p50).padStart(7)}  ${fmt(q.p99).padStart(7)}  ${fmt(q.max).padStart(7)}`,
    );
  };
  row('all premium', waits.all);
  row(`all premium, minus grace (${GRACE_MS})`, waits.all, GRACE_MS);
  row('  that preempted', waits.preempting);
  row('  that preempted, minus grace', waits.preempting, GRACE_MS);
  row('  that found room without preempting', waits.direct);
  row('    placed on admission', directBy.admission);
  row('    placed by a cycle', directBy.cycle);
  row(`baseline: standard, empty cluster (${fmt(baselineSeconds)} s)`, baselineWaits);
  console.log(`\n${'where the time goes (ms)'.padEnd(WIDTH)}     n      p50      p99      max`);
  row('submit → queued (admit, enqueue)', phases.admit);
  row('queued → placed, without preempting', phases.direct);
  console.log("per preemption, by its last victim to stop (from every victim's history and the executor's rows):");
  row('  queued → victims chosen', split.toPlan);
  row(`  victims chosen → grace end (grace ${GRACE_MS})`, split.toGraceEnd);
  row('  grace end → victim stopped (then released)', split.toRelease);
  row('  victim stopped → premium placed', split.toPlaced);
  row('  queued → placed (the sum)', split.total);
  row('  beyond the grace, per victim (stopped)', overGrace);
  console.log(
    `${watch.everHeld.size} of ${PREMIUM_JOBS} premium jobs were seen (sampled every ${REASON_SAMPLE_MS / 1000} s) waiting "held for higher-ranked job": ` +
      'the backfill gate holds them behind a blocked premium job of the same type (a held job still plans its own preemption)',
  );
  console.log(`\n${'one victim, step by step (ms; its history)'.padEnd(WIDTH)}     n      p50      p99      max`);
  row(
    'plan → preempt signal seen',
    steps.map((x) => x.signal),
  );
  row(
    'signal → grace timer started',
    steps.map((x) => x.handled),
  );
  row(
    `timer started → fired (grace ${GRACE_MS})`,
    steps.map((x) => x.grace),
  );
  row(
    'timer → stand check, stop, requeue',
    steps.map((x) => x.release),
  );
  console.log(`\n${'region scheduler, premium phase (ms)'.padEnd(WIDTH)}     n      p50      p99      max`);
  row(
    'cycle: its own work (below, but delivery)',
    sched.cycles.map((c) => c.ms),
  );
  for (const [step, what] of [
    ['queue', 'read the queue head'],
    ['capacity', 'capacity picture'],
    ['place', 'placement transaction'],
    ['plan', 'preemption planning'],
    ['deliver', 'delivery (signals)'],
  ] as const)
    row(
      `  ${what}`,
      sched.cycles.flatMap((c) => (c.phases?.[step] === undefined ? [] : [c.phases[step]])),
    );
  row(
    'cycle: scheduled → done (debounce, delivery)',
    sched.cycles.map((c) => c.completedAt - c.scheduledAt),
  );
  row(
    'cycle: done → next scheduled',
    sched.cycles.slice(1).map((c, i) => c.scheduledAt - sched.cycles[i].completedAt),
  );
  row('kick signal → next cycle scheduled', kickToCycle);
  console.log(
    `${sched.cycles.length} cycles (${sched.cycles.filter((c) => c.placed > 0).length} placing), ${sched.kicks.length} kicks in ${fmt(watchSeconds, 1)} s; ` +
      `jobs considered per cycle p50 ${fmt(quantiles(sched.cycles.map((c) => c.considered)).p50)}`,
  );
  console.log(
    `\nvictims: ${totalVictims} in ${counts.length} preemptions, mean ${fmt(meanVictims, 2)}, max ${counts.length ? Math.max(...counts) : '-'} per preemption ` +
      `(by victims: ${[...histogram]
        .sort((a, b) => a[0] - b[0])
        .map(([k, v]) => `${k}:${v}`)
        .join(' ')}); ` +
      `${victimJobs.rows.length} distinct basic jobs, ${victimJobs.rows.filter((v) => v.times > 1).length} preempted more than once; ` +
      `${ckptVictims} of ${stops.rows.length} stops were checkpointable jobs (${fmt(100 * ckptFleetShare)}% of the fleet)`,
  );
  const line = (label: string, v: string): void => console.log(`${label.padEnd(WIDTH + 16)} ${v.padStart(10)}`);
  console.log(`\n${'work lost (device-seconds)'.padEnd(WIDTH + 16)} ${'value'.padStart(10)}`);
  line('actual: executor progress − checkpoint at stop, × devices', fmt(actualAll, 1));
  line(`  of it, the ${observed.length} preemptions observed at planning`, fmt(actual, 1));
  line('chosen victims costed as the bound (loss at planning + grace)', fmt(chosen, 1));
  line('minimum possible (bound, see below)', fmt(bound, 1));
  line('  looser bound: cheapest devices on any nodes', fmt(boundAnyNode, 1));
  line('  preemptions that could have lost nothing', `${observed.filter((p) => p.boundDeviceMs < 1).length}/${observed.length}`);
  line('ratio actual / minimum', ratio);
  line('  choice: chosen / minimum', ratioText(chosen, bound));
  line('  timing: actual / chosen', ratioText(actual, chosen));
  line("checkpoints ignored (the chooser's model): chosen", fmt(chosenNaive, 1));
  line('  minimum', fmt(boundNaive, 1));
  line('  ratio chosen / minimum', ratioText(chosenNaive, boundNaive));
  console.log(
    '  bound: per preemption, at the moment its victims were chosen, the cheapest room for it among its candidate nodes\n' +
      "  (each worker's devices on one node; a free device or a checkpointable job's device costs 0, any other device its\n" +
      "  job's progress since the last checkpoint plus the grace period it still runs). It may take part of a job and ignores\n" +
      '  racks and pods, so no chooser facing the same cluster can lose less.' +
      (unobserved.length
        ? `\n  ${unobserved.length} preemptions were not observed at planning and are left out of the ratio: ${unobserved.slice(0, 5).join(', ')}`
        : '') +
      (short ? `\n  ${short} preemptions had no room among the candidates seen when observed (bound 0 for them)` : ''),
  );
  console.log(
    `\nchecks: premium placed ${waits.all.length}/${PREMIUM_JOBS} within ${TIMEOUT_MS / 1000} s of the last submission; ` +
      `premium jobs ever preempted ${everVictim.length}; invariant violations ${violations.length}; ` +
      `at the end ${endState.rows[0].free} devices idle, ${endState.rows[0].waiting_basic} basic jobs waiting, ${endState.rows[0].running_basic} running`,
  );
  for (const n of notPlaced.slice(0, 10)) console.log(`  not placed: ${n}`);
  for (const id of everVictim.slice(0, 10)) console.log(`  premium job preempted: ${id}`);
  for (const v of violations.slice(0, 10)) console.log(`  violation ${v.rule}: ${v.detail}`);
  const p99 = quantiles(waits.all.map((x) => x - GRACE_MS)).p99;
  const clean = notPlaced.length === 0 && everVictim.length === 0 && violations.length === 0;
  const direct = quantiles(waits.direct);
  const base = quantiles(baselineWaits);
  const r50 = direct.p50 / base.p50;
  const r99 = direct.p99 / base.p99;
  const verdict = (ok: boolean): string => (ok ? 'MET' : 'MISSED');
  console.log(
    `summary: submit→placed minus grace p99 ${fmt(p99)} ms (grace ${GRACE_MS} ms; target ≤ ${TARGET_P99_MS} ms: ${verdict(p99 <= TARGET_P99_MS)}); ` +
      `premium placed without preempting (n=${direct.n}) vs standard jobs on the empty cluster (n=${base.n}), submit→placed ` +
      `p50 ${fmt(direct.p50)}/${fmt(base.p50)} ms = ${fmt(r50, 2)}×, p99 ${fmt(direct.p99)}/${fmt(base.p99)} ms = ${fmt(r99, 2)}× ` +
      `(target ≤ ${TARGET_DIRECT_RATIO}× both: ${verdict(r50 <= TARGET_DIRECT_RATIO && r99 <= TARGET_DIRECT_RATIO)}); ` +
      `${fmt(meanVictims, 2)} victims per preemption (max ${counts.length ? Math.max(...counts) : '-'}), ` +
      `work lost ${fmt(actual, 0)} device-s vs minimum ${fmt(bound, 0)} = ${ratio}× (checkpoints ignored: ${ratioText(chosenNaive, boundNaive)}×); ` +
      `${waits.all.length}/${PREMIUM_JOBS} placed, ` +
      `${everVictim.length} premium preempted, ${violations.length} invariant violations: ${clean ? 'CLEAN' : 'NOT CLEAN'}`,
  );
  if (region.workerError) throw new Error('a worker stopped during the bench', { cause: region.workerError });
  if (!clean) process.exitCode = 1;
});
