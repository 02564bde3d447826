// One placement transaction: the jobs locked and the context read once, then each request decided
// in order over the locked candidate nodes in memory (each seeing what earlier ones took), and
// everything written in one statement at the end. Made afresh for each attempt of the transaction.
import type { Insertable, Transaction } from 'kysely';
import type { Database } from '../../db/schema';
import type { AllocateResult, Placement, PlacementPolicyName, ResourceRequest, Tier } from '../../api/types';
import { badRequest, staleEpoch, unknownJob } from '../../api/errors';
import { chooseAmongTypes, type CandidateNode, type RecentMix, type TypeChoice, type WorkerChoice } from '../../scheduling/placement';
import { applyCharge, checkQuota } from '../../scheduling/quota';
import { tierMayUse, type PlacementObjective } from '../../scheduling/capacity';
import { candidatePageSize, hostNeed, requestMilli, wholeDevicesPerNode } from '../../scheduling/geometry';
import { ReservationLedger } from '../reservations';
import { candidatePagesQuery, candidatesOf, findCandidatePages, type CandidatePage } from './candidates';
import { lockAndRead, lockQuota, type LockedJob, type LockedQuota } from './context';
import { writePlacements } from './write';
import type { AllocateInput, BatchHooks } from './types';
import { recordAllocatorConflict, type PlacementEvent } from '../metrics';

type Trx = Transaction<Database>;

/** A request's outcome in the transaction: a result, or a refusal of the request itself. */
export interface ItemOutcome {
  result?: AllocateResult;
  failure?: Error;
  /** Set when this transaction placed the job (not for a placement it already held): for the metrics, once committed. */
  placed?: PlacementEvent;
}

/** What the transaction needs from its allocator. */
export interface PlacementSettings {
  defaultPolicy: PlacementPolicyName;
  candidateLimit: number;
  mix: RecentMix;
  /** The region the metrics name. */
  region: string;
  /** How price weighs in (scheduling/capacity.ts). */
  objective?: PlacementObjective;
}

const LIVE_FOR_PLACEMENT = new Set(['submitted', 'waiting', 'placed', 'running']);

/** One candidate read of a request shape in a transaction: the host need it filtered on, and whether it came back short. */
interface CandidateRead {
  cpu: number;
  memory: number;
  exhausted: boolean;
}

/** A type a placement may use: its quota charge, its candidate pool and the candidate reads of the request's shape. */
interface OpenType {
  type: string;
  charge: string[];
  pool: Map<number, CandidateNode>;
  reads: CandidateRead[];
  poolKey: string;
  need: string;
}

export class PlacementTransaction {
  /** Nodes kept for a preemptor while its victims release them: nobody else is placed there. */
  private readonly nominated = new Map<number, Set<string>>();
  /** Candidate pools by (type, labels, policy). */
  private readonly pools = new Map<string, Map<number, CandidateNode>>();
  /** One object per node across pools, so capacity taken in one pool is gone in all. */
  private readonly nodes = new Map<number, CandidateNode>();
  private readonly reads = new Map<string, CandidateRead[]>();
  // What the transaction will write.
  private readonly inserts: Array<Insertable<Database['allocations']>> = [];
  private readonly placed: Array<{ id: string; charge: string[]; milli: number }> = [];
  private readonly waiting: Array<[string, string]> = [];
  private readonly bumps: Array<[string, number]> = [];
  private readonly done = new Set<string>();

  private constructor(
    private readonly trx: Trx,
    private readonly settings: PlacementSettings,
    private readonly jobs: Map<string, LockedJob>,
    private readonly existing: Map<string, Placement>,
    private readonly quota: LockedQuota,
    private readonly reservations: ReservationLedger,
    nominations: Array<{ node_id: number; preemptor: string }>,
  ) {
    for (const n of nominations) {
      const set = this.nominated.get(n.node_id) ?? new Set<string>();
      set.add(n.preemptor);
      this.nominated.set(n.node_id, set);
    }
  }

  /** Locks the inputs' jobs and reads what every placement decides against: one round trip, plus the quota rows' lock. */
  static async open(trx: Trx, settings: PlacementSettings, inputs: readonly AllocateInput[]): Promise<PlacementTransaction> {
    const ids = [...new Set(inputs.map((i) => i.jobId))];
    const first = firstPages(settings, inputs);
    const context = await lockAndRead(
      trx,
      ids,
      () => recordAllocatorConflict(settings.region),
      first.length ? candidatePagesQuery(first.map((f) => f.page)) : undefined,
    );
    const jobs = new Map(context.jobs.map((j) => [j.id, j]));
    const quota = await lockQuota(
      trx,
      context.rules,
      inputs.map((i) => ({ tenant: jobs.get(i.jobId)?.tenant, types: i.request.acceleratorTypes })),
    );
    const placement = new PlacementTransaction(
      trx,
      settings,
      jobs,
      context.placements,
      quota,
      ReservationLedger.of(context.reservations),
      context.nominations,
    );
    const pages = candidatesOf(context.candidates, first.length);
    first.forEach((f, i) =>
      placement.takePage(f.pool, f.need, f.host, candidatePageSize(f.page.request, settings.candidateLimit), pages[i]),
    );
    return placement;
  }

