// `npm run bench:global`: three regions on this machine (scripts/regions.ts: each its own Temporal
// dev server, database and workers, the other two as peers), each a slice of the openb fleet.
// One arrival stream, skewed: the `hot` region is offered about 3× its GPU capacity, `cool-a` and
// `cool-b` about 0.3× theirs; jobs come from the openb trace and may run anywhere. The stream runs
// twice on fresh regions: isolated (`handoff: { enabled: false }`) and global (handoff after
// `afterMs`). Reports per mode submit→placed, the share of all GPU capacity allocated while demand
// exceeds it, jobs handed off, handoff latency (the home's committed decision → placed at the
// peer) and duplicates; in the global run `cool-b` (worker process and Temporal server) is
// SIGKILLed mid-run and restarted later, and the other regions' placements/s before and during the
// outage are compared, with jobs lost or duplicated.
// Targets (from the issue): hot p99 submit→placed global ≤ 1/3 of isolated; global allocation ≥ 85%
// while demand exceeds capacity; surviving regions ≥ 80% of their placements/s during the outage;
// 0 duplicates, 0 lost.
// Settings: GLOBAL_NODES (per region), GLOBAL_SECONDS (arrivals), GLOBAL_HOT_LOAD, GLOBAL_COOL_LOAD
// (offered load / capacity), GLOBAL_RUN_MIN_S / GLOBAL_RUN_MAX_S (run times), GLOBAL_AFTER_MS
// (handoff.afterMs), GLOBAL_PUBLISH_MS (summary period), GLOBAL_PUBLISH_EARLY (on|off: publishing
// on large changes between periods, to compare), GLOBAL_KILL_AT_S / GLOBAL_OUTAGE_S,
// GLOBAL_DRAIN_S (global run: wait for every job), GLOBAL_ISOLATED_DRAIN_S (isolated run: cut-off),
// GLOBAL_SEED, GLOBAL_MODES (isolated,global), GLOBAL_KEEP=1 (keep the databases), GLOBAL_DRY_RUN=1
// (print the workload and stop), BENCH_DATABASE_URL.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sql, type Kysely } from 'kysely';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import type { JobSpec, ResourceRequest } from '../api/types';
import { jobWorkflowId, peerExchangeWorkflowId } from '../api/ids';
import type { PeerExchangeStatus } from '../api/messages';
import type { SchedulerClient } from '../api/client';
import type { Database } from '../db/schema';
import { requestMilli } from '../scheduling/geometry';
import { SPEC_MILLI } from '../activities/inventory';
import { readOpenbNodes, readOpenbTasks, seedOpenbFleet, type OpenbNode } from '../scripts/openb';
import { Regions } from '../scripts/regions';
import { envChoices, envNumber, envUrl, SettingError } from './env';
import { Cleanup, runBench, say, seedTenants, sleep } from './harness';
import { seeded } from './fleet';
import { fmt, mean, quantiles } from './stats';
import { benchBundle, eventMs, type HistoryEvent } from './temporal';

const NODES = envNumber('GLOBAL_NODES', 6, { integer: true, min: 2 });
const SECONDS = envNumber('GLOBAL_SECONDS', 120, { above: 0 });
const HOT_LOAD = envNumber('GLOBAL_HOT_LOAD', 3, { above: 0 });
const COOL_LOAD = envNumber('GLOBAL_COOL_LOAD', 0.3, { above: 0 });
const RUN_MIN_S = envNumber('GLOBAL_RUN_MIN_S', 20, { above: 0 });
const RUN_MAX_S = envNumber('GLOBAL_RUN_MAX_S', 120, { above: 0 });
const AFTER_MS = envNumber('GLOBAL_AFTER_MS', 2000, { integer: true, min: 0 });
const PUBLISH_MS = envNumber('GLOBAL_PUBLISH_MS', 1000, { integer: true, min: 100 });
/** Whether summaries also go out between periods when free capacity moves a lot (the worker's PUBLISH_EARLY). */
const PUBLISH_EARLY = envChoices('GLOBAL_PUBLISH_EARLY', ['on'] as const, ['on', 'off'] as const)[0] === 'on';
const KILL_AT_S = envNumber('GLOBAL_KILL_AT_S', 60, { above: 0 });
const OUTAGE_S = envNumber('GLOBAL_OUTAGE_S', 35, { above: 0 });
const DRAIN_S = envNumber('GLOBAL_DRAIN_S', 240, { above: 0 });
const ISOLATED_DRAIN_S = envNumber('GLOBAL_ISOLATED_DRAIN_S', 20, { min: 0 });
const SEED = envNumber('GLOBAL_SEED', 1, { integer: true, min: 0 });
/** Which runs to make (both by default; the targets need both). */
const MODES = envChoices('GLOBAL_MODES', ['isolated', 'global'] as const, ['isolated', 'global'] as const);
/** Keep the regions' databases afterwards (sched_gbench_<mode>_<region>), to look into. */
const KEEP = envNumber('GLOBAL_KEEP', 0, { integer: true, min: 0, max: 1 }) === 1;
const DRY_RUN = envNumber('GLOBAL_DRY_RUN', 0, { integer: true, min: 0, max: 1 }) === 1;
if (RUN_MAX_S < RUN_MIN_S) throw new SettingError(`GLOBAL_RUN_MAX_S=${RUN_MAX_S}: must be ≥ GLOBAL_RUN_MIN_S (${RUN_MIN_S})`);
if (KILL_AT_S + OUTAGE_S > SECONDS)
  throw new SettingError(
    `GLOBAL_KILL_AT_S=${KILL_AT_S} + GLOBAL_OUTAGE_S=${OUTAGE_S}: the outage must end within the arrivals (GLOBAL_SECONDS=${SECONDS})`,
  );

