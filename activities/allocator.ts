// The PostgreSQL allocator: finds candidate nodes through indexes, lets a pure policy choose
// devices, and writes allocations in one transaction. Keyed by (job id, epoch): a retry returns
// the placement already made; a stale epoch can neither allocate nor release.
import { sql, type Insertable, type Kysely, type SelectQueryBuilder, type Transaction } from 'kysely';
import type { Database, JobState } from '../db/schema';
import { PREPARED } from '../db/connection';
import type { AllocateResult, Placement, PlacementPolicyName, ResourceRequest } from '../api/types';
import { RecentMix, chooseAmongTypes, describeRequest, type CandidateNode, type TypeChoice, type WorkerChoice } from './placement/policy';
import { badRequest, staleEpoch, unknownJob, withTransientRetry } from './errors';
import { validateRequest } from '../api/validation';
import { applyCharge, checkQuota, quotaKey, quotaKeysFor, type QuotaRule } from './quota/quota';
import { ReservationLedger, type ActiveReservation } from './reservations';
import type { Tier } from '../api/types';

export interface AllocateInput {
  jobId: string;
  epoch: number;
  request: ResourceRequest;
  policy?: PlacementPolicyName;
}

export interface ReleaseResult {
  released: number;
  /** From `finish`: whether, as it began, another job waited in the job's region (the freed devices may be theirs). */
  othersWaiting?: boolean;
}

type Trx = Transaction<Database>;

/** The largest node of one accelerator type: most devices, CPU and memory (Infinity: some node does not track it). */
interface TypeShape {
  devices: number;
  cpuMilli: number;
  memoryMib: number;
}

/** Per accelerator type, the largest amounts any node has (refreshed when a type is not found). */
class InventoryShape {
  private largest = new Map<string, TypeShape>();
  private loadedAt = 0;
  constructor(private readonly db: Kysely<Database>) {}

  async get(type: string): Promise<TypeShape | undefined> {
    if (!this.largest.has(type) || Date.now() - this.loadedAt > 10_000) await this.load();
    return this.largest.get(type);
  }

  private async load(): Promise<void> {
    const types = await this.db.selectFrom('accelerator_types').select('name').execute();
    const sizes = await this.db
      .selectFrom('nodes')
      .select((eb) => [
        'accelerator_type',
        eb.fn.max('device_count').as('devices'),
        eb.fn.max('cpu_milli').as('cpu'),
        eb.fn.max('memory_mib').as('memory'),
        // A node that does not track CPU or memory has room for any.
        sql<boolean>`bool_or(cpu_milli IS NULL)`.as('cpu_untracked'),
        sql<boolean>`bool_or(memory_mib IS NULL)`.as('memory_untracked'),
      ])
      .groupBy('accelerator_type')
      .execute();
    this.largest = new Map(types.map((t) => [t.name, { devices: 0, cpuMilli: 0, memoryMib: 0 }]));
    for (const s of sizes)
      this.largest.set(s.accelerator_type, {
        devices: Number(s.devices),
        cpuMilli: s.cpu_untracked ? Infinity : Number(s.cpu),
        memoryMib: s.memory_untracked ? Infinity : Number(s.memory),
      });
    this.loadedAt = Date.now();
  }
}

export interface AllocatorOptions {
  policy?: PlacementPolicyName;
  /** Candidate nodes read per index range scan (bounds the rows a placement reads). */
  candidateLimit?: number;
  /** Requests remembered as the workload mix for the fragmentation-aware policy. */
  mixWindow?: number;
}

/**
 * Per-cycle decisions the region scheduler makes while a batch is placed, in order, inside the
 * batch's transaction. Made fresh for each attempt of the transaction (it may be retried).
 */
export interface BatchHooks {
  /** A reason to skip this request now (e.g. it would delay a higher-ranked job), or undefined. */
  admit?(input: AllocateInput): string | undefined;
  /** Told of each request's outcome. */
  settled?(input: AllocateInput, result: AllocateResult): void;
}

/** Milli-devices a request holds in all: the unit quota is charged in. */
export function requestMilli(request: ResourceRequest): number {
  return request.workers * (request.devicesPerWorker > 0 ? request.devicesPerWorker * 1000 : (request.milliPerWorker ?? 0));
}

const LIVE_FOR_PLACEMENT = new Set(['submitted', 'waiting', 'placed', 'running']);

export interface BatchItemResult {
  jobId: string;
  result?: AllocateResult;
  /** Set when the request itself was refused (bad request, unknown job, stale epoch). */
  error?: string;
}

export class Allocator {
  private readonly shape: InventoryShape;
  private readonly mix: RecentMix;
  private readonly defaultPolicy: PlacementPolicyName;
  private readonly candidateLimit: number;

