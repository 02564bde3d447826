// The PostgreSQL allocator: finds candidate nodes through indexes, lets a pure policy choose
// devices, and writes allocations in one transaction. Keyed by (job id, epoch): a retry returns
// the placement already made; a stale epoch can neither allocate nor release.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database } from '../db/schema';
import type { AllocateResult, Placement, PlacementPolicyName, ResourceRequest } from '../api/types';
import { RecentMix, choosePlacement, describeRequest, type CandidateNode } from './placement/policy';
import { badRequest, isTransient, staleEpoch, unknownJob, withTransientRetry } from './errors';
import { validateSpec } from '../api/validation';

export interface AllocateInput {
  jobId: string;
  epoch: number;
  request: ResourceRequest;
  policy?: PlacementPolicyName;
}

export interface ReleaseResult {
  released: number;
}

type Trx = Transaction<Database>;

/** Per accelerator type, the most devices any node has (refreshed when a type is not found). */
class InventoryShape {
  private maxDevices = new Map<string, number>();
  private loadedAt = 0;
  constructor(private readonly db: Kysely<Database>) {}

  async get(type: string): Promise<number | undefined> {
    if (!this.maxDevices.has(type) || Date.now() - this.loadedAt > 10_000) await this.load();
    return this.maxDevices.get(type);
  }

  private async load(): Promise<void> {
    const types = await this.db.selectFrom('accelerator_types').select('name').execute();
    const sizes = await this.db
      .selectFrom('nodes')
      .select(['accelerator_type', (eb) => eb.fn.max('device_count').as('max')])
      .groupBy('accelerator_type')
      .execute();
    this.maxDevices = new Map(types.map((t) => [t.name, 0]));
    for (const s of sizes) this.maxDevices.set(s.accelerator_type, Number(s.max));
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
    const problems = validateSpec({
      jobId: 'check', tenant: 'check', tier: 'basic', priority: 0, durationMs: 1, request,
    }).filter((p) => p.startsWith('request'));
    if (problems.length) throw badRequest(problems.join('; '));
    const perNode = request.topology === 'node' ? request.workers * Math.max(1, request.devicesPerWorker) : Math.max(1, request.devicesPerWorker);
    let largest = 0;
    for (const type of request.acceleratorTypes) {
      const max = await this.shape.get(type);
      if (max === undefined) throw badRequest(`request.acceleratorTypes: unknown accelerator type ${JSON.stringify(type)}`);
      largest = Math.max(largest, max);
    }
    if (request.devicesPerWorker > 0 && perNode > largest)
      throw badRequest(
        `request: ${describeRequest(request)} needs ${perNode} devices on one node, but the largest node of ${request.acceleratorTypes.join('|')} has ${largest}`,
      );
  }

  async allocate(input: AllocateInput): Promise<AllocateResult> {
    await this.checkRequest(input.request);
    this.mix.add(input.request);
    return withTransientRetry(() => this.db.transaction().execute((trx) => this.allocateIn(trx, input)));
  }

  /**
   * Places an ordered list of requests in one transaction, in order, each seeing the capacity
   * the earlier ones took. A request that is refused does not stop the others.
   */
  async allocateBatch(inputs: AllocateInput[]): Promise<BatchItemResult[]> {
    const valid: AllocateInput[] = [];
    const refused = new Map<AllocateInput, string>();
    for (const input of inputs) {
      try {
        await this.checkRequest(input.request);
        this.mix.add(input.request);
        valid.push(input);
      } catch (err) {
        refused.set(input, (err as Error).message);
      }
    }
    const placed = await withTransientRetry(() =>
      this.db.transaction().execute(async (trx) => {
        const out = new Map<AllocateInput, BatchItemResult>();
        for (const input of valid) {
          await sql`SAVEPOINT item`.execute(trx);
          try {
            out.set(input, { jobId: input.jobId, result: await this.allocateIn(trx, input) });
            await sql`RELEASE SAVEPOINT item`.execute(trx);
          } catch (err) {
            if (isTransient(err)) throw err;
            await sql`ROLLBACK TO SAVEPOINT item`.execute(trx);
            out.set(input, { jobId: input.jobId, error: (err as Error).message });
          }
        }
        return out;
      }),
    );
    return inputs.map((i) => placed.get(i) ?? { jobId: i.jobId, error: refused.get(i) });
  }

  private async allocateIn(trx: Trx, input: AllocateInput): Promise<AllocateResult> {
    const current = await lockJob(trx, input.jobId);
    if (current > input.epoch) throw staleEpoch(input.jobId, input.epoch, current);
    if (current < input.epoch) await trx.updateTable('jobs').set({ epoch: input.epoch }).where('id', '=', input.jobId).execute();
    const existing = await readPlacement(trx, input.jobId, input.epoch);
    if (existing) return { placed: true, placement: existing };
    const result = await this.place(trx, input);
    await trx
      .updateTable('jobs')
      .set(result.placed ? { state: 'placed', waiting_reason: null, updated_at: new Date() } : { waiting_reason: result.reason, updated_at: new Date() })
      .where('id', '=', input.jobId)
      .execute();
    return result;
  }