const HOT = 'hot';
const VICTIM = 'cool-b';
const REGIONS = [HOT, 'cool-a', VICTIM];
const SURVIVORS = REGIONS.filter((r) => r !== VICTIM);
const TENANT = 'bench/load';
/** Trace lifetimes are minutes to days: one bench second stands for this many trace seconds (then clamped). */
const TRACE_SECONDS_PER_S = 36;
const SAMPLE_EVERY_MS = 1000;
const PROGRESS_EVERY_MS = 10_000;
/** A submission to a region that does not answer is given up after this and tried again a second later. */
const SUBMIT_TRY_MS = 5000;
/** The "before the outage" window ends at the kill and lasts as long as the outage, but starts no earlier than this (s). */
const WARMUP_S = 20;
const TERMINAL = ['completed', 'cancelled', 'rejected', 'failed'];

const PLACED_RATIO_TARGET = 1 / 3;
const SHARE_TARGET = 0.85;
const OUTAGE_RATE_TARGET = 0.8;

type Mode = 'isolated' | 'global';

/** One job of the stream: when it arrives (ms after the start), where, and what it asks for. */
interface Arrival {
  id: string;
  at: number;
  home: string;
  request: ResourceRequest;
  durationMs: number;
  milli: number;
}

interface Workload {
  slices: Map<string, OpenbNode[]>;
  /** Nodes of each model in every region. */
  mix: Map<string, number>;
  devices: Map<string, number>;
  arrivals: Arrival[];
  /** Offered GPU-seconds per second over each region's GPUs, as drawn. */
  offered: Map<string, number>;
  pool: number;
  meanRunS: number;
}

/** Whether one worker of `request` fits some node of `nodes` (type, devices, host CPU and memory). */
const fitsSome = (request: ResourceRequest, nodes: OpenbNode[]): boolean =>
  nodes.some(
    (n) =>
      request.acceleratorTypes.includes(n.model) &&
      n.gpus >= Math.max(1, request.devicesPerWorker) &&
      n.cpuMilli >= (request.cpuMilliPerWorker ?? 0) &&
      n.memoryMib >= (request.memoryMibPerWorker ?? 0),
  );

/** Nodes of each model per region: GLOBAL_NODES split by the fleet's mix (largest remainder), rare models dropped. */
function mixOf(fleet: OpenbNode[]): Map<string, number> {
  const models = [...new Set(fleet.map((n) => n.model))];
  const exact = models.map((m) => ({ m, x: (NODES * fleet.filter((n) => n.model === m).length) / fleet.length }));
  const mix = new Map(exact.map(({ m, x }) => [m, Math.floor(x)]));
  let left = NODES - [...mix.values()].reduce((s, k) => s + k, 0);
  for (const { m } of [...exact].sort((a, b) => (b.x % 1) - (a.x % 1))) if (left-- > 0) mix.set(m, mix.get(m)! + 1);
  return new Map([...mix].filter(([, k]) => k > 0));
}

/**
 * Slices: GLOBAL_NODES openb nodes per region with the same models in each, in the fleet's
 * proportions (each model's nodes sampled evenly and dealt round-robin). Jobs: openb tasks, their
 * acceptable models narrowed to those the slices have (the trace's "any model" means any model
 * here), that fit a node of every slice, so the isolated run can place each one at home; drawn at
 * random until each region is offered its load.
 */
