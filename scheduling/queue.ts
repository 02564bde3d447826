// Queue order for a region's waiting jobs: rank by tier, priority and age, then decide which
// later jobs may backfill past a blocked one without delaying its estimated start. Pure; no I/O.
// Units: device amounts are milli-devices (1 device = 1000), times are epoch milliseconds.
import type { Tier } from '../api/types';
import { formatDevices } from '../api/units';

export interface QueueConfig {
  /** Effective-priority points per tier step: premium = 2×, standard = 1×, basic = 0. */
  tierWeight: number;
  /** Every agingIntervalMs of waiting adds agingStep effective-priority points, so nothing starves. */
  agingIntervalMs: number;
  agingStep: number;
}

/** Priority is an integer 0..1000, so a tier step of 1000 outranks any priority within a tier. */
export const DEFAULT_QUEUE_CONFIG: QueueConfig = { tierWeight: 1000, agingIntervalMs: 60_000, agingStep: 50 };

export interface QueuedJob {
  jobId: string;
  tier: Tier;
  priority: number;
  /** When the job first entered the queue; kept across requeues (its queue position). */
  enqueuedAt: number;
  acceleratorTypes: string[];
  /** Total milli-devices the job needs (workers × devices × 1000, or workers × milli for shares). */
  milli: number;
  /** Expected run time. */
  durationMs: number;
}

/** Tier steps of effective priority: a tier's weight is its step × QueueConfig.tierWeight. */
export const TIER_RANK: Readonly<Record<Tier, number>> = { premium: 2, standard: 1, basic: 0 };

export function effectivePriority(job: QueuedJob, now: number, cfg: QueueConfig = DEFAULT_QUEUE_CONFIG): number {
  // A clock behind enqueuedAt (another worker's clock, a requeue stamped ahead) must not lower priority.
  const age = Math.max(0, now - job.enqueuedAt);
  return TIER_RANK[job.tier] * cfg.tierWeight + job.priority + Math.floor(age / cfg.agingIntervalMs) * cfg.agingStep;
}

/** Highest effective priority first; ties by earlier enqueuedAt, then jobId. Does not mutate. */
export function rankQueue<J extends QueuedJob>(jobs: readonly J[], now: number, cfg: QueueConfig = DEFAULT_QUEUE_CONFIG): J[] {
  const keyed = jobs.map((job) => ({ job, eff: effectivePriority(job, now, cfg) }));
  keyed.sort((a, b) => {
    if (a.eff !== b.eff) return b.eff - a.eff;
    if (a.job.enqueuedAt !== b.job.enqueuedAt) return a.job.enqueuedAt - b.job.enqueuedAt;
    // Code-unit order, not localeCompare: the order must not depend on the worker's locale.
    return a.job.jobId < b.job.jobId ? -1 : a.job.jobId > b.job.jobId ? 1 : 0;
  });
  return keyed.map((k) => k.job);
}

/** The origin of queueKey's time axis (any fixed instant would do; the index uses this one). */
export const QUEUE_KEY_EPOCH = Date.UTC(2000, 0, 1);

/**
 * A job's place in the queue as one number that does not depend on `now`, so the database can
 * index it: effective priority with aging counted continuously instead of in whole steps, less
 * the aging every job has gained since QUEUE_KEY_EPOCH (the same for all of them). Higher goes
 * first. It orders as rankQueue does up to the rounding of aging to whole steps: of two jobs
 * enqueued by `now`, one whose key is at least `agingStep` above the other's ranks ahead of it.
 * A cycle reads the queue in this order (activities/cycle.ts) and ranks what it read.
 */
export function queueKey(job: Pick<QueuedJob, 'tier' | 'priority' | 'enqueuedAt'>, cfg: QueueConfig = DEFAULT_QUEUE_CONFIG): number {
  return TIER_RANK[job.tier] * cfg.tierWeight + job.priority - (cfg.agingStep * (job.enqueuedAt - QUEUE_KEY_EPOCH)) / cfg.agingIntervalMs;
}

/**
 * Whether `waiting` may rank at or ahead of `arrival` in rankQueue's order at some moment once
 * both are queued: what a placement on admission must not overtake, since the next cycle,
 * whenever it runs, may serve such a job first. Both age at the same rate from then on, but in
 * whole steps counted from different instants, so the waiting job's lead in effective priority is
 * its base lead plus its head start in aging steps, rounded down or up as time passes; this takes
 * the larger. Ties count as ahead (the earlier job wins them). A waiting job keyed (queueKey) at
 * least one agingStep below the arrival never ranks ahead of it, so the jobs to look at are a
 * bounded range of the rank index.
 */
export function mayRankAhead(
  waiting: Pick<QueuedJob, 'tier' | 'priority' | 'enqueuedAt'>,
  arrival: Pick<QueuedJob, 'tier' | 'priority' | 'enqueuedAt'>,
  cfg: QueueConfig = DEFAULT_QUEUE_CONFIG,
): boolean {
  const base = (j: Pick<QueuedJob, 'tier' | 'priority'>): number => TIER_RANK[j.tier] * cfg.tierWeight + j.priority;
  const headStartSteps = Math.ceil((arrival.enqueuedAt - waiting.enqueuedAt) / cfg.agingIntervalMs);
  return base(waiting) - base(arrival) + headStartSteps * cfg.agingStep >= 0;
}

/** A placed or running job's hold on capacity, with when it is expected to end. */
export interface Holding {
  acceleratorType: string;
  milli: number;
  expectedEnd: number;
}