  constructor(
    private readonly db: Kysely<Database>,
    options: AllocatorOptions | PlacementPolicyName = {},
  ) {
    const o = typeof options === 'string' ? { policy: options } : options;
    this.defaultPolicy = o.policy ?? 'fgd';
    this.candidateLimit = o.candidateLimit ?? 32;
    this.mix = new RecentMix(o.mixWindow ?? 2000);
    this.shape = new InventoryShape(db);
  }

  /** Rejects requests that can never be placed on this inventory, before touching any row. */
  async checkRequest(request: ResourceRequest): Promise<void> {
    const problems = validateRequest(request);
    if (problems.length) throw badRequest(problems.join('; '));
    const onOneNode = request.topology === 'node' ? request.workers : 1;
    const perNode = onOneNode * Math.max(1, request.devicesPerWorker);
    const largest: TypeShape = { devices: 0, cpuMilli: 0, memoryMib: 0 };
    for (const type of request.acceleratorTypes) {
      const shape = await this.shape.get(type);
      if (shape === undefined) throw badRequest(`request.acceleratorTypes: unknown accelerator type ${JSON.stringify(type)}`);
      largest.devices = Math.max(largest.devices, shape.devices);
      largest.cpuMilli = Math.max(largest.cpuMilli, shape.cpuMilli);
      largest.memoryMib = Math.max(largest.memoryMib, shape.memoryMib);
    }
    const types = request.acceleratorTypes.join('|');
    if (largest.devices === 0) throw badRequest(`request.acceleratorTypes: no node of ${types} exists in this region`);
    if (request.devicesPerWorker > 0 && perNode > largest.devices)
      throw badRequest(`request: ${describeRequest(request)} needs ${perNode} devices on one node, but the largest node of ${types} has ${largest.devices}`);
    // Such a request would wait forever: no node of its types has the host CPU or memory for one worker (or the gang, on one node).
    const cpu = onOneNode * (request.cpuMilliPerWorker ?? 0);
    if (cpu > largest.cpuMilli)
      throw badRequest(`request.cpuMilliPerWorker: ${describeRequest(request)} needs ${cpu}m CPU on one node, but the largest node of ${types} has ${largest.cpuMilli}m`);
    const memory = onOneNode * (request.memoryMibPerWorker ?? 0);
    if (memory > largest.memoryMib)
      throw badRequest(`request.memoryMibPerWorker: ${describeRequest(request)} needs ${memory} MiB on one node, but the largest node of ${types} has ${largest.memoryMib} MiB`);
  }

  async allocate(input: AllocateInput): Promise<AllocateResult> {
    await this.checkRequest(input.request);
    const [item] = await this.placeChecked([input]);
    if (item.failure) throw item.failure;
    return item.result!;
  }

  /**
   * Places an ordered list of requests in one transaction, in order, each seeing the capacity
   * the earlier ones took. A refused request (bad request, unknown job, stale epoch) does not
   * stop the others; its error is in its result.
   */
  async allocateBatch(inputs: AllocateInput[], hooks?: () => BatchHooks): Promise<BatchItemResult[]> {
    const valid: AllocateInput[] = [];
    const refused = new Map<AllocateInput, string>();
    for (const input of inputs) {
      try {
        await this.checkRequest(input.request);
        valid.push(input);
      } catch (err) {
        refused.set(input, (err as Error).message);
      }
    }
    const placed = new Map<AllocateInput, BatchItemResult>();
    const results = valid.length ? await this.placeChecked(valid, hooks) : [];
    valid.forEach((input, i) => {
      const r = results[i];
      placed.set(input, r.failure ? { jobId: input.jobId, error: r.failure.message } : { jobId: input.jobId, result: r.result });
    });
    return inputs.map((i) => placed.get(i) ?? { jobId: i.jobId, error: refused.get(i) });
  }

