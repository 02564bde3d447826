// The scheduler's Prometheus metrics: one registry per process, the metric definitions, the
// one-line hooks the allocator and preemption call where an event happens, and the gauges that
// describe a region's state, read from its database when scraped.
//
// Counters and histograms count events in this process (sum them across a region's processes).
// State gauges are read at scrape time from each region registered with `watchRegion`, one
// statement per region, cached for a second so frequent scrapes cannot load the database; every
// process of a region reports the same values (take `max by (region, ...)`, not `sum`).
import { sql, type Kysely } from 'kysely';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Database } from '../db/schema';
import { JOB_STATES, TIERS, type StoredJobState } from '../api/types';

export const metricsRegistry = new Registry();
const registers = [metricsRegistry];

/** The Content-Type header for `metricsText()`. */
export const METRICS_CONTENT_TYPE: string = metricsRegistry.contentType;

/** How long one read of a region's state serves scrapes. */
export const STATE_CACHE_MS = 1000;
/** A read of a region's state that takes longer fails (the scrape goes on without that region's state gauges). */
export const STATE_READ_TIMEOUT_MS = 2000;

// --- events, counted where they happen ------------------------------------------------------

const placements = new Counter({
  name: 'sched_placements_total',
  help: 'Jobs placed by the allocator (committed), by tier and accelerator type.',
  labelNames: ['region', 'tier', 'accelerator_type'] as const,
  registers,
});

const placementLatency = new Histogram({
  name: 'sched_placement_latency_seconds',
  help: 'Submission to placement, for jobs placed at their first epoch (a requeued job is counted in sched_placements_total only).',
  labelNames: ['region', 'tier'] as const,
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600],
  registers,
});

const preemptions = new Counter({
  name: 'sched_preemptions_total',
  help: 'Running jobs chosen as preemption victims (their nodes nominated to a waiting job), by the victim tier.',
  labelNames: ['region', 'victim_tier'] as const,
  registers,
});

const allocatorRetries = new Counter({
  name: 'sched_allocator_retries_total',
  help: 'Placement transactions run again after a deadlock or serialization failure.',
  labelNames: ['region'] as const,
  registers,
});

const allocatorConflicts = new Counter({
  name: 'sched_allocator_conflicts_total',
  help: 'Placement reads done again because a job row changed between the snapshot and its lock (a concurrent placement or release of the same job).',
  labelNames: ['region'] as const,
  registers,
});

const provisioningRequests = new Counter({
  name: 'sched_provisioning_requests_total',
  help: 'Requests made to a capacity provider: up = nodes asked for, down = nodes given back.',
  labelNames: ['region', 'accelerator_type', 'direction'] as const,
  registers,
});

const httpRequests = new Counter({
  name: 'sched_http_requests_total',
  help: 'HTTP API requests answered, by route and status code.',
  labelNames: ['region', 'route', 'status'] as const,
  registers,
});

const httpDuration = new Histogram({
  name: 'sched_http_request_duration_seconds',
  help: 'HTTP API request handling time, by route.',
  labelNames: ['region', 'route'] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers,
});

const collectErrors = new Counter({
  name: 'sched_metrics_collect_errors_total',
  help: "Failed reads of a region's state at scrape time (its state gauges are then absent from that scrape).",
  labelNames: ['region'] as const,
  registers,
});

/** A placement the allocator committed; `waitedSeconds` only for a job placed at its first epoch. */
export interface PlacementEvent {
  tier: string;
  acceleratorType: string;
  waitedSeconds?: number;
}

export function recordPlacements(region: string, placed: readonly PlacementEvent[]): void {
  for (const p of placed) {
    placements.inc({ region, tier: p.tier, accelerator_type: p.acceleratorType });
    if (p.waitedSeconds !== undefined) placementLatency.observe({ region, tier: p.tier }, Math.max(0, p.waitedSeconds));
  }
}

export function recordPreemptions(region: string, victimTiers: readonly string[]): void {
  for (const tier of victimTiers) preemptions.inc({ region, victim_tier: tier });
}

export function recordAllocatorRetry(region: string): void {
  allocatorRetries.inc({ region });
}

export function recordAllocatorConflict(region: string): void {
  allocatorConflicts.inc({ region });
}

/** For the autoscaler: one request to a capacity provider (`count` nodes asked for or given back). */
export function recordProvisioningRequest(region: string, acceleratorType: string, direction: 'up' | 'down', count = 1): void {
  provisioningRequests.inc({ region, accelerator_type: acceleratorType, direction }, count);
}

