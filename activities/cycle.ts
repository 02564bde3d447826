// One scheduling cycle of a region: read the head of the queue in rank order (tier, priority,
// aging) through its index, place those jobs in that order through the batch allocator in one
// transaction, hold capacity for a blocked higher-ranked job against backfill that would delay it,
// then tell each job workflow what happened. Delivery is best effort: a job that misses its signal
// finds its placement by its own periodic check, and a victim that was never told to yield is
// told again while the capacity it must free stays nominated.
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { Database } from '../db/schema';
import { TIERS, type AllocateResult, type JobSpec, type Placement, type ResourceRequest, type Tier } from '../api/types';
import type { AllocateInput, Allocator, BatchHooks } from './allocator';
import { placedSignal, preemptSignal, waitingSignal } from '../api/messages';
import { activityLog, tell, type Region } from './region';
import { releaseEndedJob } from './reconcile';
import { requestMilli } from '../scheduling/geometry';
import { planPreemptions, type PreemptionPlan } from './preemption';
import {
  BackfillGate,
  DEFAULT_QUEUE_CONFIG,
  QUEUE_KEY_EPOCH,
  TIER_RANK,
  rankQueue,
  type Holding,
  type QueueConfig,
  type QueuedJob,
} from '../scheduling/queue';

export interface CycleOptions {
  /** Most waiting jobs read per cycle (the head of the queue, in rank order), bounding the cycle's work. */
  scanLimit?: number;
  /** Most jobs tried in one placement transaction, in rank order. */
  batchLimit?: number;
  queue?: QueueConfig;
  /** Most preemptions planned per cycle, for the highest-ranked jobs that did not fit. */
  preemptLimit?: number;
  /** Time a victim has to checkpoint before it must release. */
  preemptGraceMs?: number;
  /**
   * A victim of a standing nomination is told again when it still holds the nominated capacity
   * this long after the nomination with no tell recorded (the first was lost), or this long past
   * its grace period after the last tell (it was busy yielding to another preemptor then).
   */
  preemptRetellMs?: number;
}

interface WaitingJob extends QueuedJob {
  epoch: number;
  workflowId: string;
  request: ResourceRequest;
  previousReason: string | null;
}

export interface CycleOutcome {
  considered: number;
  placed: Array<{ jobId: string; workflowId: string; epoch: number; placement: Placement }>;
  /** Jobs still waiting whose reason changed in this cycle. */
  reasons: Array<{ jobId: string; workflowId: string; epoch: number; reason: string }>;
  /** Jobs refused outright (the allocator cannot ever place the request, or the job is gone). */
  refused: Array<{ jobId: string; error: string }>;
  /** Preemptions started this cycle: each victim must be told. */
  preemptions: PreemptionPlan[];
  /** Standing preemptions whose victims must be told again (see CycleOptions.preemptRetellMs). */
  retells: PreemptionPlan[];
  /** More waiting jobs than this cycle took. */
  more: boolean;
  ms: number;
  /** Where the cycle's time went, ms per step (see CyclePhases). */
  phases: CyclePhases;
}

/** A cycle's time by step, for the benches and the scheduler's debug log. */
export interface CyclePhases {
  /** Reading the head of the queue and the standing nominations to tell again. */
  queue: number;
  /** The capacity picture for the backfill rule and the nominated preemptors. */
  capacity: number;
  /** The placement transaction. */
  place: number;
  /** Preemption planning for the jobs that did not fit. */
  plan: number;
  /** Delivering the outcome: placements, preempt signals, waiting reasons (scheduleCycle only). */
  deliver?: number;
}