  /**
   * The one placement path. Set-based: the jobs are locked in one statement, existing
   * placements read in one, candidate nodes loaded once per (type, size) and locked with SKIP
   * LOCKED, placement decided in memory over those locked rows, and all allocations written in
   * one insert. The trigger and CHECK constraints still guard every device.
   */
  private async placeChecked(
    inputs: AllocateInput[],
    makeHooks?: () => BatchHooks,
  ): Promise<Array<{ result?: AllocateResult; failure?: Error }>> {
    for (const input of inputs) this.mix.add(input.request);
    return withTransientRetry(() =>
      this.db.transaction().execute(async (trx) => {
        const hooks = makeHooks?.() ?? {};
        const out: Array<{ result?: AllocateResult; failure?: Error }> = inputs.map(() => ({}));
        const ids = [...new Set(inputs.map((i) => i.jobId))];
        // The jobs locked, their placements, quota rules, open reservations and nominations: one round trip.
        const context = await lockAndRead(trx, ids);
        const jobs = new Map(context.jobs.map((j) => [j.id, j]));
        const existing = context.placements;
        const quota = await lockQuota(trx, context.rules, inputs.map((i) => ({ tenant: jobs.get(i.jobId)?.tenant, types: i.request.acceleratorTypes })));
        const reservations = ReservationLedger.of(context.reservations);
        // Nodes kept for a preemptor while its victims release them: nobody else is placed there.
        const nominated = new Map<number, Set<string>>();
        for (const n of context.nominations) {
          const set = nominated.get(n.node_id) ?? new Set<string>();
          set.add(n.preemptor);
          nominated.set(n.node_id, set);
        }
        const pools = new Map<string, Map<number, CandidateNode>>();
        // One object per node across pools, so capacity taken in one pool is gone in all.
        const nodes = new Map<number, CandidateNode>();
        const reads = new Map<string, CandidateRead[]>();
        const inserts: Array<Insertable<Database['allocations']>> = [];
        const placed: Array<{ id: string; charge: string[]; milli: number }> = [];
        const waiting: Array<[string, string]> = [];
        const bumps: Array<[string, number]> = [];
        const done = new Set<string>();
        for (const [i, input] of inputs.entries()) {
          const job = jobs.get(input.jobId);
          if (job === undefined) {
            out[i].failure = unknownJob(input.jobId);
            continue;
          }
          if (job.epoch > input.epoch) {
            out[i].failure = staleEpoch(input.jobId, input.epoch, job.epoch);
            continue;
          }
          const key = `${input.jobId}@${input.epoch}`;
          const had = existing.get(key);
          if (had) {
            out[i].result = { placed: true, placement: had };
            continue;
          }
          if (!LIVE_FOR_PLACEMENT.has(job.state)) {
            out[i].failure = badRequest(`job ${input.jobId} is ${job.state}; only a live job can be placed`);
            continue;
          }
          if (done.has(input.jobId)) {
            out[i].failure = badRequest(`job ${input.jobId} appears twice in one batch`);
            continue;
          }
          done.add(input.jobId);
          const held = hooks.admit?.(input);
          if (held !== undefined) {
            const result: AllocateResult = { placed: false, reason: held, blockedBy: 'held' };
            out[i].result = result;
            waiting.push([input.jobId, held]);
            hooks.settled?.(input, result);
            continue;
          }
          if (job.epoch < input.epoch) {
            bumps.push([input.jobId, input.epoch]);
            job.epoch = input.epoch;
          }
          const { result, charge } = await this.placeOne(trx, input, { tenant: job.tenant, tier: job.tier as Tier }, quota, reservations, nominated, pools, nodes, reads);
          out[i].result = result;
          if (result.placed) {
            existing.set(key, result.placement);
            placed.push({ id: input.jobId, charge, milli: requestMilli(input.request) });
            // The worker's host CPU and memory ride on its first device's row.
            const cpu = input.request.cpuMilliPerWorker ?? 0;
            const memory = input.request.memoryMibPerWorker ?? 0;
            for (const w of result.placement.workers)
              w.deviceIdx.forEach((d, k) =>
                inserts.push({
                  job_id: input.jobId, epoch: input.epoch, node_id: w.nodeId, device_idx: d, milli: w.milli, worker_idx: w.workerIdx,
                  cpu_milli: k === 0 ? cpu : 0, memory_mib: k === 0 ? memory : 0,
                }),
              );
          } else waiting.push([input.jobId, result.reason]);
          hooks.settled?.(input, result);
        }
        await writePlacements(trx, { inserts, placed, waiting, bumps, quota });
        return out;
      }),
    );
  }