  /** Decides every input in order, then writes all the decisions in one statement. */
  async placeAll(inputs: readonly AllocateInput[], hooks: BatchHooks): Promise<ItemOutcome[]> {
    const out: ItemOutcome[] = [];
    for (const input of inputs) out.push(await this.decide(input, hooks));
    await writePlacements(this.trx, {
      inserts: this.inserts,
      placed: this.placed,
      waiting: this.waiting,
      bumps: this.bumps,
      quota: this.quota,
    });
    return out;
  }

  /** Records a page read for a shape, and adds its nodes to the pool (one object per node across pools). */
  takePage(poolKey: string, need: string, host: { cpu: number; memory: number }, pageSize: number, page: CandidateNode[]): void {
    let pool = this.pools.get(poolKey);
    if (!pool) this.pools.set(poolKey, (pool = new Map()));
    let reads = this.reads.get(need);
    if (!reads) this.reads.set(need, (reads = []));
    reads.push({ ...host, exhausted: page.length < pageSize });
    for (const c of page) {
      const node = this.nodes.get(c.id) ?? c;
      this.nodes.set(c.id, node);
      pool.set(c.id, node);
    }
  }

  private async decide(input: AllocateInput, hooks: BatchHooks): Promise<ItemOutcome> {
    const job = this.jobs.get(input.jobId);
    if (job === undefined) return { failure: unknownJob(input.jobId) };
    if (job.epoch > input.epoch) return { failure: staleEpoch(input.jobId, input.epoch, job.epoch) };
    const key = `${input.jobId}@${input.epoch}`;
    const had = this.existing.get(key);
    if (had) return { result: { placed: true, placement: had } };
    if (!LIVE_FOR_PLACEMENT.has(job.state))
      return { failure: badRequest(`job ${input.jobId} is ${job.state}; only a live job can be placed`) };
    if (this.done.has(input.jobId)) return { failure: badRequest(`job ${input.jobId} appears twice in one batch`) };
    this.done.add(input.jobId);
    const gate = hooks.admit?.(input);
    if (gate && 'held' in gate) {
      const result: AllocateResult = { placed: false, reason: gate.held, blockedBy: 'held' };
      this.waiting.push([input.jobId, gate.held]);
      hooks.settled?.(input, result);
      return { result };
    }
    if (job.epoch < input.epoch) {
      this.bumps.push([input.jobId, input.epoch]);
      job.epoch = input.epoch;
    }
    // Narrowed: the other types are kept for higher-ranked jobs; the reason then says so.
    const narrowed = gate && gate.onlyTypes.length < input.request.acceleratorTypes.length ? gate.onlyTypes : undefined;
    const tried = narrowed ? { ...input, request: { ...input.request, acceleratorTypes: narrowed } } : input;
    const { result, charge } = await this.placeOne(tried, { tenant: job.tenant, tier: job.tier as Tier });
    if (!result.placed && narrowed) {
      const kept = input.request.acceleratorTypes.filter((t) => !narrowed.includes(t));
      result.reason = `${result.reason}; ${kept.join(', ')} kept for higher-ranked jobs`;
    }
    if (result.placed) {
      this.existing.set(key, result.placement);
      this.placed.push({ id: input.jobId, charge, milli: requestMilli(input.request) });
      // The worker's host CPU and memory ride on its first device's row.
      const cpu = input.request.cpuMilliPerWorker ?? 0;
      const memory = input.request.memoryMibPerWorker ?? 0;
      for (const w of result.placement.workers)
        w.deviceIdx.forEach((d, k) =>
          this.inserts.push({
            job_id: input.jobId,
            epoch: input.epoch,
            node_id: w.nodeId,
            device_idx: d,
            milli: w.milli,
            worker_idx: w.workerIdx,
            cpu_milli: k === 0 ? cpu : 0,
            memory_mib: k === 0 ? memory : 0,
          }),
        );
    } else this.waiting.push([input.jobId, result.reason]);
    hooks.settled?.(input, result);
    if (result.placed)
      return {
        result,
        placed: {
          tier: job.tier,
          acceleratorType: result.placement.acceleratorType,
          waitedSeconds: input.epoch === 1 ? job.waited_s : undefined,
        },
      };
    return { result };
  }

