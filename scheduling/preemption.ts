// Pure victim selection: when a job (the preemptor) cannot be placed, which running jobs to
// stop so that it fits. No I/O: the caller loads the candidate nodes of one accelerator type
// with their current free shares and the running jobs holding them, asks `chooseVictims`,
// then stops the victims and places the preemptor on the returned workers.
//
// Rules:
//  1. Eligibility (`mayPreempt`), checked in this order:
//     - a job never preempts itself, nor a job in its own `preemptedBy` (no preemption loops);
//     - a `premium` job is never a victim;
//     - a victim within its nominal quota (`borrowing: false`) is preempted only for a
//       `premium` preemptor;
//     - a borrowing victim is preempted by a strictly higher tier (premium > standard > basic)
//       or by any preemptor that is `withinNominal` (reclaiming lent capacity);
//     - nothing else is eligible.
//  2. Preference among eligible victims: `basic` before `standard`; borrowers before
//     non-borrowers; least `workLostMs`; then, towards fewer victims, the job freeing more
//     capacity on these nodes first; then jobId (plain string order) for determinism.
//  3. Victims that have not run their `minRuntimeMs` are left out of the first search; only
//     if no set without them fits is a second search made, with them ranked after every other
//     eligible victim (so as few of them as possible are taken).
//  4. Search: free eligible victims in preference order, on a copy of the nodes, until
//     `choosePlacement` ('best-fit') succeeds; then prune, least preferred first, dropping each
//     victim whose removal still leaves room. Only victims holding something on the given
//     nodes are considered; a victim is always freed whole (a gang is preempted whole; holds on
//     other nodes just do not help here). Because freeing more never makes a fitting request
//     stop fitting, no single victim of the pruned set can be spared.
//  A preemptor that already fits gets `victims: []`.
import type { ResourceRequest, Tier } from '../api/types';
import { describeRequest } from '../api/units';
import { choosePlacement, type CandidateNode, type PolicyContext, type WorkerChoice } from './placement';

export interface RunningJob {
  jobId: string;
  tier: Tier;
  tenant: string;
  /** The tenant uses more than its nominal quota of this job's type (it is borrowing). */
  borrowing: boolean;
  /** Milliseconds of work lost if stopped now (time since its last checkpoint, or since start). */
  workLostMs: number;
  /** How long it has run in this placement, and the minimum it must run before being preempted. */
  ranMs: number;
  minRuntimeMs: number;
  /** Jobs that preempted this one before; it may not preempt them back. */
  preemptedBy: string[];
  /** What it holds: per node id, per device index, milli held (and the host CPU and memory on that row). */
  holds: Array<{ nodeId: number; deviceIdx: number; milli: number; cpuMilli?: number; memoryMib?: number }>;
}

export interface Preemptor {
  jobId: string;
  tier: Tier;
  tenant: string;
  request: ResourceRequest;
  /** Placing it keeps its tenant within nominal quota (so it may reclaim lent capacity from borrowers). */
  withinNominal: boolean;
  /** Jobs this preemptor was itself preempted for (it may not preempt them back). */
  preemptedBy: string[];
}

export type VictimDecision =
  | {
      ok: true;
      victims: string[];
      /** The placement the preemptor will get once the victims are gone. */
      workers: WorkerChoice[];
      reason: string;
    }
  | { ok: false; reason: string };

const WHOLE = 1000;
const TIER_RANK: Record<Tier, number> = { premium: 2, standard: 1, basic: 0 };
// best-fit never draws on the rng; a fixed one keeps the decision reproducible regardless.
const CTX: Partial<PolicyContext> = { rng: () => 0 };

export function mayPreempt(p: Preemptor, v: RunningJob): { ok: true } | { ok: false; reason: string } {
  if (v.jobId === p.jobId) return { ok: false, reason: `${p.jobId} cannot preempt itself` };
  if (p.preemptedBy.includes(v.jobId)) {
    return { ok: false, reason: `${p.jobId} was preempted for ${v.jobId} and may not preempt it back` };
  }
  if (v.tier === 'premium') return { ok: false, reason: `premium job ${v.jobId} is never preempted` };
  if (!v.borrowing) {
    return p.tier === 'premium'
      ? { ok: true }
      : { ok: false, reason: `${v.jobId} is within its nominal quota; only premium work preempts it` };
  }
  if (TIER_RANK[p.tier] > TIER_RANK[v.tier]) return { ok: true };
  if (p.withinNominal) return { ok: true };
  return {
    ok: false,
    reason: `${v.jobId} (${v.tier}) is borrowing, but ${p.jobId} (${p.tier}) is neither of a higher tier nor within its nominal quota`,
  };
}

/** Milli a job holds on the given nodes: what stopping it frees for the preemptor. */
function heldOn(v: RunningJob, nodeIds: ReadonlySet<number>): number {
  let sum = 0;
  for (const h of v.holds) if (nodeIds.has(h.nodeId) && h.milli > 0) sum += h.milli;
  return sum;
}

function compareVictims(a: RunningJob, b: RunningJob, held: ReadonlyMap<string, number>): number {
  return (
    TIER_RANK[a.tier] - TIER_RANK[b.tier] ||
    Number(b.borrowing) - Number(a.borrowing) ||
    a.workLostMs - b.workLostMs ||
    (held.get(b.jobId) ?? 0) - (held.get(a.jobId) ?? 0) ||
    (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0)
  );
}