  /** Chooses devices for one request over the transaction's locked candidate pools, in memory. */
  private async placeOne(
    trx: Trx,
    input: AllocateInput,
    job: { tenant: string; tier: Tier },
    quota: LockedQuota,
    reservations: ReservationLedger,
    nominated: Map<number, Set<string>>,
    pools: Map<string, Map<number, CandidateNode>>,
    nodes: Map<number, CandidateNode>,
    reads: Map<string, CandidateRead[]>,
  ): Promise<{ result: AllocateResult; charge: string[] }> {
    const { request } = input;
    const policy = input.policy ?? this.defaultPolicy;
    // Why each type was passed over, reported in the request's order.
    const why = new Map<string, string>();
    const milli = requestMilli(request);
    const { tenant } = job;
    let capacityShort = false;
    let reserved = false;
    const usable = (pool: Map<number, CandidateNode>): CandidateNode[] =>
      nominated.size ? [...pool.values()].filter((n) => nominated.get(n.id)?.has(input.jobId) ?? !nominated.has(n.id)) : [...pool.values()];
    const whole = request.devicesPerWorker > 0;
    const perNode = whole ? (request.topology === 'node' ? request.workers * request.devicesPerWorker : request.devicesPerWorker) : 0;
    const host = hostNeed(request);
    const labels = request.nodeLabels && Object.keys(request.nodeLabels).length ? JSON.stringify(request.nodeLabels) : '';
    const pageSize = Math.max(this.candidateLimit, request.workers * 4);

    /** A type this job may be placed on now (quota and reservations allow it), or undefined with the reason recorded. */
    const open = async (type: string): Promise<OpenType | undefined> => {
      const allowed = checkQuota(quota.rules, quota.usage, tenant, type, milli);
      if (!allowed.ok) {
        why.set(type, allowed.reason);
        return undefined;
      }
      const kept = await reservations.block(trx, job, type, milli);
      if (kept) {
        why.set(type, kept);
        reserved = true;
        return undefined;
      }
      const poolKey = `${type}|${labels}|${policy}`;
      let pool = pools.get(poolKey);
      if (!pool) pools.set(poolKey, (pool = new Map()));
      const need = `${poolKey}|${whole ? `w${perNode}` : `s${request.milliPerWorker}`}`;
      let shapeReads = reads.get(need);
      if (!shapeReads) reads.set(need, (shapeReads = []));
      return { type, charge: allowed.charge, pool, reads: shapeReads };
    };
    // Reads of a type's shape that asked for no more host CPU and memory than this request: they
    // read a superset of its candidates, so one that came back short covers it too.
    const covering = (t: OpenType): CandidateRead[] => t.reads.filter((r) => r.cpu <= host.cpu && r.memory <= host.memory);
    const exhausted = (t: OpenType): boolean => covering(t).some((r) => r.exhausted);
    const fetchPages = async (types: OpenType[]): Promise<void> => {
      // Next page of each type's candidates, past the nodes this transaction already holds: one statement for all types.
      const pages = await findCandidates(trx, types.map((t) => t.type), request, policy, this.candidateLimit, [...nodes.keys()]);
      for (const t of types) {
        const page = pages.get(t.type) ?? [];
        t.reads.push({ ...host, exhausted: page.length < pageSize });
        for (const c of page) {
          const node = nodes.get(c.id) ?? c;
          nodes.set(c.id, node);
          t.pool.set(c.id, node);
        }
      }
    };
    /** The policy's choice over these types' candidates, reading further pages while nothing fits and some type has more. */
    const choose = async (types: OpenType[]): Promise<TypeChoice> => {
      const unread = types.filter((t) => !covering(t).length);
      if (unread.length) await fetchPages(unread);
      const decide = () => chooseAmongTypes(types.map((t) => ({ type: t.type, candidates: usable(t.pool) })), request, policy, { mix: this.mix.shapes() });
      let choice = decide();
      for (let pages = 0; !choice.ok && pages < 8; pages++) {
        const more = types.filter((t) => !exhausted(t));
        if (!more.length) break;
        await fetchPages(more);
        choice = decide();
      }
      if (!choice.ok) {
        capacityShort = true;
        for (const r of choice.reasons) why.set(r.type, r.reason);
      }
      return choice;
    };

    let chosen: { type: OpenType; workers: WorkerChoice[] } | undefined;
    if ((request.typePreference ?? 'ordered') === 'ordered') {
      // A preference list: later types are looked at (and read) only when earlier ones have no room.
      for (const type of request.acceleratorTypes) {
        const t = await open(type);
        if (!t) continue;
        const choice = await choose([t]);
        if (choice.ok) {
          chosen = { type: t, workers: choice.workers };
          break;
        }
      }
    } else {
      // Equally acceptable types: every open type's candidates are read together and the policy picks across them.
      const opened: OpenType[] = [];
      for (const type of request.acceleratorTypes) {
        const t = await open(type);
        if (t) opened.push(t);
      }
      const choice = opened.length ? await choose(opened) : undefined;
      if (choice?.ok) chosen = { type: opened.find((t) => t.type === choice.type)!, workers: choice.workers };
    }
    if (!chosen) {
      const reason = request.acceleratorTypes.filter((t) => why.has(t)).map((t) => `${t}: ${why.get(t)}`).join('; ');
      return { result: { placed: false, reason, blockedBy: capacityShort ? 'capacity' : reserved ? 'reserved' : 'quota' }, charge: [] };
    }
    const { type, pool, charge } = chosen.type;
    applyCharge(quota.usage, charge, milli);
    await reservations.placed(trx, job, type, milli);
    for (const k of charge) quota.dirty.add(k);
    for (const w of chosen.workers) {
      const node = pool.get(w.nodeId)!;
      for (const d of w.deviceIdx) node.freeMilli[d] -= w.milli;
      if (node.freeCpuMilli !== undefined) node.freeCpuMilli -= request.cpuMilliPerWorker ?? 0;
      if (node.freeMemoryMib !== undefined) node.freeMemoryMib -= request.memoryMibPerWorker ?? 0;
    }
    const placement: Placement = {
      jobId: input.jobId,
      epoch: input.epoch,
      acceleratorType: type,
      workers: chosen.workers.map((w) => ({ ...w, nodeName: pool.get(w.nodeId)!.name })),
    };
    return { result: { placed: true, placement }, charge };
  }

  /** Frees everything the job holds. Idempotent; refused for an epoch older than the job's. */
  async release(jobId: string, epoch: number): Promise<ReleaseResult> {
    return this.releaseAs(jobId, epoch);
  }

