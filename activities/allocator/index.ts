// The PostgreSQL allocator: finds candidate nodes through indexes, lets a pure policy choose
// devices, and writes allocations in one transaction. Keyed by (job id, epoch): a retry returns
// the placement already made; a stale epoch can neither allocate nor release.
//
// One database serves one region (the global design keeps a database per region), so the
// allocator's inventory is every node in its database: the region it names in its refusals.
import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema';
import { withTransientRetry } from '../../db/transient';
import type { AllocateResult, JobOutcome, PlacementPolicyName, ResourceRequest } from '../../api/types';
import { ErrorTypes, badRequest, isDomainError } from '../../api/errors';
import { validateRequest } from '../../api/validation';
import { RecentMix } from '../../scheduling/placement';
import { neverFits } from '../../scheduling/geometry';
import { InventoryShape } from './inventory-shape';
import { PlacementTransaction, type ItemOutcome, type PlacementSettings } from './transaction';
import { releaseJob } from './release';
import type { AllocateInput, AllocatorOptions, BatchHooks, BatchItemResult, ReleaseResult } from './types';
import { recordAllocatorRetry, recordPlacements } from '../metrics';

export type { AllocateInput, AllocatorOptions, BatchHooks, BatchItemResult, ReleaseResult } from './types';
export { readPlacements } from './context';
export { FGD_SAMPLE_WINDOW } from './candidates';

export class Allocator {
  private readonly shape: InventoryShape;
  private readonly settings: PlacementSettings;
  /** How refusals name this allocator's inventory. */
  private readonly where: string;

  constructor(
    private readonly db: Kysely<Database>,
    options: AllocatorOptions | PlacementPolicyName = {},
  ) {
    const o = typeof options === 'string' ? { policy: options } : options;
    this.settings = {
      defaultPolicy: o.policy ?? 'fgd-host',
      candidateLimit: o.candidateLimit ?? 32,
      mix: new RecentMix(o.mixWindow ?? 2000),
      region: o.region ?? 'local',
      objective: o.objective,
    };
    this.where = o.region ? `region ${o.region}` : 'this region';
    this.shape = new InventoryShape(db);
  }

  /** Rejects requests that can never be placed on this inventory, before touching any row. */
  async checkRequest(request: ResourceRequest): Promise<void> {
    const problems = validateRequest(request);
    if (problems.length) throw badRequest(problems.join('; '));
    const never = neverFits(request, await this.shape.of(request.acceleratorTypes), this.where);
    if (never) throw badRequest(never);
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
        // A request refused is this item's answer; an inventory that could not be read fails the batch.
        if (!isDomainError(err, ErrorTypes.badRequest)) throw err;
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
  private async placeChecked(inputs: AllocateInput[], makeHooks?: () => BatchHooks): Promise<ItemOutcome[]> {
    for (const input of inputs) this.settings.mix.add(input.request);
    let attempts = 0;
    const outcomes = await withTransientRetry(() => {
      if (attempts++) recordAllocatorRetry(this.settings.region);
      return this.db.transaction().execute(async (trx) => {
        const placement = await PlacementTransaction.open(trx, this.settings, inputs);
        return placement.placeAll(inputs, makeHooks?.() ?? {});
      });
    });
    recordPlacements(
      this.settings.region,
      outcomes.flatMap((o) => o.placed ?? []),
    );
    return outcomes;
  }

  /** Frees everything the job holds. Idempotent; refused for an epoch older than the job's. */
  async release(jobId: string, epoch: number): Promise<ReleaseResult> {
    return releaseJob(this.db, jobId, epoch);
  }

  /**
   * Ends a job: sets its final state (so no cycle places it again), drops capacity nominated to
   * it, and releases what it holds, all in one transaction. Idempotent.
   */
  async finish(jobId: string, epoch: number, state: JobOutcome, reason: string | null): Promise<ReleaseResult> {
    return releaseJob(this.db, jobId, epoch, { state, reason });
  }
}