export async function runCycle(db: Kysely<Database>, allocator: Allocator, region: string, o: CycleOptions = {}): Promise<CycleOutcome> {
  const started = Date.now();
  const phases: CyclePhases = { queue: 0, capacity: 0, place: 0, plan: 0 };
  let mark = started;
  const lap = (step: keyof CyclePhases): void => {
    const t = Date.now();
    phases[step] = t - mark;
    mark = t;
  };
  const scanLimit = o.scanLimit ?? 2000;
  const batchLimit = o.batchLimit ?? 256;
  const cfg = o.queue ?? DEFAULT_QUEUE_CONFIG;
  // The head of the queue, however long it is: read in queueKey order, then ranked exactly (the
  // key counts aging continuously, the rank in whole steps; they differ by less than one step).
  const rows = (await waitingQueueQuery(region, scanLimit + 1, cfg).execute(db)).rows;
  const more = rows.length > scanLimit;
  const now = Date.now();
  const waiting: WaitingJob[] = rows.slice(0, scanLimit).map((r) => {
    const spec = r.spec;
    return {
      jobId: r.id,
      tier: r.tier as Tier,
      priority: r.priority,
      enqueuedAt: r.enqueued_at.getTime(),
      epoch: r.epoch,
      workflowId: r.workflow_id,
      request: spec.request,
      acceleratorTypes: spec.request.acceleratorTypes,
      milli: requestMilli(spec.request),
      durationMs: spec.durationMs,
      previousReason: r.waiting_reason,
    };
  });
  const ranked = rankQueue(waiting, now, cfg).slice(0, batchLimit);
  const outcome: CycleOutcome = {
    considered: ranked.length,
    placed: [],
    reasons: [],
    refused: [],
    preemptions: [],
    retells: await victimsToRetell(
      db,
      region,
      o.preemptGraceMs ?? DEFAULT_PREEMPT_GRACE_MS,
      o.preemptRetellMs ?? DEFAULT_PREEMPT_RETELL_MS,
    ),
    more: more || waiting.length > ranked.length,
    ms: 0,
    phases,
  };
  lap('queue');
  if (!ranked.length) return { ...outcome, ms: Date.now() - started };

  const byId = new Map(ranked.map((j) => [j.jobId, j]));
  // Capacity now and when it frees up, for the backfill rule (only needed with two or more jobs).
  const capacity = ranked.length > 1 ? await capacityPicture(db, region) : { free: new Map<string, number>(), holdings: [] };
  // A preemptor whose victims are releasing capacity kept for it waits behind nobody, and nobody
  // waits behind it: that capacity is no other job's, so placing it there cannot delay a
  // higher-ranked job, and placing another job elsewhere cannot delay it.
  const nominated = new Set(
    (
      await db
        .selectFrom('nominations')
        .select('preemptor')
        .distinct()
        .where(
          'preemptor',
          'in',
          ranked.map((j) => j.jobId),
        )
        .execute()
    ).map((n) => n.preemptor),
  );
  const hooks = (): BatchHooks => {
    const gate = new BackfillGate(now, capacity.free, capacity.holdings);
    return {
      admit: (input) => {
        if (nominated.has(input.jobId)) return undefined;
        const verdict = gate.admits(byId.get(input.jobId)!);
        return verdict.ok ? { onlyTypes: verdict.types } : { held: verdict.reason };
      },
      settled: (input, result: AllocateResult) => {
        const job = byId.get(input.jobId)!;
        if (result.placed) gate.took(result.placement.acceleratorType, job.milli, now + job.durationMs);
        // A nominated preemptor's room is kept for it (no one else is placed on those nodes), so
        // nothing placed elsewhere can delay it: it holds no one back.
        else if (result.blockedBy === 'capacity' && !nominated.has(input.jobId)) gate.block(job);
      },
    };
  };
  lap('capacity');
  const inputs: AllocateInput[] = ranked.map((j) => ({ jobId: j.jobId, epoch: j.epoch, request: j.request }));
  const results = await allocator.allocateBatch(inputs, hooks);
  lap('place');
  const blocked: Array<WaitingJob & { reclaimOnly: boolean }> = [];
  const reasonOf = new Map<string, string>();
  for (const [i, r] of results.entries()) {
    const job = ranked[i];
    if (r.error) outcome.refused.push({ jobId: job.jobId, error: r.error });
    else if (r.result?.placed)
      outcome.placed.push({ jobId: job.jobId, workflowId: job.workflowId, epoch: job.epoch, placement: r.result.placement });
    else if (r.result) {
      reasonOf.set(job.jobId, r.result.reason);
      // Held jobs too: one entitled to preempt takes nodes nominated to it, so it cannot delay
      // the job it was held for, and holding it would serialise preemptions one per type.
      if (r.result.blockedBy === 'capacity' || r.result.blockedBy === 'reserved' || r.result.blockedBy === 'held')
        blocked.push({ ...job, reclaimOnly: false });
      else if (r.result.blockedBy === 'quota') blocked.push({ ...job, reclaimOnly: true });
    }
  }
  // Preemption, for the highest-ranked jobs that did not fit and are entitled to it.
  const winding = new Map<string, string[]>();
  if (blocked.length)
    for (const n of await db
      .selectFrom('nominations')
      .select(['preemptor', 'victim'])
      .where(
        'preemptor',
        'in',
        blocked.map((b) => b.jobId),
      )
      .execute())
      winding.set(n.preemptor, [...new Set([...(winding.get(n.preemptor) ?? []), n.victim])]);
  const toPlan: Array<{ jobId: string; reclaimOnly: boolean }> = [];
  for (const job of blocked) {
    const victims = winding.get(job.jobId);
    if (victims) {
      reasonOf.set(job.jobId, `preempting ${victims.join(', ')}: placed once they release (grace period)`);
      continue;
    }
    if (toPlan.length < (o.preemptLimit ?? 8)) toPlan.push({ jobId: job.jobId, reclaimOnly: job.reclaimOnly });
  }
  for (const plan of await planPreemptions(db, toPlan, now))
    if (plan && 'victims' in plan) {
      outcome.preemptions.push(plan);
      reasonOf.set(plan.preemptor, plan.reason);
    }
  for (const job of ranked) {
    const reason = reasonOf.get(job.jobId);
    // Every change is told, holds included: the check compares with the row, so a reason the row
    // took without the workflow hearing of it (a hold told once) would leave its status stale when
    // the row later moves to a reason written elsewhere (CI: a backlog job never shown its quota).
    if (reason !== undefined && reason !== job.previousReason)
      outcome.reasons.push({ jobId: job.jobId, workflowId: job.workflowId, epoch: job.epoch, reason });
  }
  // The allocator wrote "no room" for preemptors whose victims are still winding down: say why they wait.
  const preempting = outcome.reasons.filter((r) => r.reason.startsWith('preempting'));
  if (preempting.length)
    await sql`UPDATE jobs AS j SET waiting_reason = u.reason FROM unnest(${preempting.map((r) => r.jobId)}::text[], ${preempting.map((r) => r.reason)}::text[]) AS u(id, reason)
      WHERE j.id = u.id AND j.state = 'waiting'`.execute(db);
  lap('plan');
  return { ...outcome, ms: Date.now() - started };
}