  /**
   * Ends a job: sets its final state (so no cycle places it again), drops capacity nominated to
   * it, and releases what it holds, all in one transaction. Idempotent.
   */
  async finish(jobId: string, epoch: number, state: JobState, reason: string | null): Promise<ReleaseResult> {
    return this.releaseAs(jobId, epoch, { state, reason });
  }

  /**
   * One statement, so one round trip: lock the job, delete its allocations (the trigger frees the
   * devices), give its quota charge back, and (when finishing) set the final state — unless the
   * first ending recorded stands — and drop capacity nominated to it. A statement reads the
   * snapshot it started with, so if the job row changed between that snapshot and the lock (a
   * placement of this job committing meanwhile), it changes nothing and runs again.
   */
  private async releaseAs(jobId: string, epoch: number, final?: { state: JobState; reason: string | null }): Promise<ReleaseResult> {
    return withTransientRetry(async () => {
      for (let attempt = 1; ; attempt++) {
        // Prepared: lookups by key only, so its generic plan is as good as a custom one.
        const r = await sql<{ found_epoch: number | null; moved: boolean | null; released: number; others_waiting: boolean | null }>`${sql.raw(PREPARED)}
          WITH seen AS (SELECT xmin::text AS v FROM jobs WHERE id = ${jobId}),
          locked AS (SELECT id, epoch, region, quota_charge, quota_milli, xmin::text AS v FROM jobs WHERE id = ${jobId} FOR UPDATE),
          ok AS (SELECT l.* FROM locked l, seen s WHERE l.v = s.v AND l.epoch <= ${epoch}),
          del AS (DELETE FROM allocations a USING ok WHERE a.job_id = ok.id RETURNING 1),
          quota AS (
            UPDATE quotas SET used_milli = used_milli - ok.quota_milli FROM ok
            WHERE ok.quota_milli IS NOT NULL AND quotas.tenant || '|' || quotas.accelerator_type = ANY(ok.quota_charge)
            RETURNING 1),
          job AS (
            UPDATE jobs j SET quota_charge = NULL, quota_milli = NULL,
              state = CASE WHEN ${final !== undefined} AND j.state NOT IN ('completed', 'failed', 'cancelled', 'rejected') THEN ${final?.state ?? null}::text ELSE j.state END,
              waiting_reason = CASE WHEN ${final !== undefined} AND j.state NOT IN ('completed', 'failed', 'cancelled', 'rejected') THEN ${final?.reason ?? null}::text ELSE j.waiting_reason END,
              updated_at = CASE WHEN ${final !== undefined} THEN now() ELSE j.updated_at END
            FROM ok WHERE j.id = ok.id AND (j.quota_charge IS NOT NULL OR ${final !== undefined})
            RETURNING 1),
          nom AS (DELETE FROM nominations WHERE ${final !== undefined} AND preemptor IN (SELECT id FROM ok) RETURNING 1)
          SELECT (SELECT epoch FROM locked) AS found_epoch,
                 (SELECT l.v <> s.v FROM locked l, seen s) AS moved,
                 (SELECT count(*)::int FROM del) AS released,
                 -- Asked by finish only (whose caller wakes the scheduler on it): a probe of the queue
                 -- index costs a plain release for nothing.
                 CASE WHEN ${final !== undefined} THEN
                   EXISTS (SELECT 1 FROM jobs w, locked l WHERE w.region = l.region AND w.state = 'waiting' AND w.id <> l.id) END AS others_waiting`.execute(this.db);
        const row = r.rows[0];
        if (row.found_epoch === null) return { released: 0 };
        if (row.found_epoch > epoch) throw staleEpoch(jobId, epoch, row.found_epoch);
        if (!row.moved) return row.others_waiting === null ? { released: row.released } : { released: row.released, othersWaiting: row.others_waiting };
        if (attempt >= 10) throw new Error(`release of job ${jobId}: its row kept changing under the release (10 attempts)`);
      }
    });
  }
}

/** Placements held by these jobs, keyed `jobId@epoch`. */
export async function readPlacements(db: Kysely<Database> | Trx, jobIds: string[]): Promise<Map<string, Placement>> {
  if (!jobIds.length) return new Map();
  const rows = await db
    .selectFrom('allocations as a')
    .innerJoin('nodes as n', 'n.id', 'a.node_id')
    .select(['a.job_id', 'a.epoch', 'a.worker_idx', 'a.node_id', 'n.name', 'n.accelerator_type', 'a.device_idx', 'a.milli'])
    .where('a.job_id', 'in', jobIds)
    .orderBy('a.job_id')
    .orderBy('a.worker_idx')
    .orderBy('a.device_idx')
    .execute();
  return groupPlacements(rows);
}

/** One candidate read of a request shape in a transaction: the host need it filtered on, and whether it came back short. */
interface CandidateRead {
  cpu: number;
  memory: number;
  exhausted: boolean;
}