function buildWorkload(): Workload {
  const fleet = readOpenbNodes();
  const mix = mixOf(fleet);
  const slices = new Map<string, OpenbNode[]>(REGIONS.map((r) => [r, []]));
  for (const [model, k] of mix) {
    const nodes = fleet.filter((n) => n.model === model);
    const step = Math.max(1, Math.floor(nodes.length / (REGIONS.length * k)));
    nodes
      .filter((_, i) => i % step === 0)
      .slice(0, REGIONS.length * k)
      .forEach((n, i) => slices.get(REGIONS[i % REGIONS.length])!.push(n));
  }
  const devices = new Map(REGIONS.map((r) => [r, slices.get(r)!.reduce((s, n) => s + n.gpus, 0)]));
  const pool = readOpenbTasks()
    .map((t) => ({ ...t, request: { ...t.request, acceleratorTypes: t.request.acceleratorTypes.filter((m) => mix.has(m)) } }))
    .filter((t) => t.request.acceleratorTypes.length && REGIONS.every((r) => fitsSome(t.request, slices.get(r)!)))
    .map((t) => ({
      request: t.request,
      durationMs: Math.round(Math.min(RUN_MAX_S, Math.max(RUN_MIN_S, (t.lifetimeS ?? 0) / TRACE_SECONDS_PER_S)) * 1000),
      milli: requestMilli(t.request),
    }));
  if (!pool.length) throw new Error('no openb task fits every region slice; raise GLOBAL_NODES');
  // Per region, jobs drawn until their GPU-seconds reach load × capacity × GLOBAL_SECONDS, at
  // uniformly random moments (a Poisson stream given its count): the offered load is what was asked.
  const random = seeded(SEED);
  const arrivals: Omit<Arrival, 'id'>[] = [];
  for (const home of REGIONS) {
    const target = (home === HOT ? HOT_LOAD : COOL_LOAD) * devices.get(home)! * SECONDS;
    for (let offered = 0; offered < target;) {
      const job = pool[Math.floor(random() * pool.length)];
      arrivals.push({ at: random() * SECONDS * 1000, home, ...job });
      offered += (job.milli / 1000) * (job.durationMs / 1000);
    }
  }
  arrivals.sort((a, b) => a.at - b.at);
  const offered = new Map(
    REGIONS.map((r) => [
      r,
      arrivals.filter((a) => a.home === r).reduce((s, a) => s + (a.milli / 1000) * (a.durationMs / 1000), 0) / SECONDS / devices.get(r)!,
    ]),
  );
  return {
    slices,
    mix,
    devices,
    arrivals: arrivals.map((a, i) => ({ id: `g${String(i).padStart(5, '0')}`, ...a })),
    offered,
    pool: pool.length,
    meanRunS: mean(pool.map((t) => t.durationMs / 1000)),
  };
}

/** One region's numbers at one moment (its own database). */
interface RegionSample {
  held: number;
  demand: number;
  done: number;
  placed: number;
  /** Rows placed at some point (placed_at kept after the job ends). */
  everPlaced: number;
  waiting: number;
  out: number;
  in: number;
}

interface Sample {
  at: number;
  held: number;
  demand: number;
  done: number;
  everPlaced: number;
  regions: Map<string, RegionSample>;
}

/**
 * Held: what allocations hold. Demand: what the region's own unfinished jobs ask for, wherever they
 * wait or run (each job counted once, at home). Out: its jobs living at a peer now or that ended
 * there; in: copies it took and activated.
 */
async function sampleRegion(db: Kysely<Database>): Promise<RegionSample> {
  const r = await sql<{
    held: string;
    demand: string;
    done: number;
    placed: number;
    everPlaced: number;
    waiting: number;
    out: number;
    in: number;
  }>`
    SELECT (SELECT coalesce(sum(milli), 0) FROM allocations)::bigint AS held,
      coalesce(sum(${SPEC_MILLI}) FILTER (WHERE origin_region IS NULL AND state NOT IN ('completed', 'cancelled', 'rejected', 'failed')), 0)::bigint AS demand,
      count(*) FILTER (WHERE origin_region IS NULL AND state IN ('completed', 'cancelled', 'rejected', 'failed'))::int AS done,
      count(*) FILTER (WHERE state IN ('placed', 'running'))::int AS placed,
      count(*) FILTER (WHERE placed_at IS NOT NULL)::int AS "everPlaced",
      count(*) FILTER (WHERE state IN ('submitted', 'waiting', 'waiting-abroad', 'handing-off'))::int AS waiting,
      count(*) FILTER (WHERE origin_region IS NULL AND handoff_peer IS NOT NULL
        AND (state = 'handed-off' OR (state IN ('completed', 'cancelled', 'failed') AND placed_at IS NULL)))::int AS out,
      count(*) FILTER (WHERE origin_region IS NOT NULL AND (placed_at IS NOT NULL OR state NOT IN ('pending', 'cancelled')))::int AS in
    FROM jobs`.execute(db);
  const row = r.rows[0];
  return { ...row, held: Number(row.held), demand: Number(row.demand) };
}

/** A latency; one not reached by the end counts with the time waited so far, a lower bound (`censored`). */
interface Latency {
  ms: number;
  censored: boolean;
}

function latencyQuantiles(values: Latency[]): { n: number; p50: Latency; p99: Latency } {
  const q = quantiles(values.map((v) => v.ms));
  const at = (ms: number): Latency => ({ ms, censored: values.some((v) => v.censored && v.ms <= ms) });
  return { n: q.n, p50: at(q.p50), p99: at(q.p99) };
}

const fmtS = (l: Latency): string => `${l.censored ? '>' : ''}${fmt(l.ms / 1000, 1)}`;

interface Outage {
  killAt: number;
  restoredAt: number;
  /** Placements per second in each surviving region, before and during. */
  before: Map<string, number>;
  during: Map<string, number>;
  beforeFrom: number;
  heldSubmits: number;
}

interface ModeResult {
  mode: Mode;
  t0: number;
  endAt: number;
  latency: Map<string, Latency[]>;
  placedIn: Map<string, number>;
  samples: Sample[];
  committed: number;
  aborted: number;
  handoffLatency: number[];
  handoffLatencyMissing: number;
  duplicates: string[];
  /** Submitted jobs whose home has no terminal result at the end, with where they stand. */
  unfinished: Array<{ id: string; state: string }>;
  /** Of those, the ones with nothing queued or running for them anywhere and no run that ended: lost. */
  lost: string[];
  notSubmitted: number;
  outage?: Outage;
  /** Per region, publications made before their period because free capacity moved a lot (global mode). */
  early: Map<string, number>;
}