  /** Chooses devices for one request over the transaction's locked candidate pools, in memory. */
  private async placeOne(input: AllocateInput, job: { tenant: string; tier: Tier }): Promise<{ result: AllocateResult; charge: string[] }> {
    const { request } = input;
    const policy = input.policy ?? this.settings.defaultPolicy;
    // Why each type was passed over, reported in the request's order.
    const why = new Map<string, string>();
    const milli = requestMilli(request);
    let capacityShort = false;
    let reserved = false;
    const usable = (pool: Map<number, CandidateNode>): CandidateNode[] =>
      (this.nominated.size
        ? [...pool.values()].filter((n) => this.nominated.get(n.id)?.has(input.jobId) ?? !this.nominated.has(n.id))
        : [...pool.values()]
      ).filter((n) => tierMayUse(job.tier, n));
    const host = hostNeed(request);
    const pageSize = candidatePageSize(request, this.settings.candidateLimit);

    /** A type this job may be placed on now (quota and reservations allow it), or undefined with the reason recorded. */
    const open = async (type: string): Promise<OpenType | undefined> => {
      const allowed = checkQuota(this.quota.rules, this.quota.usage, job.tenant, type, milli);
      if (!allowed.ok) {
        why.set(type, allowed.reason);
        return undefined;
      }
      const kept = await this.reservations.block(this.trx, job, type, milli);
      if (kept) {
        why.set(type, kept);
        reserved = true;
        return undefined;
      }
      const keys = keysOf(request, type, policy);
      let pool = this.pools.get(keys.pool);
      if (!pool) this.pools.set(keys.pool, (pool = new Map()));
      let shapeReads = this.reads.get(keys.need);
      if (!shapeReads) this.reads.set(keys.need, (shapeReads = []));
      return { type, charge: allowed.charge, pool, reads: shapeReads, poolKey: keys.pool, need: keys.need };
    };
    // Reads of a type's shape that asked for no more host CPU and memory than this request: they
    // read a superset of its candidates, so one that came back short covers it too.
    const covering = (t: OpenType): CandidateRead[] => t.reads.filter((r) => r.cpu <= host.cpu && r.memory <= host.memory);
    const exhausted = (t: OpenType): boolean => covering(t).some((r) => r.exhausted);
    const fetchPages = async (types: OpenType[]): Promise<void> => {
      // Next page of each type's candidates, past the nodes this transaction already holds: one statement for all types.
      const pages = await findCandidatePages(
        this.trx,
        types.map((t) => ({ type: t.type, request, policy, candidateLimit: this.settings.candidateLimit })),
        [...this.nodes.keys()],
      );
      types.forEach((t, i) => this.takePage(t.poolKey, t.need, host, pageSize, pages[i]));
    };
    /** The policy's choice over these types' candidates, reading further pages while nothing fits and some type has more. */
    const choose = async (types: OpenType[]): Promise<TypeChoice> => {
      const unread = types.filter((t) => !covering(t).length);
      if (unread.length) await fetchPages(unread);
      const decide = () =>
        chooseAmongTypes(
          types.map((t) => ({ type: t.type, candidates: usable(t.pool) })),
          request,
          policy,
          { mix: this.settings.mix.shapes(), objective: this.settings.objective },
        );
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
      const reason = request.acceleratorTypes
        .filter((t) => why.has(t))
        .map((t) => `${t}: ${why.get(t)}`)
        .join('; ');
      return { result: { placed: false, reason, blockedBy: capacityShort ? 'capacity' : reserved ? 'reserved' : 'quota' }, charge: [] };
    }
    const { type, pool, charge } = chosen.type;
    applyCharge(this.quota.usage, charge, milli);
    await this.reservations.placed(this.trx, job, type, milli);
    for (const k of charge) this.quota.dirty.add(k);
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
}

/** Where a request's candidates of one type are kept: its pool (by type, labels and policy) and its shape's reads. */
function keysOf(request: ResourceRequest, type: string, policy: PlacementPolicyName): { pool: string; need: string } {
  const labels = request.nodeLabels && Object.keys(request.nodeLabels).length ? JSON.stringify(request.nodeLabels) : '';
  const pool = `${type}|${labels}|${policy}`;
  return { pool, need: `${pool}|${request.devicesPerWorker > 0 ? `w${wholeDevicesPerNode(request)}` : `s${request.milliPerWorker}`}` };
}

/** A first page of candidates read as the transaction opens, and where it is kept. */
interface FirstPage {
  page: CandidatePage;
  pool: string;
  need: string;
  host: { cpu: number; memory: number };
}

/**
 * The first page of candidates every request will look at first (its first type when its types
 * are a preference list, all of them when they are equally acceptable), one per shape and host
 * need: read in the statement that locks the jobs, so a transaction pays one round trip for its
 * context and candidates. A request whose pages come back short, or whose type is refused by
 * quota or a reservation, reads further pages (or none) as it is decided.
 */
function firstPages(settings: PlacementSettings, inputs: readonly AllocateInput[]): FirstPage[] {
  const wanted = new Map<string, FirstPage>();
  for (const { request, policy: asked } of inputs) {
    const policy = asked ?? settings.defaultPolicy;
    const host = hostNeed(request);
    const types = (request.typePreference ?? 'ordered') === 'ordered' ? request.acceleratorTypes.slice(0, 1) : request.acceleratorTypes;
    for (const type of types) {
      const keys = keysOf(request, type, policy);
      const id = `${keys.need}|${host.cpu}|${host.memory}`;
      if (!wanted.has(id)) wanted.set(id, { page: { type, request, policy, candidateLimit: settings.candidateLimit }, ...keys, host });
    }
  }
  return [...wanted.values()];
}