/** Host CPU and memory one node must have free for the request (all workers, when they share a node). */
function hostNeed(request: ResourceRequest): { cpu: number; memory: number } {
  const onOneNode = request.topology === 'node' ? request.workers : 1;
  return { cpu: onOneNode * (request.cpuMilliPerWorker ?? 0), memory: onOneNode * (request.memoryMibPerWorker ?? 0) };
}

/** A type a placement may use: its quota charge, its candidate pool and the candidate reads of the request's shape. */
interface OpenType {
  type: string;
  charge: string[];
  pool: Map<number, CandidateNode>;
  reads: CandidateRead[];
}

/**
 * Candidate nodes for each of `types`, read in one statement through the fit indexes (one
 * bounded range scan per type, joined laterally) and locked with SKIP LOCKED so concurrent
 * allocators do not queue behind each other on hot rows. Nodes short of the host CPU or memory
 * one worker needs are filtered on the same range scan.
 */
/** Fitting nodes per type the fragmentation-aware policy samples its candidates from (index order). */
export const FGD_SAMPLE_WINDOW = 1024;

async function findCandidates(
  trx: Trx,
  types: string[],
  request: ResourceRequest,
  policy: PlacementPolicyName,
  candidateLimit: number,
  exclude: number[] = [],
): Promise<Map<string, CandidateNode[]>> {
  const limit = Math.min(1024, Math.max(candidateLimit, request.workers * 4));
  const whole = request.devicesPerWorker > 0;
  const perNode = whole ? (request.topology === 'node' ? request.workers * request.devicesPerWorker : request.devicesPerWorker) : 1;
  const host = hostNeed(request);
  const scan = (fitColumn: 'free_whole' | 'max_partial', min: number) =>
    trx
      .selectFrom(sql<{ type: string }>`(SELECT unnest(${types}::text[]) AS type)`.as('t'))
      .innerJoinLateral(
        (eb) => {
          const fitting = <Q extends SelectQueryBuilder<Database & { t: { type: string } }, 'nodes' | 't', object>>(q: Q): Q => {
            let f = q.whereRef('nodes.accelerator_type', '=', 't.type').where('nodes.state', '=', 'ready').where(`nodes.${fitColumn}`, '>=', min);
            // NULL free amounts are untracked: room for anything.
            if (host.cpu > 0) f = f.where((w) => w.or([w('nodes.free_cpu_milli', 'is', null), w('nodes.free_cpu_milli', '>=', host.cpu)]));
            if (host.memory > 0) f = f.where((w) => w.or([w('nodes.free_memory_mib', 'is', null), w('nodes.free_memory_mib', '>=', host.memory)]));
            if (request.nodeLabels && Object.keys(request.nodeLabels).length)
              f = f.where('nodes.labels', '@>', JSON.stringify(request.nodeLabels) as never);
            if (exclude.length) f = f.where(sql<boolean>`nodes.id <> ALL(${exclude}::int[])`);
            return f as Q;
          };
          let q = fitting(
            eb.selectFrom('nodes').select(['id', 'name', 'pod', 'rack', 'accelerator_type', 'free_milli', 'free_cpu_milli', 'free_memory_mib']),
          );
          switch (policy) {
            case 'first-fit':
              q = q.orderBy('id');
              break;
            case 'random-fit':
              q = q.orderBy((o) => o.fn('random', []));
              break;
            case 'fgd':
              // FGD scores every candidate itself, so it reads a random sample rather than the fit
              // index's order, which would hand it best-fit's choices only. The sample is drawn from
              // the first FGD_SAMPLE_WINDOW fitting nodes in index order, so the rows read stay
              // bounded whatever the fleet size (and unlocked: only the sample is locked).
              q = q.where('nodes.id', 'in', (sub) =>
                sub
                  .selectFrom((inner) =>
                    fitting(inner.selectFrom('nodes').select('nodes.id')).orderBy(`nodes.${fitColumn}`).orderBy('nodes.id').limit(FGD_SAMPLE_WINDOW).as('w'),
                  )
                  .select('w.id')
                  .orderBy((o) => o.fn('random', []))
                  .limit(limit),
              );
              break;
            default:
              q = q.orderBy(fitColumn).orderBy('id');
          }
          return q.limit(limit).forUpdate().skipLocked().as('c');
        },
        (join) => join.onTrue(),
      )
      .selectAll('c')
      .execute();
  const rows = [];
  if (!whole) rows.push(...(await scan('max_partial', request.milliPerWorker ?? 1000)));
  const seen = new Set(rows.map((r) => r.id));
  for (const r of await scan('free_whole', perNode)) if (!seen.has(r.id)) rows.push(r);
  const out = new Map<string, CandidateNode[]>(types.map((t) => [t, []]));
  for (const r of rows)
    out.get(r.accelerator_type)!.push({
      id: r.id, name: r.name, pod: r.pod, rack: r.rack, freeMilli: r.free_milli,
      freeCpuMilli: r.free_cpu_milli ?? undefined, freeMemoryMib: r.free_memory_mib ?? undefined,
    });
  return out;
}