interface Reservation {
  job: QueuedJob;
  shadow: number;
  /** The accelerator type it is expected to start on at `shadow` (the one that frees first). */
  type: string;
}

/**
 * Backfill gate for one scheduling cycle, walked in rank order. When a job cannot be placed for
 * lack of capacity, the scheduler calls `block(job)`; it reserves the job's estimated start (its
 * "shadow time") on one accelerator type: of the job's types, the one where free capacity plus
 * capacity of holdings ending by then first reaches job.milli. A job blocked although that much
 * is free now (its shape does not fit the free pieces) waits for at least one holding to end,
 * so its shadow time is never "now". `admits(job)` then says whether a later-ranked job may be
 * placed now, and on which types: a type reserved by a blocked job is closed to it unless
 * now + job.durationMs ≤ that shadow time (it will be gone before the blocked job can start).
 * A job left with some of its types is admitted on those only; with none, it is held. A blocked
 * job whose shadow time cannot be found (not enough capacity even when everything ends) reserves
 * nothing. Capacity a job takes when placed must be told with `took(type, milli, expectedEnd)`
 * so later shadow computations see it (it is added to holdings and removed from free).
 */
export class BackfillGate {
  private readonly free = new Map<string, number>();
  private readonly holdings: Holding[] = [];
  /** Blocked jobs with a shadow time, in the order they were blocked (rank order). */
  private readonly reservations = new Map<string, Reservation>();

  constructor(
    private readonly now: number,
    free: ReadonlyMap<string, number>,
    holdings: readonly Holding[],
  ) {
    for (const [type, milli] of free) {
      requireMilli(`free milli for ${type}`, milli);
      this.free.set(type, milli);
    }
    holdings.forEach((h, i) => {
      requireMilli(`holdings[${i}].milli (${h.acceleratorType})`, h.milli);
      this.holdings.push({ ...h });
    });
  }

  block(job: QueuedJob): void {
    // Re-blocking the same job replaces its reservation rather than stacking a second one.
    this.reservations.delete(job.jobId);
    const shadow = this.shadowTime(job);
    if (shadow !== undefined) this.reservations.set(job.jobId, { job, ...shadow });
  }

  /**
   * Whether `job` may be placed now: `ok` with `types`, the types it may use (all of its own
   * when nothing is reserved against it), or not `ok` with the reason naming the highest-ranked
   * reservation that closes its last type.
   */
  admits(job: QueuedJob): { ok: true; types: string[] } | { ok: false; reason: string } {
    const finish = this.now + job.durationMs;
    let open = [...new Set(job.acceleratorTypes)];
    // Blocks arrive in rank order: the first reservation that closes a type is the one reported.
    let first: Reservation | undefined;
    for (const r of this.reservations.values()) {
      if (finish <= r.shadow || !open.includes(r.type)) continue;
      open = open.filter((t) => t !== r.type);
      first ??= r;
      if (!open.length) break;
    }
    if (open.length) return { ok: true, types: open };
    const { job: held, shadow, type } = first!;
    // An absolute time (to the second), so the reason stays the same from cycle to cycle and
    // the job is not re-told it on every cycle.
    const startsAt = new Date(Math.ceil(Math.max(shadow, this.now) / 1000) * 1000).toISOString().replace('.000Z', 'Z');
    return {
      ok: false,
      reason:
        `held for higher-ranked job ${held.jobId} (needs ${formatDevices(held.milli)} ${type}, ` +
        `expected to start by ${startsAt}); this job's ${Math.ceil(job.durationMs / 1000)}s would delay it`,
    };
  }

  took(acceleratorType: string, milli: number, expectedEnd: number): void {
    requireMilli('milli', milli);
    // Clamped: a stale free snapshot must not leave negative capacity that no holding can repay.
    this.free.set(acceleratorType, Math.max(0, (this.free.get(acceleratorType) ?? 0) - milli));
    this.holdings.push({ acceleratorType, milli, expectedEnd });
  }

  /** Shadow time recorded for a blocked job, for display (undefined if none). */
  shadowOf(jobId: string): number | undefined {
    return this.reservations.get(jobId)?.shadow;
  }

  /** The type a blocked job's reservation holds, for display (undefined if none). */
  reservedTypeOf(jobId: string): string | undefined {
    return this.reservations.get(jobId)?.type;
  }

  private shadowTime(job: QueuedJob): { shadow: number; type: string } | undefined {
    let earliest: { shadow: number; type: string } | undefined;
    for (const type of new Set(job.acceleratorTypes)) {
      const t = this.shadowOnType(type, job.milli);
      if (t !== undefined && (earliest === undefined || t < earliest.shadow)) earliest = { shadow: t, type };
    }
    return earliest;
  }

  private shadowOnType(type: string, need: number): number | undefined {
    // Blocked with this much free already: the free pieces do not fit its shape, so it waits for
    // a holding to end at least (then, with everything that ended by then, it has what it needs).
    let available = this.free.get(type) ?? 0;
    const ending = this.holdings.filter((h) => h.acceleratorType === type).sort((a, b) => a.expectedEnd - b.expectedEnd);
    for (const h of ending) {
      available += h.milli;
      // A holding already overdue is expected to end any moment, not in the past.
      if (available >= need) return Math.max(this.now, h.expectedEnd);
    }
    return undefined;
  }
}

function requireMilli(name: string, milli: number): void {
  if (!Number.isFinite(milli) || milli < 0) {
    throw new Error(`${name} must be a finite number of milli-devices ≥ 0, got ${milli}`);
  }
}