/** Runs `f` over `items`, `width` at a time. */
async function inPool<T>(items: T[], width: number, f: (item: T) => Promise<void>): Promise<void> {
  const queue = [...items];
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (let x = queue.shift(); x !== undefined; x = queue.shift()) await f(x);
    }),
  );
}

/** When the home recorded the committed decision of the job's handoff: its `decideHandoff` activity completing. */
async function decidedAt(client: SchedulerClient, jobId: string): Promise<number | undefined> {
  const history = await client.temporal.workflow.getHandle(jobWorkflowId(TENANT, jobId)).fetchHistory();
  const committed = new Set<string>();
  let at: number | undefined;
  for (const e of history.events ?? []) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s?.activityType?.name === 'decideHandoff' && argOf(e, 2) === 'committed') committed.add(String(e.eventId));
    const c = e.activityTaskCompletedEventAttributes;
    if (c && committed.has(String(c.scheduledEventId))) at = eventMs(e);
  }
  return at;
}

/** Argument `k` of a scheduled activity, decoded from its JSON payload. */
function argOf(e: HistoryEvent, k: number): unknown {
  const p = e.activityTaskScheduledEventAttributes?.input?.payloads?.[k];
  if (!p?.data) return undefined;
  try {
    return JSON.parse(Buffer.from(p.data).toString('utf8'));
  } catch {
    return undefined;
  }
}