/** The quota rules and the locked usage rows a placement transaction decides against. */
interface LockedQuota {
  rules: QuotaRule[];
  usage: Map<string, number>;
  /** Usage keys this transaction changed (written by `writePlacements`). */
  dirty: Set<string>;
}

interface LockedJob {
  id: string;
  epoch: number;
  tenant: string;
  tier: string;
  state: JobState;
}

/** What a placement transaction decides against, read in the round trip that locks its jobs. */
interface PlacementContext {
  jobs: LockedJob[];
  placements: Map<string, Placement>;
  rules: QuotaRule[];
  reservations: ActiveReservation[];
  nominations: Array<{ node_id: number; preemptor: string }>;
}

interface PlacementRow {
  job_id: string;
  epoch: number;
  worker_idx: number;
  node_id: number;
  name: string;
  accelerator_type: string;
  device_idx: number;
  milli: number;
}

/**
 * Locks the batch's jobs (in id order) and reads, in the same statement, their placements and the
 * small tables every placement checks: quota rules, open reservations, nominations. A statement
 * reads the snapshot it started with; if a job row changed between that snapshot and its lock
 * (another placement or release of it committed meanwhile), the read runs again — the rows are
 * ours by then, so the second read is current.
 */
async function lockAndRead(trx: Trx, ids: string[]): Promise<PlacementContext> {
  for (let attempt = 1; ; attempt++) {
    const r = await sql<{
      jobs: LockedJob[];
      moved: number;
      placements: PlacementRow[];
      rules: QuotaRule[];
      reservations: Array<Omit<ActiveReservation, 'endsAt'> & { endsAt: string }>;
      nominations: PlacementContext['nominations'];
    }>`
      WITH seen AS (SELECT id, xmin::text AS v FROM jobs WHERE id = ANY(${ids}::text[])),
      locked AS (SELECT id, epoch, tenant, tier, state, xmin::text AS v FROM jobs WHERE id = ANY(${ids}::text[]) ORDER BY id FOR UPDATE)
      SELECT
        coalesce((SELECT json_agg(json_build_object('id', id, 'epoch', epoch, 'tenant', tenant, 'tier', tier, 'state', state)) FROM locked), '[]') AS jobs,
        (SELECT count(*)::int FROM locked l JOIN seen s USING (id) WHERE l.v <> s.v) AS moved,
        coalesce((SELECT json_agg(json_build_object('job_id', a.job_id, 'epoch', a.epoch, 'worker_idx', a.worker_idx, 'node_id', a.node_id,
            'name', n.name, 'accelerator_type', n.accelerator_type, 'device_idx', a.device_idx, 'milli', a.milli)
            ORDER BY a.job_id, a.worker_idx, a.device_idx)
          FROM allocations a JOIN nodes n ON n.id = a.node_id WHERE a.job_id = ANY(${ids}::text[])), '[]') AS placements,
        coalesce((SELECT json_agg(json_build_object('tenant', tenant, 'acceleratorType', accelerator_type, 'nominal', nominal,
          'borrowingLimit', borrowing_limit, 'lendingLimit', lending_limit)) FROM quotas), '[]') AS rules,
        coalesce((SELECT json_agg(json_build_object('id', id, 'tenant', tenant, 'acceleratorType', accelerator_type, 'devices', devices,
          'endsAt', ends_at)) FROM reservations WHERE state = 'active'), '[]') AS reservations,
        coalesce((SELECT json_agg(json_build_object('node_id', node_id, 'preemptor', preemptor)) FROM nominations), '[]') AS nominations`.execute(trx);
    const row = r.rows[0];
    if (row.moved > 0 && attempt < 10) continue;
    if (row.moved > 0) throw new Error(`placement: jobs ${ids.join(', ')} kept changing under their lock (10 reads)`);
    return {
      jobs: row.jobs,
      placements: groupPlacements(row.placements),
      rules: row.rules,
      nominations: row.nominations,
      reservations: row.reservations.map((x) => ({ ...x, endsAt: new Date(x.endsAt) })),
    };
  }
}

function groupPlacements(rows: PlacementRow[]): Map<string, Placement> {
  const out = new Map<string, Placement>();
  for (const r of rows) {
    const key = `${r.job_id}@${r.epoch}`;
    let p = out.get(key);
    if (!p) out.set(key, (p = { jobId: r.job_id, epoch: r.epoch, acceleratorType: r.accelerator_type, workers: [] }));
    let w = p.workers.find((x) => x.workerIdx === r.worker_idx);
    if (!w) p.workers.push((w = { workerIdx: r.worker_idx, nodeId: r.node_id, nodeName: r.name, deviceIdx: [], milli: r.milli }));
    w.deviceIdx.push(r.device_idx);
  }
  return out;
}