  private async place(trx: Trx, input: AllocateInput): Promise<AllocateResult> {
    const { request } = input;
    const policy = input.policy ?? this.defaultPolicy;
    const reasons: string[] = [];
    for (const type of request.acceleratorTypes) {
      const candidates = await findCandidates(trx, type, request, policy, this.candidateLimit);
      const choice = choosePlacement(candidates, request, policy, { mix: this.mix.shapes() });
      if (!choice.ok) {
        reasons.push(`${type}: ${choice.reason}`);
        continue;
      }
      const names = new Map(candidates.map((c) => [c.id, c.name]));
      await trx
        .insertInto('allocations')
        .values(
          choice.workers.flatMap((w) =>
            w.deviceIdx.map((d) => ({
              job_id: input.jobId, epoch: input.epoch, node_id: w.nodeId, device_idx: d, milli: w.milli, worker_idx: w.workerIdx,
            })),
          ),
        )
        .execute();
      const placement: Placement = {
        jobId: input.jobId,
        epoch: input.epoch,
        acceleratorType: type,
        workers: choice.workers.map((w) => ({ ...w, nodeName: names.get(w.nodeId)! })),
      };
      return { placed: true, placement };
    }
    return { placed: false, reason: reasons.join('; ') };
  }

  /** Frees everything the job holds. Idempotent; refused for an epoch older than the job's. */
  async release(jobId: string, epoch: number): Promise<ReleaseResult> {
    return withTransientRetry(() =>
      this.db.transaction().execute(async (trx) => {
        const found = await trx.selectFrom('jobs').select('epoch').where('id', '=', jobId).forUpdate().executeTakeFirst();
        if (!found) return { released: 0 };
        if (found.epoch > epoch) throw staleEpoch(jobId, epoch, found.epoch);
        const deleted = await trx.deleteFrom('allocations').where('job_id', '=', jobId).executeTakeFirst();
        return { released: Number(deleted.numDeletedRows) };
      }),
    );
  }
}

async function lockJob(trx: Trx, jobId: string): Promise<number> {
  const job = await trx.selectFrom('jobs').select('epoch').where('id', '=', jobId).forUpdate().executeTakeFirst();
  if (!job) throw unknownJob(jobId);
  return job.epoch;
}

export async function readPlacement(db: Kysely<Database> | Trx, jobId: string, epoch: number): Promise<Placement | undefined> {
  const rows = await db
    .selectFrom('allocations as a')
    .innerJoin('nodes as n', 'n.id', 'a.node_id')
    .select(['a.worker_idx', 'a.node_id', 'n.name', 'n.accelerator_type', 'a.device_idx', 'a.milli'])
    .where('a.job_id', '=', jobId)
    .where('a.epoch', '=', epoch)
    .orderBy('a.worker_idx')
    .orderBy('a.device_idx')
    .execute();
  if (rows.length === 0) return undefined;
  const workers = new Map<number, Placement['workers'][number]>();
  for (const r of rows) {
    const w = workers.get(r.worker_idx) ?? { workerIdx: r.worker_idx, nodeId: r.node_id, nodeName: r.name, deviceIdx: [], milli: r.milli };
    w.deviceIdx.push(r.device_idx);
    workers.set(r.worker_idx, w);
  }
  return { jobId, epoch, acceleratorType: rows[0].accelerator_type, workers: [...workers.values()] };
}

/**
 * Candidate nodes for one accelerator type, read through the fit indexes and locked with
 * SKIP LOCKED so concurrent allocators do not queue behind each other on hot rows.
 */
async function findCandidates(
  trx: Trx,
  type: string,
  request: ResourceRequest,
  policy: PlacementPolicyName,
  candidateLimit: number,
): Promise<CandidateNode[]> {
  const limit = Math.min(1024, Math.max(candidateLimit, request.workers * 4));
  const whole = request.devicesPerWorker > 0;
  const perNode = whole ? (request.topology === 'node' ? request.workers * request.devicesPerWorker : request.devicesPerWorker) : 1;
  const base = () => {
    let q = trx
      .selectFrom('nodes')
      .select(['id', 'name', 'pod', 'rack', 'free_milli'])
      .where('accelerator_type', '=', type)
      .where('state', '=', 'ready');
    if (request.nodeLabels && Object.keys(request.nodeLabels).length)
      q = q.where('labels', '@>', JSON.stringify(request.nodeLabels) as never);
    return q;
  };
  const order = <Q extends ReturnType<typeof base>>(q: Q, fitColumn: 'free_whole' | 'max_partial'): Q => {
    switch (policy) {
      case 'first-fit':
        return q.orderBy('id') as Q;
      case 'random-fit':
        return q.orderBy((eb) => eb.fn('random', [])) as Q;
      default:
        return q.orderBy(fitColumn).orderBy('id') as Q;
    }
  };
  const rows = [];
  if (!whole) {
    const need = request.milliPerWorker ?? 1000;
    rows.push(...(await order(base().where('max_partial', '>=', need), 'max_partial').limit(limit).forUpdate().skipLocked().execute()));
  }
  const seen = new Set(rows.map((r) => r.id));
  for (const r of await order(base().where('free_whole', '>=', perNode), 'free_whole').limit(limit).forUpdate().skipLocked().execute())
    if (!seen.has(r.id)) rows.push(r);
  return rows.map((r) => ({ id: r.id, name: r.name, pod: r.pod, rack: r.rack, freeMilli: r.free_milli }));
}
