// The allocator's public shapes: what it is asked, what it answers, and the hooks a scheduling
// cycle decides with while a batch is placed.
import type { AllocateResult, PlacementPolicyName, ResourceRequest } from '../../api/types';
import type { PlacementObjective } from '../../scheduling/capacity';

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

export interface AllocatorOptions {
  /** The region this allocator's database serves, as its refusals name it. */
  region?: string;
  policy?: PlacementPolicyName;
  /** Candidate nodes read per index range scan (bounds the rows a placement reads). */
  candidateLimit?: number;
  /** Requests remembered as the workload mix for the fragmentation-aware policy. */
  mixWindow?: number;
  /** How price weighs in placement (scheduling/capacity.ts; default `cost`). */
  objective?: PlacementObjective;
}

/**
 * Per-cycle decisions the region scheduler makes while a batch is placed, in order, inside the
 * batch's transaction. Made fresh for each attempt of the transaction (it may be retried).
 */
export interface BatchHooks {
  /**
   * Whether to try this request now: undefined (as asked), `{ held }` (skip it, with the reason:
   * e.g. it would delay a higher-ranked job), or `{ onlyTypes }` (try only these of its types).
   */
  admit?(input: AllocateInput): { held: string } | { onlyTypes: string[] } | undefined;
  /** Told of each request's outcome. */
  settled?(input: AllocateInput, result: AllocateResult): void;
}

export interface BatchItemResult {
  jobId: string;
  result?: AllocateResult;
  /** Set when the request itself was refused (bad request, unknown job, stale epoch). */
  error?: string;
}