interface QueueRow {
  id: string;
  tier: string;
  priority: number;
  enqueued_at: Date;
  epoch: number;
  workflow_id: string;
  /** Only what a cycle needs of the spec: its request and duration, not the whole document. */
  spec: Pick<JobSpec, 'request' | 'durationMs'>;
  waiting_reason: string | null;
}

/**
 * The statement a cycle reads the head of a region's queue with: waiting jobs by queueKey
 * (scheduling/queue.ts), highest first, then oldest, then by id. With the default queue settings
 * its ORDER BY is the expression of the index `jobs_queue_rank` (migration 0008), so PostgreSQL
 * reads the first `limit` entries of the index however many jobs wait. Other settings order by
 * their own weights, correctly but by sorting every waiting job of the region: an index for them
 * is a new migration with their numbers (the integration test `queue-backlog` checks the match).
 */
export function waitingQueueQuery(region: string, limit: number, cfg: QueueConfig = DEFAULT_QUEUE_CONFIG): RawBuilder<QueueRow> {
  return sql<QueueRow>`
    SELECT id, tier, priority, enqueued_at, epoch, workflow_id,
      jsonb_build_object('request', spec->'request', 'durationMs', spec->'durationMs') AS spec, waiting_reason FROM jobs
    WHERE region = ${region} AND state = 'waiting'
    ORDER BY ${queueKeySql(cfg)} DESC, enqueued_at, id
    LIMIT ${limit}`;
}

/**
 * queueKey as SQL over a jobs row. Written out from the settings (numbers checked finite), not
 * bound: an index expression matches a query's only when both carry the same constants.
 */
export function queueKeySql(cfg: QueueConfig = DEFAULT_QUEUE_CONFIG): RawBuilder<number> {
  const epoch = new Date(QUEUE_KEY_EPOCH).toISOString();
  return sql.raw(
    `(${rankBaseText(cfg)} - date_part('epoch', enqueued_at - TIMESTAMPTZ '${epoch}')` +
      ` * ${sqlNumber('agingStep × 1000', cfg.agingStep * 1000)} / ${sqlNumber('agingIntervalMs', cfg.agingIntervalMs)})`,
  );
}