/**
 * For the HTTP API: one answered request. `route` is the route's pattern (e.g. `GET /v1/jobs/:id`),
 * never the raw URL, so the label set stays bounded.
 */
export function recordHttpRequest(region: string, route: string, status: number, seconds: number): void {
  httpRequests.inc({ region, route, status: String(status) });
  httpDuration.observe({ region, route }, seconds);
}

// --- state, read from each watched region's database at scrape time --------------------------

/** One read of a region's state. */
export interface RegionState {
  /** Waiting jobs by tier and first-choice accelerator type, with the oldest queue position. */
  queue: Array<{ tier: string; type: string; jobs: number; oldest_s: number }>;
  /** Devices by accelerator type and node state, and the milli-devices allocated on them. */
  devices: Array<{ type: string; state: string; devices: number; used_milli: number }>;
  /** Jobs by state and where they were handed to (`handoff_peer`) or came from (`origin_region`). */
  jobs: Array<{ state: string; handoff_peer: string | null; origin_region: string | null; jobs: number }>;
}

/**
 * One statement, one round trip: the waiting jobs (through the `jobs_queue` partial index), the
 * nodes, and one grouped pass over the jobs for the state and handoff counts.
 */
export async function readRegionState(db: Kysely<Database>): Promise<RegionState> {
  const r = await sql<RegionState>`
    SELECT
      coalesce((SELECT json_agg(q) FROM (
        SELECT tier, coalesce(spec->'request'->'acceleratorTypes'->>0, '') AS type, count(*)::int AS jobs,
               extract(epoch FROM clock_timestamp() - min(enqueued_at))::float8 AS oldest_s
        FROM jobs WHERE state = 'waiting' GROUP BY 1, 2) q), '[]') AS queue,
      coalesce((SELECT json_agg(d) FROM (
        SELECT accelerator_type AS type, state, sum(device_count)::int AS devices,
               sum(device_count * 1000 - (SELECT coalesce(sum(f), 0) FROM unnest(free_milli) f))::float8 AS used_milli
        FROM nodes GROUP BY 1, 2) d), '[]') AS devices,
      coalesce((SELECT json_agg(j) FROM (
        SELECT state, handoff_peer, origin_region, count(*)::int AS jobs FROM jobs GROUP BY 1, 2, 3) j), '[]') AS jobs`.execute(db);
  return r.rows[0];
}

interface Watched {
  db: Kysely<Database>;
  watchers: number;
  read?: { at: number; state: Promise<RegionState | undefined> };
}

const watched = new Map<string, Watched>();

/**
 * Reports this region's state gauges from `db` in this process's metrics until the returned
 * function is called. Watching a region twice (two workers of it in one process) reads it once.
 */
export function watchRegion(region: string, db: Kysely<Database>): () => void {
  const w = watched.get(region) ?? { db, watchers: 0 };
  w.watchers++;
  watched.set(region, w);
  let stopped = false;
  return () => {
    if (stopped) return;
    stopped = true;
    if (--w.watchers === 0) watched.delete(region);
  };
}

/** Each watched region's state, read at most once per STATE_CACHE_MS (a failed read is cached too, so a down database is not hammered). */
async function regionStates(): Promise<Array<[string, RegionState]>> {
  const now = Date.now();
  const out: Array<[string, RegionState]> = [];
  for (const [region, w] of watched) {
    if (!w.read || now - w.read.at >= STATE_CACHE_MS)
      w.read = {
        at: now,
        state: withTimeout(readRegionState(w.db), STATE_READ_TIMEOUT_MS, `reading region ${region}'s state`).catch(() => {
          collectErrors.inc({ region });
          return undefined;
        }),
      };
    const state = await w.read.state;
    if (state) out.push([region, state]);
  }
  return out;
}