/**
 * Everything a placement transaction writes, in one statement: the allocation rows (the trigger
 * takes the devices, CPU and memory, and the CHECKs refuse oversubscription), the jobs' new
 * epochs, placed states, quota charges and waiting reasons, the nominations the placed jobs no
 * longer need, and the quota usage.
 */
async function writePlacements(
  trx: Trx,
  w: {
    inserts: Array<Insertable<Database['allocations']>>;
    placed: Array<{ id: string; charge: string[]; milli: number }>;
    waiting: Array<[string, string]>;
    bumps: Array<[string, number]>;
    quota: LockedQuota;
  },
): Promise<void> {
  const jobs = new Map<string, { epoch: number | null; placed: boolean; charge: string | null; milli: number | null; reason: string | null }>();
  const job = (id: string) => {
    let j = jobs.get(id);
    if (!j) jobs.set(id, (j = { epoch: null, placed: false, charge: null, milli: null, reason: null }));
    return j;
  };
  for (const [id, epoch] of w.bumps) job(id).epoch = epoch;
  for (const p of w.placed) Object.assign(job(p.id), { placed: true, charge: p.charge.join(','), milli: p.milli });
  for (const [id, reason] of w.waiting) job(id).reason = reason;
  const quotaKeys = [...w.quota.dirty];
  if (!jobs.size && !w.inserts.length && !quotaKeys.length) return;
  const ids = [...jobs.keys()];
  const rows = [...jobs.values()];
  const col = <K extends keyof Insertable<Database['allocations']>>(k: K) => w.inserts.map((i) => i[k] ?? 0);
  // Prepared: every table it touches is reached by key from its parameter arrays.
  await sql`${sql.raw(PREPARED)}
    WITH ins AS (
      INSERT INTO allocations (job_id, epoch, node_id, device_idx, milli, worker_idx, cpu_milli, memory_mib)
      SELECT * FROM unnest(${col('job_id')}::text[], ${col('epoch')}::int[], ${col('node_id')}::int[], ${col('device_idx')}::int[],
        ${col('milli')}::int[], ${col('worker_idx')}::int[], ${col('cpu_milli')}::int[], ${col('memory_mib')}::int[])
      RETURNING 1),
    job AS (
      UPDATE jobs AS j SET
        epoch = coalesce(u.epoch, j.epoch),
        state = CASE WHEN u.placed THEN 'placed' ELSE j.state END,
        waiting_reason = CASE WHEN u.placed THEN NULL ELSE coalesce(u.reason, j.waiting_reason) END,
        placed_at = CASE WHEN u.placed THEN now() ELSE j.placed_at END,
        quota_charge = CASE WHEN NOT u.placed THEN j.quota_charge WHEN u.charge = '' THEN NULL ELSE string_to_array(u.charge, ',') END,
        quota_milli = CASE WHEN u.placed THEN u.milli ELSE j.quota_milli END,
        updated_at = now()
      FROM unnest(${ids}::text[], ${rows.map((r) => r.epoch)}::int[], ${rows.map((r) => r.placed)}::bool[], ${rows.map((r) => r.charge)}::text[],
        ${rows.map((r) => r.milli)}::int[], ${rows.map((r) => r.reason)}::text[]) AS u(id, epoch, placed, charge, milli, reason)
      WHERE j.id = u.id AND (u.placed OR u.epoch IS NOT NULL OR j.waiting_reason IS DISTINCT FROM u.reason)
      RETURNING 1),
    nom AS (DELETE FROM nominations WHERE preemptor = ANY(${w.placed.map((p) => p.id)}::text[]) RETURNING 1),
    quota AS (
      UPDATE quotas AS q SET used_milli = u.used
      FROM unnest(${quotaKeys}::text[], ${quotaKeys.map((k) => w.quota.usage.get(k) ?? 0)}::bigint[]) AS u(k, used)
      WHERE q.tenant || '|' || q.accelerator_type = u.k
      RETURNING 1)
    SELECT (SELECT count(*) FROM ins) AS allocations`.execute(trx);
}

async function lockQuota(trx: Trx, rules: QuotaRule[], wants: Array<{ tenant?: string; types: string[] }>): Promise<LockedQuota> {
  const usage = new Map<string, number>();
  const dirty = new Set<string>();
  const keys = new Set<string>();
  if (rules.length)
    for (const w of wants) if (w.tenant) for (const t of w.types) for (const k of quotaKeysFor(rules, w.tenant, t)) keys.add(k);
  if (keys.size) {
    const locked = await sql<{ tenant: string; accelerator_type: string; used_milli: string }>`
      SELECT tenant, accelerator_type, used_milli FROM quotas
      WHERE tenant || '|' || accelerator_type = ANY(${[...keys].sort()}::text[])
      ORDER BY tenant, accelerator_type FOR UPDATE`.execute(trx);
    for (const r of locked.rows) usage.set(quotaKey(r.tenant, r.accelerator_type), Number(r.used_milli));
  }
  return {
    rules,
    usage,
    dirty,
  };
}