/** The nodes as they would be with `victims` stopped; the input is not modified. */
function freed(nodes: readonly CandidateNode[], victims: readonly RunningJob[]): CandidateNode[] {
  const copy = nodes.map((n) => ({ ...n, freeMilli: [...n.freeMilli] }));
  const byId = new Map(copy.map((n) => [n.id, n]));
  for (const v of victims) {
    for (const h of v.holds) {
      const node = byId.get(h.nodeId);
      if (!node || h.milli <= 0 || h.deviceIdx < 0 || h.deviceIdx >= node.freeMilli.length) continue;
      node.freeMilli[h.deviceIdx] = Math.min(WHOLE, node.freeMilli[h.deviceIdx] + h.milli);
      if (node.freeCpuMilli !== undefined) node.freeCpuMilli += h.cpuMilli ?? 0;
      if (node.freeMemoryMib !== undefined) node.freeMemoryMib += h.memoryMib ?? 0;
    }
  }
  return copy;
}

function fits(nodes: readonly CandidateNode[], victims: readonly RunningJob[], request: ResourceRequest): WorkerChoice[] | undefined {
  const r = choosePlacement(freed(nodes, victims), request, 'best-fit', CTX);
  return r.ok ? r.workers : undefined;
}

/** Greedy prefix in `order` until the request fits, then pruned least preferred first. */
function search(
  nodes: readonly CandidateNode[],
  order: readonly RunningJob[],
  request: ResourceRequest,
): { victims: RunningJob[]; workers: WorkerChoice[] } | undefined {
  const chosen: RunningJob[] = [];
  let workers: WorkerChoice[] | undefined;
  for (const v of order) {
    chosen.push(v);
    workers = fits(nodes, chosen, request);
    if (workers) break;
  }
  if (!workers) return undefined;
  for (let i = chosen.length - 1; i >= 0; i--) {
    const without = chosen.filter((_, j) => j !== i);
    const still = fits(nodes, without, request);
    if (still) {
      chosen.splice(i, 1);
      workers = still;
    }
  }
  return { victims: chosen, workers };
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** Work lost summed over victims, weighted by the devices each one holds anywhere. */
function deviceMinutesLost(victims: readonly RunningJob[]): number {
  let sum = 0;
  for (const v of victims) {
    const devices = v.holds.reduce((s, h) => s + Math.max(0, h.milli), 0) / WHOLE;
    sum += (devices * v.workLostMs) / 60_000;
  }
  return Number(sum.toFixed(2));
}

function describeVictims(p: Preemptor, victims: readonly RunningJob[]): string {
  const groups = new Map<string, number>();
  for (const v of victims) {
    const key = `${v.tier}${v.borrowing ? ' borrower' : ''}`;
    groups.set(key, (groups.get(key) ?? 0) + 1);
  }
  const parts = [...groups].map(([key, n]) => (key.endsWith('borrower') ? `${n} ${key}${n === 1 ? '' : 's'}` : `${n} ${key}`));
  const early = victims.filter((v) => v.ranMs < v.minRuntimeMs).length;
  if (early) parts.push(`${early} before its minimum runtime`);
  parts.push(`${deviceMinutesLost(victims)} device-minutes of work lost`);
  return `preempting ${plural(victims.length, 'job')} (${victims.map((v) => v.jobId).join(', ')}) for ${p.jobId}: ${parts.join(', ')}`;
}

export function chooseVictims(p: Preemptor, nodes: readonly CandidateNode[], running: readonly RunningJob[]): VictimDecision {
  const already = fits(nodes, [], p.request);
  if (already) return { ok: true, victims: [], workers: already, reason: `${p.jobId} fits without preempting anything` };

  const nodeIds = new Set(nodes.map((n) => n.id));
  const held = new Map<string, number>();
  for (const v of running) held.set(v.jobId, heldOn(v, nodeIds));
  const holding = running.filter((v) => (held.get(v.jobId) ?? 0) > 0);

  const eligible: RunningJob[] = [];
  const refusals: string[] = [];
  for (const v of holding) {
    const may = mayPreempt(p, v);
    if (may.ok) eligible.push(v);
    else refusals.push(may.reason);
  }
  if (eligible.length === 0) {
    const why =
      holding.length === 0
        ? `no running job holds capacity on the ${plural(nodes.length, 'candidate node')}`
        : refusals.slice(0, 3).join(' / ') + (refusals.length > 3 ? ` and ${refusals.length - 3} more` : '');
    return { ok: false, reason: `no eligible victims for ${p.jobId}: ${why}` };
  }

  const ordered = [...eligible].sort((a, b) => compareVictims(a, b, held));
  const settled = ordered.filter((v) => v.ranMs >= v.minRuntimeMs);
  const young = ordered.filter((v) => v.ranMs < v.minRuntimeMs);
  const found = search(nodes, settled, p.request) ?? (young.length > 0 ? search(nodes, [...settled, ...young], p.request) : undefined);
  if (!found) {
    const all = eligible.length === 1 ? 'the only eligible job' : `all ${eligible.length} eligible jobs`;
    return { ok: false, reason: `even preempting ${all} leaves no room for ${describeRequest(p.request)}` };
  }
  return { ok: true, victims: found.victims.map((v) => v.jobId), workers: found.workers, reason: describeVictims(p, found.victims) };
}