async function runMode(mode: Mode, w: Workload, bundlePath: string, root: Cleanup): Promise<ModeResult> {
  const cleanup = new Cleanup(`cleanup after the ${mode} run`);
  root.add(`clean up the ${mode} run`, () => cleanup.run());
  try {
    say(`• ${mode}: three regions (databases, Temporal dev servers, workers)`);
    const regions = await Regions.start(REGIONS, {
      tag: `gbench_${mode}`,
      databaseUrl: envUrl('BENCH_DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/postgres').toString(),
    });
    cleanup.add('stop the regions', () => regions.stop({ keep: KEEP }));
    // Whatever way the bench exits, the servers and worker processes go with it.
    const killAll = (): void => {
      for (const r of regions.list) for (const p of [r.server?.process, ...r.processes]) if (p && p.exitCode === null) p.kill('SIGKILL');
    };
    process.once('exit', killAll);
    cleanup.add('forget the exit hook', () => process.off('exit', killAll));
    for (const r of REGIONS) {
      await seedOpenbFleet(regions.get(r).db, { region: r, nodes: w.slices.get(r)! });
      await seedTenants(regions.get(r).db, [TENANT]);
    }
    // The region to kill runs its worker as a process, so SIGKILL is real; the others in this process.
    for (const r of REGIONS)
      if (r === VICTIM) regions.spawnWorker(r, { bundlePath, publishEveryMs: PUBLISH_MS, publishEarly: PUBLISH_EARLY });
      else await regions.startWorker(r, { bundlePath, publishEveryMs: PUBLISH_MS, publishEarly: PUBLISH_EARLY });
    const clients = new Map<string, SchedulerClient>();
    for (const r of REGIONS) clients.set(r, await regions.client(r));
    // Every region holds a fresh summary of every other before the first job.
    const ready = Date.now() + 90_000;
    for (;;) {
      const fresh = await Promise.all(
        REGIONS.map(async (r) => {
          const rows = await regions.get(r).db.selectFrom('peer_summaries').select('received_at').execute();
          return rows.filter((x) => Date.now() - x.received_at.getTime() < 3 * PUBLISH_MS + 2000).length;
        }),
      );
      if (fresh.every((n) => n === REGIONS.length - 1)) break;
      if (Date.now() > ready) throw new Error(`${mode}: the regions did not exchange summaries within 90 s (fresh: ${fresh.join(', ')})`);
      await sleep(500);
    }

    const specOf = (a: Arrival): JobSpec => ({
      jobId: a.id,
      tenant: TENANT,
      tier: 'standard',
      priority: 0,
      request: a.request,
      durationMs: a.durationMs,
      handoff: mode === 'global' ? { afterMs: AFTER_MS } : { enabled: false },
    });
    const firstTry = new Map<string, number>();
    const submitted = new Set<string>();
    let heldSubmits = 0;
    let down = false;
    let stopSubmitting = false;
    /** Submits until the home takes it: a client of a region that is down keeps the job and tries again. */
    const submit = async (a: Arrival): Promise<void> => {
      firstTry.set(a.id, Date.now());
      let held = false;
      while (!stopSubmitting) {
        const attempt = clients.get(a.home)!.submit(specOf(a));
        attempt.catch(() => undefined);
        const ok = await Promise.race([attempt.then(() => true), sleep(SUBMIT_TRY_MS).then(() => false)]).catch(() => false);
        if (ok) {
          submitted.add(a.id);
          return;
        }
        if (!held && a.home === VICTIM && down) heldSubmits++;
        held = true;
        await sleep(1000);
      }
    };

    const t0 = Date.now() + 500;
    const samples: Sample[] = [];
    let sampling = true;
    const sampler = (async () => {
      let nextProgress = t0 + PROGRESS_EVERY_MS;
      while (sampling) {
        const at = Date.now();
        const per = await Promise.all(REGIONS.map((r) => sampleRegion(regions.get(r).db)));
        const byRegion = new Map(REGIONS.map((r, i) => [r, per[i]]));
        const s: Sample = {
          at,
          held: per.reduce((x, p) => x + p.held, 0),
          demand: per.reduce((x, p) => x + p.demand, 0),
          done: per.reduce((x, p) => x + p.done, 0),
          everPlaced: per.reduce((x, p) => x + p.everPlaced, 0),
          regions: byRegion,
        };
        samples.push(s);
        if (at >= nextProgress) {
          nextProgress += PROGRESS_EVERY_MS;
          const capacity = [...w.devices.values()].reduce((x, d) => x + d, 0) * 1000;
          say(
            `  [${mode} ${fmt((at - t0) / 1000)}s] submitted ${submitted.size}/${w.arrivals.length}, finished ${s.done}; ` +
              REGIONS.map((r) => {
                const g = byRegion.get(r)!;
                return `${r}${r === VICTIM && down ? ' (DOWN)' : ''}: placed ${g.placed} waiting ${g.waiting} out ${g.out} in ${g.in}`;
              }).join(' · ') +
              `; GPUs allocated ${fmt((100 * s.held) / capacity)}% (demand ${fmt((100 * s.demand) / capacity)}%)`,
          );
        }
        await sleep(Math.max(0, at + SAMPLE_EVERY_MS - Date.now()));
      }
    })();
    cleanup.add('stop sampling', async () => {
      sampling = false;
      await sampler;
    });

    // The global run's outage: cool-b's worker process and Temporal server SIGKILLed, restarted later.
    let outage: { killAt: number; restoredAt: number } | undefined;
    const outageRun =
      mode === 'global'
        ? (async () => {
            await sleep(t0 + KILL_AT_S * 1000 - Date.now());
            say(`  [${mode} ${fmt((Date.now() - t0) / 1000)}s] killing ${VICTIM}: worker process and Temporal server (SIGKILL)`);
            await regions.killWorkerProcesses(VICTIM);
            await regions.killServer(VICTIM);
            down = true;
            const killAt = Date.now();
            await sleep(t0 + (KILL_AT_S + OUTAGE_S) * 1000 - Date.now());
            const restoredAt = Date.now();
            say(`  [${mode} ${fmt((restoredAt - t0) / 1000)}s] restoring ${VICTIM}: Temporal server (same state file), worker process`);
            await regions.startServer(VICTIM);
            regions.spawnWorker(VICTIM, { bundlePath, publishEveryMs: PUBLISH_MS, publishEarly: PUBLISH_EARLY });
            down = false;
            outage = { killAt, restoredAt };
            say(
              `  [${mode} ${fmt((Date.now() - t0) / 1000)}s] ${VICTIM} is back (restart took ${fmt((Date.now() - restoredAt) / 1000, 1)} s)`,
            );
          })()
        : Promise.resolve();

    say(`• ${mode}: ${w.arrivals.length} jobs over ${SECONDS} s`);
    const submitting: Array<Promise<void>> = [];
    for (const a of w.arrivals) {
      await sleep(t0 + a.at - Date.now());
      submitting.push(submit(a));
    }
    await outageRun;
    // Drain: the global run waits for every job to finish; the isolated one for every job to be placed, up to its cut-off
    // (its hot backlog needs far longer than the default).
    const drainS = mode === 'global' ? DRAIN_S : ISOLATED_DRAIN_S;
    const deadline = Date.now() + drainS * 1000;
    say(`• ${mode}: arrivals done; waiting up to ${drainS} s for every job to be ${mode === 'global' ? 'finished' : 'placed'}`);
    while (Date.now() < deadline) {
      const last = samples[samples.length - 1];
      // Isolated: done once every job has been placed (submit→placed is all it measures); global: once every job finished.
      const settled = mode === 'global' ? last?.done : last?.everPlaced;
      if (submitted.size === w.arrivals.length && settled !== undefined && settled >= w.arrivals.length) break;
      await sleep(1000);
    }
    stopSubmitting = true;
    await Promise.all(submitting);
    const endAt = Date.now();
    sampling = false;
    await sampler;

    // Results from the databases: where each job was placed, and when.
    say(`• ${mode}: reading results`);
    type Row = { id: string; state: string; placed_at: Date | null; origin_region: string | null; epoch: number };
    const rows = new Map<string, Row[]>();
    const runs = new Map<string, Array<{ job_id: string; state: string }>>();
    for (const r of REGIONS) {
      const db = regions.get(r).db;
      rows.set(r, await db.selectFrom('jobs').select(['id', 'state', 'placed_at', 'origin_region', 'epoch']).execute());
      runs.set(r, await db.selectFrom('executions').select(['job_id', 'state']).execute());
    }
    const placedAt = new Map<string, Array<{ region: string; at: number }>>();
    for (const [r, list] of rows)
      for (const row of list)
        if (row.placed_at) placedAt.set(row.id, [...(placedAt.get(row.id) ?? []), { region: r, at: row.placed_at.getTime() }]);
    const latency = new Map<string, Latency[]>(REGIONS.map((r) => [r, []]));
    const placedIn = new Map<string, number>(REGIONS.map((r) => [r, 0]));
    for (const a of w.arrivals) {
      const from = firstTry.get(a.id);
      if (from === undefined) continue;
      const p = placedAt.get(a.id);
      if (p) {
        latency.get(a.home)!.push({ ms: Math.min(...p.map((x) => x.at)) - from, censored: false });
        for (const x of p) placedIn.set(x.region, placedIn.get(x.region)! + 1);
      } else latency.get(a.home)!.push({ ms: endAt - from, censored: true });
    }
    // Duplicates: a job placed, or run, in two regions, or that succeeded twice.
    const ranIn = new Map<string, Set<string>>();
    const succeeded = new Map<string, number>();
    for (const [r, list] of runs)
      for (const x of list) {
        ranIn.set(x.job_id, (ranIn.get(x.job_id) ?? new Set()).add(r));
        if (x.state === 'succeeded') succeeded.set(x.job_id, (succeeded.get(x.job_id) ?? 0) + 1);
      }
    const duplicates = w.arrivals
      .map((a) => a.id)
      .filter((id) => (placedAt.get(id)?.length ?? 0) > 1 || (ranIn.get(id)?.size ?? 0) > 1 || (succeeded.get(id) ?? 0) > 1);
    const homeRow = new Map<string, Row>();
    for (const a of w.arrivals) {
      const row = rows.get(a.home)!.find((x) => x.id === a.id && !x.origin_region);
      if (row) homeRow.set(a.id, row);
    }
    const unfinished = [...submitted]
      .filter((id) => !TERMINAL.includes(homeRow.get(id)?.state ?? 'unknown'))
      .map((id) => {
        const copy = [...rows.values()].flat().find((x) => x.id === id && x.origin_region);
        return { id, state: `${homeRow.get(id)?.state ?? 'no row at home'}${copy ? `, copy ${copy.state}` : ''}` };
      });
    // 'releasing': its run ended and its devices are being given back (late under load), not lost.
    const LIVE = ['submitted', 'waiting', 'waiting-abroad', 'handing-off', 'pending', 'placed', 'running', 'releasing'];
    const lost = unfinished
      .map((u) => u.id)
      .filter(
        (id) =>
          ![...rows.values()].flat().some((x) => x.id === id && (LIVE.includes(x.state) || (x.placed_at && TERMINAL.includes(x.state)))),
      );
    // Handoffs: committed ones are the copies that were activated at a peer; each abort bumped the home's epoch.
    const copies = [...rows].flatMap(([r, list]) =>
      list
        .filter((x) => x.origin_region && (x.placed_at || !['pending', 'cancelled'].includes(x.state)))
        .map((x) => ({ region: r, row: x })),
    );
    const aborted = [...homeRow.values()].reduce((s, x) => s + (x.epoch - 1), 0);
    const handoffLatency: number[] = [];
    let handoffLatencyMissing = 0;
    const handed = copies.filter((c) => c.row.placed_at);
    if (handed.length) say(`  reading ${handed.length} home histories for the handoff decisions`);
    await inPool(handed, 8, async (c) => {
      const at = await decidedAt(clients.get(c.row.origin_region!)!, c.row.id).catch(() => undefined);
      if (at === undefined) handoffLatencyMissing++;
      else handoffLatency.push(c.row.placed_at!.getTime() - at);
    });

    // Early publications (the exchange's status; isolated regions have no exchange).
    const early = new Map<string, number>();
    if (mode === 'global')
      for (const r of REGIONS) {
        const st = await clients
          .get(r)!
          .temporal.workflow.getHandle(peerExchangeWorkflowId(r))
          .query<PeerExchangeStatus>('status')
          .catch(() => undefined);
        if (st) early.set(r, st.early ?? 0);
      }

    let outageResult: Outage | undefined;
    if (outage) {
      const { killAt, restoredAt } = outage;
      // As long as the outage, ending at the kill, after the first fill (WARMUP_S, or half the time to the kill).
      const beforeFrom = Math.max(t0 + Math.min(WARMUP_S, KILL_AT_S / 2) * 1000, killAt - (restoredAt - killAt));
      const rate = (r: string, from: number, to: number): number =>
        rows.get(r)!.filter((x) => x.placed_at && x.placed_at.getTime() >= from && x.placed_at.getTime() < to).length /
        ((to - from) / 1000);
      outageResult = {
        killAt,
        restoredAt,
        beforeFrom,
        before: new Map(SURVIVORS.map((r) => [r, rate(r, beforeFrom, killAt)])),
        during: new Map(SURVIVORS.map((r) => [r, rate(r, killAt, restoredAt)])),
        heldSubmits,
      };
    }
    return {
      mode,
      t0,
      endAt,
      latency,
      placedIn,
      samples,
      committed: copies.length,
      aborted,
      handoffLatency,
      handoffLatencyMissing,
      duplicates,
      unfinished,
      lost,
      notSubmitted: w.arrivals.length - submitted.size,
      outage: outageResult,
      early,
    };
  } finally {
    await cleanup.run();
  }
}