/** A jobs row's effective priority before aging (tier weight plus priority), as SQL. */
export function rankBaseSql(cfg: QueueConfig = DEFAULT_QUEUE_CONFIG): RawBuilder<number> {
  return sql.raw(`(${rankBaseText(cfg)})`);
}

function rankBaseText(cfg: QueueConfig): string {
  const tiers = TIERS.map((t) => `WHEN '${t}' THEN ${sqlNumber(`tierWeight × ${t}`, TIER_RANK[t] * cfg.tierWeight)}`).join(' ');
  return `CASE tier ${tiers} ELSE 0 END + priority`;
}

/** A queue setting written into SQL text: finite, negative numbers parenthesised. */
export function sqlNumber(what: string, v: number): string {
  if (!Number.isFinite(v)) throw new Error(`queue settings: ${what} must be a finite number, got ${v}`);
  return v < 0 ? `(${v})` : String(v);
}

/**
 * Victims of standing nominations to tell again: the preemptor still waits, the victim still
 * holds a nominated node at its current epoch (it has not yielded; a victim placed again later
 * never lands on a node nominated to another job), and either no tell was recorded `retellMs`
 * after the nomination (the first was lost: the cycle's activity died after the nominations
 * committed, and a retried cycle only says the preemptor is "preempting"), or the last tell is
 * `graceMs + retellMs` old (the victim was yielding to another preemptor when told, and ignored
 * it). The victim's workflow takes a repeated preempt for the preemptor it is yielding to as one.
 */
async function victimsToRetell(db: Kysely<Database>, region: string, graceMs: number, retellMs: number): Promise<PreemptionPlan[]> {
  const rows = await sql<{ preemptor: string; victim: string; workflow_id: string; epoch: number; reason: string | null }>`
    SELECT n.preemptor, n.victim, v.workflow_id, v.epoch, p.waiting_reason AS reason
    FROM nominations n
      JOIN jobs p ON p.id = n.preemptor AND p.region = ${region} AND p.state = 'waiting'
      JOIN jobs v ON v.id = n.victim AND v.state IN ('placed', 'running')
    WHERE EXISTS (SELECT 1 FROM allocations a WHERE a.job_id = v.id AND a.epoch = v.epoch AND a.node_id = n.node_id)
    GROUP BY n.preemptor, n.victim, v.workflow_id, v.epoch, p.waiting_reason
    HAVING (max(n.told_at) IS NULL AND min(n.created_at) < now() - ${retellMs} * interval '1 millisecond')
        OR max(n.told_at) < now() - ${graceMs + retellMs} * interval '1 millisecond'
    ORDER BY n.preemptor, n.victim`.execute(db);
  const plans = new Map<string, PreemptionPlan>();
  for (const r of rows.rows) {
    const plan = plans.get(r.preemptor) ?? { preemptor: r.preemptor, victims: [], reason: r.reason ?? 'preempting' };
    plan.victims.push({ jobId: r.victim, workflowId: r.workflow_id, epoch: r.epoch });
    plans.set(r.preemptor, plan);
  }
  return [...plans.values()];
}

/**
 * Free milli-devices per accelerator type on ready nodes, and what each live job holds with
 * when it is expected to end. Aggregates over all nodes: a database serves one region.
 */
async function capacityPicture(db: Kysely<Database>, region: string): Promise<{ free: Map<string, number>; holdings: Holding[] }> {
  const free = await sql<{ accelerator_type: string; free: string }>`
    SELECT n.accelerator_type, sum(f)::bigint AS free
    FROM nodes n CROSS JOIN LATERAL unnest(n.free_milli) AS f
    WHERE n.state = 'ready' GROUP BY n.accelerator_type`.execute(db);
  const held = await sql<{ accelerator_type: string; milli: string; expected_end: Date }>`
    SELECT n.accelerator_type, sum(a.milli)::bigint AS milli,
           coalesce(j.placed_at, now()) + ((j.spec->>'durationMs')::bigint * interval '1 millisecond') AS expected_end
    FROM jobs j JOIN allocations a ON a.job_id = j.id AND a.epoch = j.epoch JOIN nodes n ON n.id = a.node_id
    WHERE j.region = ${region} AND j.state IN ('placed', 'running')
    GROUP BY j.id, n.accelerator_type`.execute(db);
  return {
    free: new Map(free.rows.map((r) => [r.accelerator_type, Number(r.free)])),
    holdings: held.rows.map((r) => ({
      acceleratorType: r.accelerator_type,
      milli: Number(r.milli),
      expectedEnd: new Date(r.expected_end).getTime(),
    })),
  };
}