/** `work`, or a rejection naming `what` once `ms` have passed (the work itself is left to finish or fail on its own). */
export async function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms (${what})`)), ms);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}

const STORED_STATES = JOB_STATES.filter((s): s is StoredJobState => s !== 'validating' && s !== 'admitting' && s !== 'releasing');

new Gauge({
  name: 'sched_queue_depth',
  help: 'Jobs waiting in the queue, by tier and first-choice accelerator type (0 for each tier and known type with none).',
  labelNames: ['region', 'tier', 'accelerator_type'] as const,
  registers,
  async collect() {
    const states = await regionStates();
    this.reset();
    for (const [region, s] of states) {
      const types = new Set([...s.devices.map((d) => d.type), ...s.queue.map((q) => q.type)]);
      for (const tier of TIERS) for (const type of types) this.set({ region, tier, accelerator_type: type }, 0);
      for (const q of s.queue) this.set({ region, tier: q.tier, accelerator_type: q.type }, q.jobs);
    }
  },
});

new Gauge({
  name: 'sched_queue_oldest_wait_seconds',
  help: 'How long the longest-waiting job of each tier has held its queue position (0 when none waits).',
  labelNames: ['region', 'tier'] as const,
  registers,
  async collect() {
    const states = await regionStates();
    this.reset();
    for (const [region, s] of states)
      for (const tier of TIERS) this.set({ region, tier }, Math.max(0, ...s.queue.filter((q) => q.tier === tier).map((q) => q.oldest_s)));
  },
});

new Gauge({
  name: 'sched_devices',
  help: 'Devices in the inventory, by accelerator type and node state.',
  labelNames: ['region', 'accelerator_type', 'node_state'] as const,
  registers,
  async collect() {
    const states = await regionStates();
    this.reset();
    for (const [region, s] of states)
      for (const d of s.devices) this.set({ region, accelerator_type: d.type, node_state: d.state }, d.devices);
  },
});

/** Allocated and total devices per type, over nodes in every state. */
function usageByType(s: RegionState): Map<string, { used: number; total: number }> {
  const byType = new Map<string, { used: number; total: number }>();
  for (const d of s.devices) {
    const t = byType.get(d.type) ?? { used: 0, total: 0 };
    t.used += d.used_milli / 1000;
    t.total += d.devices;
    byType.set(d.type, t);
  }
  return byType;
}

new Gauge({
  name: 'sched_devices_allocated',
  help: 'Devices held by allocations (fractional shares summed), by accelerator type.',
  labelNames: ['region', 'accelerator_type'] as const,
  registers,
  async collect() {
    const states = await regionStates();
    this.reset();
    for (const [region, s] of states) for (const [type, u] of usageByType(s)) this.set({ region, accelerator_type: type }, u.used);
  },
});

new Gauge({
  name: 'sched_device_utilisation_ratio',
  help: 'Allocated devices over all devices of the type (nodes in every state), 0..1.',
  labelNames: ['region', 'accelerator_type'] as const,
  registers,
  async collect() {
    const states = await regionStates();
    this.reset();
    for (const [region, s] of states)
      for (const [type, u] of usageByType(s)) if (u.total > 0) this.set({ region, accelerator_type: type }, u.used / u.total);
  },
});

new Gauge({
  name: 'sched_jobs',
  help: "Jobs in the region's database by state (0 for each state with none).",
  labelNames: ['region', 'state'] as const,
  registers,
  async collect() {
    const states = await regionStates();
    this.reset();
    for (const [region, s] of states) {
      for (const state of STORED_STATES) this.set({ region, state }, 0);
      for (const j of s.jobs) this.inc({ region, state: j.state }, j.jobs);
    }
  },
});

new Gauge({
  name: 'sched_handoff_jobs',
  help:
    'Jobs handed to a peer (direction out: handing-off = awaiting the decision, handed-off = committed, any other state = came back) ' +
    'or taken in from one (direction in: pending = awaiting the home decision), by peer and current state here.',
  labelNames: ['region', 'direction', 'peer', 'state'] as const,
  registers,
  async collect() {
    const states = await regionStates();
    this.reset();
    for (const [region, s] of states)
      for (const j of s.jobs) {
        if (j.handoff_peer) this.inc({ region, direction: 'out', peer: j.handoff_peer, state: j.state }, j.jobs);
        if (j.origin_region) this.inc({ region, direction: 'in', peer: j.origin_region, state: j.state }, j.jobs);
      }
  },
});

// --- exposition ------------------------------------------------------------------------------

let processMetrics = false;

/** The process's metrics in Prometheus text format (scheduler metrics plus Node.js process metrics). */
export async function metricsText(): Promise<string> {
  if (!processMetrics) {
    processMetrics = true;
    collectDefaultMetrics({ register: metricsRegistry });
  }
  // Read the regions first: every gauge of the scrape then comes from the same read, and a failed
  // read is already counted when the error counter is written out.
  await regionStates();
  return metricsRegistry.metrics();
}

/** Every metric name the registry defines (without the Node.js process metrics). */
export function schedulerMetricNames(): string[] {
  return metricsRegistry
    .getMetricsAsArray()
    .map((m) => m.name)
    .filter((n) => n.startsWith('sched_'));
}