/** Allocation while demand exceeds capacity: the mean share over those samples, and how many seconds they cover. */
function shareWhileOver(m: ModeResult, capacity: number): { share: number; seconds: number } {
  const over = m.samples.filter((s) => s.demand > capacity);
  return { share: mean(over.map((s) => s.held / capacity)), seconds: (over.length * SAMPLE_EVERY_MS) / 1000 };
}

runBench(async ({ cleanup }) => {
  const w = buildWorkload();
  say(
    `• workload: ${REGIONS.map((r) => `${r} ${w.devices.get(r)} GPUs, ${fmt(w.arrivals.filter((a) => a.home === r).length / SECONDS, 2)} jobs/s`).join('; ')}; ` +
      `runs mean ${fmt(w.meanRunS, 1)} s`,
  );
  if (DRY_RUN) return;
  // The SDK's logs (a region going down makes many) go to a file; stdout holds the tables.
  // No shutdown signals: Ctrl-C is the harness's. Before the first native connection.
  const logFile = path.join(__dirname, 'out', 'global-workers.log');
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  const log = fs.createWriteStream(logFile, { flags: 'a' });
  Runtime.install({
    logger: new DefaultLogger('WARN', (e) => log.write(`${JSON.stringify({ level: e.level, message: e.message, ...e.meta })}\n`)),
    shutdownSignals: [],
    telemetryOptions: { logging: { forward: {} } },
  });
  say(`• workflow bundle (SDK warnings go to ${path.relative(process.cwd(), logFile)})`);
  const bundlePath = await benchBundle('global', cleanup);
  const loadAtStart = os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' / ');
  const results = new Map<Mode, ModeResult>();
  for (const mode of MODES) results.set(mode, await runMode(mode, w, bundlePath, cleanup));
  const loadAtEnd = os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' / ');
  const iso = results.get('isolated');
  const glob = results.get('global');

  const capacity = [...w.devices.values()].reduce((s, d) => s + d, 0) * 1000;
  const count = (r: string) => w.arrivals.filter((a) => a.home === r).length;
  console.log(
    `\nglobal scheduling: ${REGIONS.length} regions × ${NODES} openb nodes (${REGIONS.map((r) => `${r} ${w.devices.get(r)} GPUs`).join(', ')}); ` +
      `${w.arrivals.length} jobs over ${SECONDS} s (${REGIONS.map((r) => `${r} ${count(r)} jobs, ${fmt(w.offered.get(r)!, 2)}× its capacity`).join('; ')})`,
  );
  console.log(`each region: ${[...w.mix].map(([m, k]) => `${k} ${m}`).join(', ')} nodes`);
  console.log(
    `jobs: openb tasks fitting every slice (${w.pool} of them), drawn at random; runs ${RUN_MIN_S}–${RUN_MAX_S} s (trace lifetime / ${TRACE_SECONDS_PER_S}, mean ${fmt(w.meanRunS, 1)} s); ` +
      `every job allowed anywhere; global: handoff.afterMs ${AFTER_MS}, summaries every ${PUBLISH_MS} ms${PUBLISH_EARLY ? ' and on large changes' : ' (period only)'}; isolated: handoff.enabled false`,
  );
  console.log(`load average (1/5/15 min): ${loadAtStart} at start, ${loadAtEnd} at the end; ${os.cpus().length} cores`);

  // One column per mode run.
  const W = 52;
  const ran = [...results.values()];
  const line = (label: string, cell: (m: ModeResult) => string): void =>
    console.log(`${label.padEnd(W)} ${ran.map((m) => cell(m).padStart(14)).join(' ')}`);
  console.log(`\n${''.padEnd(W)} ${ran.map((m) => m.mode.padStart(14)).join(' ')}`);
  line('jobs submitted', (m) => String(w.arrivals.length - m.notSubmitted));
  for (const r of [...REGIONS, 'all'])
    line(`${r}: submit→placed p50 / p99 (s)`, (m) => {
      const q = latencyQuantiles(r === 'all' ? [...m.latency.values()].flat() : m.latency.get(r)!);
      return `${fmtS(q.p50)} / ${fmtS(q.p99)}`;
    });
  line(`placed in ${REGIONS.join(' / ')}`, (m) => REGIONS.map((r) => m.placedIn.get(r)).join(' / '));
  line('GPUs allocated while demand > capacity (mean %)', (m) => fmt(100 * shareWhileOver(m, capacity).share, 1));
  line('  seconds with demand > all GPU capacity', (m) => fmt(shareWhileOver(m, capacity).seconds));
  line('jobs handed off (committed, activated at a peer)', (m) => String(m.committed));
  line('handoffs aborted (home epoch bumps)', (m) => String(m.aborted));
  line('handoff latency decision → placed at peer p50 (ms)', (m) => fmt(quantiles(m.handoffLatency).p50));
  line('                                           p99 (ms)', (m) => fmt(quantiles(m.handoffLatency).p99));
  line('  handed-off jobs whose decision was not found', (m) => String(m.handoffLatencyMissing));
  line(`summaries published early (${REGIONS.join(' / ')})`, (m) =>
    m.early.size ? REGIONS.map((r) => m.early.get(r) ?? '-').join(' / ') : '-',
  );
  line('duplicates (placed/run in two regions, or twice)', (m) => String(m.duplicates.length));
  line('finished (terminal result at home)', (m) => String(w.arrivals.length - m.notSubmitted - m.unfinished.length));
  line('still queued or running at the end', (m) => String(m.unfinished.length - m.lost.length));
  line('lost (nothing live anywhere, no run that ended)', (m) => String(m.lost.length));
  line('never accepted by their home region', (m) => String(m.notSubmitted));
  console.log(
    `  submit→placed: from the first submit call to placed_at where the job ran (the peer's row for a handed-off job); ` +
      `'>' marks a lower bound (jobs not placed by the end count with their wait so far).\n` +
      `  isolated: stopped when every job was placed or ${ISOLATED_DRAIN_S} s after the last arrival (the hot backlog alone needs ~${fmt(SECONDS * (w.offered.get(HOT)! - 1))} s more at full use); ` +
      `global: stopped when every job finished or ${DRAIN_S} s after the last arrival.\n` +
      `  handoff latency: the home's decideHandoff(committed) activity completing (its history) → placed_at at the peer.`,
  );
  for (const m of ran) {
    for (const d of m.duplicates.slice(0, 10)) console.log(`  ${m.mode}: duplicate: ${d}`);
    if (m.mode === 'global') for (const u of m.unfinished.slice(0, 10)) console.log(`  ${m.mode}: not finished: ${u.id} (${u.state})`);
    for (const id of m.lost.slice(0, 10)) console.log(`  ${m.mode}: lost: ${id} (${m.unfinished.find((u) => u.id === id)?.state ?? '?'})`);
  }

  const o = glob?.outage;
  let rateRatio = NaN;
  if (glob && o) {
    const tRel = (t: number) => fmt((t - glob.t0) / 1000, 1);
    console.log(
      `\noutage: ${VICTIM}'s worker process and Temporal server SIGKILLed at ${tRel(o.killAt)} s, restarted at ${tRel(o.restoredAt)} s; ` +
        `before = ${tRel(o.beforeFrom)}–${tRel(o.killAt)} s`,
    );
    console.log(
      `${'placements/s (jobs placed there, own or taken in)'.padEnd(W)} ${'before'.padStart(14)} ${'during'.padStart(14)}  ratio`,
    );
    const sum = (m: Map<string, number>) => [...m.values()].reduce((s, v) => s + v, 0);
    for (const r of [...SURVIVORS, 'both']) {
      const [b, d] = r === 'both' ? [sum(o.before), sum(o.during)] : [o.before.get(r)!, o.during.get(r)!];
      console.log(`${r.padEnd(W)} ${fmt(b, 2).padStart(14)} ${fmt(d, 2).padStart(14)}  ${fmt((100 * d) / b)}%`);
    }
    rateRatio = sum(o.during) / sum(o.before);
    console.log(`jobs offered to ${VICTIM} while it was down (kept by the client, submitted when it was back): ${o.heldSubmits}`);
    console.log(`global run: lost ${glob.lost.length}, duplicates ${glob.duplicates.length}`);
  }

  const verdict = (ok: boolean | undefined) => (ok === undefined ? 'NOT MEASURED' : ok ? 'MET' : 'MISSED');
  const hotIso = iso && latencyQuantiles(iso.latency.get(HOT)!).p99;
  const hotGlob = glob && latencyQuantiles(glob.latency.get(HOT)!).p99;
  // The isolated p99 may be a lower bound: the ratio is then an upper bound, so MET stays MET.
  const placedMet = hotIso && hotGlob ? !hotGlob.censored && hotGlob.ms <= PLACED_RATIO_TARGET * hotIso.ms : undefined;
  const sg = glob && shareWhileOver(glob, capacity);
  const shareMet = sg ? sg.seconds > 0 && sg.share >= SHARE_TARGET : undefined;
  const outageMet = glob ? rateRatio >= OUTAGE_RATE_TARGET : undefined;
  const dups = ran.reduce((s, m) => s + m.duplicates.length, 0);
  const lost = glob ? glob.lost.length : undefined;
  const cleanMet = glob ? lost === 0 && dups === 0 : undefined;
  const still = glob ? glob.unfinished.length - glob.lost.length : 0;
  console.log(
    `summary: hot p99 submit→placed global ${hotGlob ? fmtS(hotGlob) : '-'} s vs isolated ${hotIso ? fmtS(hotIso) : '-'} s` +
      ` = ${hotGlob && hotIso ? `${hotIso.censored ? '≤' : ''}${fmt(hotGlob.ms / hotIso.ms, 2)}` : '-'} (≤ 1/3: ${verdict(placedMet)}` +
      `${placedMet === false && hotIso?.censored ? ', not shown: the isolated p99 is only a lower bound, GLOBAL_ISOLATED_DRAIN_S widens it' : ''}); ` +
      `global GPU allocation while demand > capacity ${sg ? fmt(100 * sg.share, 1) : '-'}% over ${sg ? fmt(sg.seconds) : '-'} s (≥ 85%: ${verdict(shareMet)}); ` +
      `surviving regions during the outage ${fmt(100 * rateRatio)}% of their placements/s before (≥ 80%: ${verdict(outageMet)}); ` +
      `duplicates ${dups}, lost ${lost ?? '-'}${still ? ` (${still} more still running or queued at the end)` : ''} (0 and 0: ${verdict(cleanMet)})`,
  );
  if (!(placedMet && shareMet && outageMet && cleanMet)) process.exitCode = 1;
});