/** Time a preempted job has to checkpoint before it releases, unless the region configures another. */
export const DEFAULT_PREEMPT_GRACE_MS = 10_000;
/** See CycleOptions.preemptRetellMs. */
export const DEFAULT_PREEMPT_RETELL_MS = 5_000;

export interface CycleSummary {
  considered: number;
  placed: number;
  waiting: number;
  more: boolean;
  ms: number;
  phases: CyclePhases;
}

/** One scheduling cycle, then delivery of its outcome to the job workflows. */
export async function scheduleCycle(region: Region, o: CycleOptions = {}): Promise<CycleSummary> {
  const { client } = region;
  const log = activityLog();
  const out = await runCycle(region.db, region.allocator, region.name, o);
  const delivering = Date.now();
  const graceMs = o.preemptGraceMs ?? DEFAULT_PREEMPT_GRACE_MS;
  const told: Array<{ preemptor: string; victim: string }> = [];
  const tellVictims = (p: PreemptionPlan): Array<Promise<void>> =>
    p.victims.map(async (v) => {
      if (await tell(() => client.workflow.getHandle(v.workflowId).signal(preemptSignal, { preemptor: p.preemptor, graceMs }))) {
        told.push({ preemptor: p.preemptor, victim: v.jobId });
        return;
      }
      // A victim whose workflow has ended holds devices nobody will give back: release them now.
      await releaseEndedJob(region, v.jobId, v.epoch, `its workflow ${v.workflowId} had ended when it was asked to yield`, true);
      log.warn('victim with an ended workflow released', { jobId: v.jobId, event: 'scheduler.released-dead' });
    });
  for (const p of out.preemptions)
    log.info('preemption', {
      event: 'scheduler.preempt',
      jobId: p.preemptor,
      preemptor: p.preemptor,
      victims: p.victims.map((v) => v.jobId),
      reason: p.reason,
    });
  for (const p of out.retells)
    log.warn('victims told again to yield', {
      event: 'scheduler.preempt-retold',
      jobId: p.preemptor,
      preemptor: p.preemptor,
      victims: p.victims.map((v) => v.jobId),
    });
  // All at once, the preempt signals first: a victim's grace period starts when it hears, and
  // waiting reasons are only what an operator reads.
  await Promise.all([
    ...out.preemptions.flatMap(tellVictims),
    ...out.retells.flatMap(tellVictims),
    ...out.placed.map(async (p) => {
      if (await tell(() => client.workflow.getHandle(p.workflowId).signal(placedSignal, { epoch: p.epoch, placement: p.placement })))
        return;
      // Its workflow has ended (terminated, without its cleanup): nothing will run it or give the devices back.
      await releaseEndedJob(region, p.jobId, p.epoch, `its workflow ${p.workflowId} had ended when its placement was delivered`, false);
      log.warn('placement for an ended workflow released', { jobId: p.jobId, epoch: p.epoch, event: 'scheduler.released-dead' });
    }),
    ...out.reasons.map((r) =>
      tell(() => client.workflow.getHandle(r.workflowId).signal(waitingSignal, { epoch: r.epoch, reason: r.reason })),
    ),
  ]);
  for (const p of out.placed)
    log.info('job placed', {
      jobId: p.jobId,
      epoch: p.epoch,
      event: 'scheduler.placed',
      nodes: p.placement.workers.map((w) => w.nodeName),
    });
  // Recorded after delivery: a tell lost before this write is resent (see victimsToRetell).
  if (told.length)
    await sql`UPDATE nominations AS n SET told_at = now()
      FROM unnest(${told.map((t) => t.preemptor)}::text[], ${told.map((t) => t.victim)}::text[]) AS u(preemptor, victim)
      WHERE n.preemptor = u.preemptor AND n.victim = u.victim`.execute(region.db);
  for (const r of out.refused) log.warn('job refused by allocator', { jobId: r.jobId, event: 'scheduler.refused', error: r.error });
  return {
    considered: out.considered,
    placed: out.placed.length,
    waiting: out.considered - out.placed.length,
    more: out.more,
    ms: out.ms,
    phases: { ...out.phases, deliver: Date.now() - delivering },
  };
}
