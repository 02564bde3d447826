// Pure placement: given candidate nodes (their free share per device, and the host CPU and memory
// they have left) and a request, choose which devices each worker gets. The SQL only finds
// candidates; the policy decides.
import type { PlacementPolicyName, ResourceRequest, Topology } from '../api/types';
import { describeRequest } from '../api/units';
import { costScore, type PlacementObjective } from './capacity';
import { STRANDING_WEIGHT, strandingGrowth } from './placement-host';

/** What a node has free: each device's share, and host CPU and memory when the node tracks them. */
export interface NodeFree {
  /** Free share of each device in milli-devices. */
  freeMilli: number[];
  /** Free host CPU in milli-cores; undefined: not tracked, room for any CPU. */
  freeCpuMilli?: number;
  /** Free host memory in MiB; undefined: not tracked, room for any memory. */
  freeMemoryMib?: number;
}

export interface CandidateNode extends NodeFree {
  id: number;
  name: string;
  pod: string;
  rack: string;
  /** Its provider's price per device-hour (absent or 0: owned, free). */
  pricePerDeviceHour?: number;
  /** Spot capacity (premium work is kept off it by the allocator). */
  spot?: boolean;
}

/** What one worker takes on its node: devices (whole or a share of one) and host CPU and memory. */
export type WorkerShape = Pick<ResourceRequest, 'devicesPerWorker' | 'milliPerWorker' | 'cpuMilliPerWorker' | 'memoryMibPerWorker'>;

export interface WorkerChoice {
  workerIdx: number;
  nodeId: number;
  deviceIdx: number[];
  milli: number;
}

export type PlacementChoice = { ok: true; workers: WorkerChoice[] } | { ok: false; reason: string };

/** One request shape in the recent mix (a task class), with its share of the mix. */
export interface MixShape extends WorkerShape {
  weight: number;
}

export interface PolicyContext {
  rng: () => number;
  /** Recent request shapes (weights sum to 1); used by the fragmentation-aware policy. */
  mix: MixShape[];
  /** How price weighs in (scheduling/capacity.ts); absent: `cost`, which is no change while every node costs 0. */
  objective?: PlacementObjective;
}

/** Scores placing one worker of `shape` on `node` using `fitted` devices (lower is better). */
type NodeScore = (node: CandidateNode, fitted: number[], shape: WorkerShape, ctx: PolicyContext) => number;

const WHOLE = 1000;

/** The node has the host CPU and memory one worker of `shape` needs (untracked amounts always do). */
export function hostFits(node: NodeFree, shape: WorkerShape): boolean {
  return (
    (node.freeCpuMilli === undefined || node.freeCpuMilli >= (shape.cpuMilliPerWorker ?? 0)) &&
    (node.freeMemoryMib === undefined || node.freeMemoryMib >= (shape.memoryMibPerWorker ?? 0))
  );
}

/** Devices a worker would take on this node as it is now, or undefined if it does not fit (devices, CPU or memory). */
export function fitWorker(node: NodeFree, request: WorkerShape): number[] | undefined {
  if (!hostFits(node, request)) return undefined;
  const free = node.freeMilli;
  if (request.devicesPerWorker > 0) {
    const whole: number[] = [];
    for (let i = 0; i < free.length && whole.length < request.devicesPerWorker; i++) if (free[i] === WHOLE) whole.push(i);
    return whole.length === request.devicesPerWorker ? whole : undefined;
  }
  const need = request.milliPerWorker ?? WHOLE;
  // Best-fit on the device: the partly used device with the least room that still fits,
  // so whole devices stay whole for whole-device work.
  let best = -1;
  for (let i = 0; i < free.length; i++) {
    if (free[i] >= need && (best < 0 || free[i] < free[best])) best = i;
  }
  return best < 0 ? undefined : [best];
}

function freeTotal(node: NodeFree): number {
  return node.freeMilli.reduce((a, b) => a + b, 0);
}

/**
 * Free device capacity on a node that a task of `shape` could not use: all of it when the task
 * does not fit the node at all (too few free devices, or not enough host CPU or memory left);
 * otherwise the devices too small for the task's per-device need. (The node-level fragmentation
 * measure of Weng et al., ATC '23.)
 */
export function fragmentFor(node: NodeFree, shape: WorkerShape): number {
  const free = node.freeMilli;
  const total = free.reduce((a, b) => a + b, 0);
  if (!hostFits(node, shape)) return total;
  if (shape.devicesPerWorker > 0) {
    const whole = free.filter((f) => f === WHOLE).length;
    return whole >= shape.devicesPerWorker ? total - whole * WHOLE : total;
  }
  const need = shape.milliPerWorker ?? WHOLE;
  let unusable = 0;
  let fits = false;
  for (const f of free) {
    if (f >= need) fits = true;
    else unusable += f;
  }
  return fits ? unusable : total;
}

/** Expected fragmentation of a node under the mix of requests. */
export function fragmentation(node: NodeFree, mix: MixShape[]): number {
  let sum = 0;
  for (const m of mix) sum += m.weight * fragmentFor(node, m);
  return sum;
}

/** The node as it would be with one worker of `shape` placed on `fitted` devices. */
function after(node: NodeFree, fitted: number[], shape: WorkerShape): NodeFree {
  const milli = shape.devicesPerWorker > 0 ? WHOLE : (shape.milliPerWorker ?? WHOLE);
  const freeMilli = [...node.freeMilli];
  for (const d of fitted) freeMilli[d] -= milli;
  return {
    freeMilli,
    freeCpuMilli: node.freeCpuMilli === undefined ? undefined : node.freeCpuMilli - (shape.cpuMilliPerWorker ?? 0),
    freeMemoryMib: node.freeMemoryMib === undefined ? undefined : node.freeMemoryMib - (shape.memoryMibPerWorker ?? 0),
  };
}

// Every policy scores only nodes the worker fits on, devices and host CPU and memory alike.
const SCORES: Record<PlacementPolicyName, NodeScore> = {
  // Least free device capacity left (GPU best-fit): fill nearly full nodes first, keep empty
  // nodes empty. It scores devices only; host CPU and memory decide fit, not rank.
  'best-fit': (node) => freeTotal(node),
  // Lowest node id that fits.
  'first-fit': (node) => node.id,
  'random-fit': (_node, _fitted, _shape, ctx) => ctx.rng(),
  // Fragmentation gradient descent: the placement that grows expected fragmentation least,
  // where a task class short of host CPU or memory on a node finds all its free devices
  // fragmented. Equal gradients are broken at random, as the kube-scheduler running FGD in Weng
  // et al. picks among equal scores: sending ties to the fuller node made FGD lean to best-fit
  // and fill the CPU-rich nodes' devices with CPU-light work.
  fgd: (node, fitted, shape, ctx) => {
    const delta = fragmentation(after(node, fitted, shape), ctx.mix) - fragmentation(node, ctx.mix);
    return delta * 1e4 + ctx.rng();
  },
  // FGD plus the GPUs a placement strands behind the node's host CPU and memory at the mix's
  // appetite for them (scheduling/placement-host.ts): CPU-heavy work goes where cores are plenty.
  'fgd-host': (node, fitted, shape, ctx) => {
    const next = after(node, fitted, shape);
    const delta = fragmentation(next, ctx.mix) - fragmentation(node, ctx.mix) + STRANDING_WEIGHT * strandingGrowth(node, next, ctx.mix);
    return delta * 1e4 + ctx.rng();
  },
};

/** Device choices to consider on one node: FGD weighs every device a share fits on. */
function fitOptions(node: NodeFree, request: ResourceRequest, policy: PlacementPolicyName): number[][] {
  if ((policy === 'fgd' || policy === 'fgd-host') && request.devicesPerWorker === 0) {
    if (!hostFits(node, request)) return [];
    const free = node.freeMilli;
    const need = request.milliPerWorker ?? WHOLE;
    const seen = new Set<number>();
    const options: number[][] = [];
    free.forEach((f, i) => {
      if (f >= need && !seen.has(f)) {
        seen.add(f);
        options.push([i]);
      }
    });
    return options;
  }
  const one = fitWorker(node, request);
  return one ? [one] : [];
}

function domainOf(node: CandidateNode, topology: Topology): string {
  switch (topology) {
    case 'node':
      return `node:${node.id}`;
    case 'rack':
      return `rack:${node.rack}`;
    case 'pod':
      return `pod:${node.pod}`;
    case 'any':
      return 'any';
  }
}

/** Places all workers inside the candidate set, or none, with the placement's score (lower is better). Candidates are not modified. */
function placeWithin(
  nodes: CandidateNode[],
  request: ResourceRequest,
  policy: PlacementPolicyName,
  ctx: PolicyContext,
): { workers: WorkerChoice[]; score: number } | undefined {
  const score = SCORES[policy];
  // Working copies: what earlier workers of this gang took is gone for later ones.
  const current = new Map(nodes.map((n) => [n.id, { ...n, freeMilli: [...n.freeMilli] }]));
  const used = new Set<number>();
  const milli = request.devicesPerWorker > 0 ? WHOLE : (request.milliPerWorker ?? WHOLE);
  const workers: WorkerChoice[] = [];
  let total = 0;
  for (let w = 0; w < request.workers; w++) {
    let bestNode: CandidateNode | undefined;
    let bestDevices: number[] | undefined;
    let bestScore = Infinity;
    for (const node of current.values()) {
      if (request.antiAffinity && used.has(node.id)) continue;
      for (const fitted of fitOptions(node, request, policy)) {
        const s = score(node, fitted, request, ctx) + costScore(node, fitted.length, ctx.objective);
        if (s < bestScore || (s === bestScore && bestNode && node.id < bestNode.id)) {
          bestScore = s;
          bestNode = node;
          bestDevices = fitted;
        }
      }
    }
    if (!bestNode || !bestDevices) return undefined;
    const taken = after(bestNode, bestDevices, request);
    Object.assign(bestNode, taken);
    used.add(bestNode.id);
    total += bestScore;
    workers.push({ workerIdx: w, nodeId: bestNode.id, deviceIdx: bestDevices, milli });
  }
  return { workers, score: total };
}

function fullContext(request: ResourceRequest, ctx: Partial<PolicyContext>): PolicyContext {
  return { rng: ctx.rng ?? Math.random, mix: ctx.mix?.length ? ctx.mix : [shapeOf(request, 1)], objective: ctx.objective };
}

/** The placement `policy` picks in `candidates` (one accelerator type), with its score; undefined when the request does not fit. */
function scoredPlacement(
  candidates: CandidateNode[],
  request: ResourceRequest,
  policy: PlacementPolicyName,
  ctx: PolicyContext,
): { workers: WorkerChoice[]; score: number } | undefined {
  const domains = new Map<string, CandidateNode[]>();
  for (const node of candidates) {
    const key = domainOf(node, request.topology);
    const list = domains.get(key);
    if (list) list.push(node);
    else domains.set(key, [node]);
  }
  // Cheapest domain first (all 0 without provider data), then tightest.
  const price = (d: CandidateNode[]) => Math.min(...d.map((n) => costScore(n, 1, ctx.objective)));
  const ordered = [...domains.values()].sort(
    (a, b) => price(a) - price(b) || a.reduce((s, n) => s + freeTotal(n), 0) - b.reduce((s, n) => s + freeTotal(n), 0),
  );
  for (const nodes of ordered) {
    const placed = placeWithin(nodes, request, policy, ctx);
    if (placed) return placed;
  }
  return undefined;
}

/**
 * Chooses devices for every worker of `request` among `candidates`, all or nothing. With a
 * topology other than `any`, every worker lands in one domain; domains are tried tightest first
 * (least free capacity), so gangs pack into the fullest rack or pod that holds them.
 */
export function choosePlacement(
  candidates: CandidateNode[],
  request: ResourceRequest,
  policy: PlacementPolicyName,
  ctx: Partial<PolicyContext> = {},
): PlacementChoice {
  const placed = scoredPlacement(candidates, request, policy, fullContext(request, ctx));
  return placed ? { ok: true, workers: placed.workers } : { ok: false, reason: describeShortfall(request, candidates.length) };
}

/** The candidate nodes read for one accelerator type. */
export interface TypeCandidates {
  type: string;
  candidates: CandidateNode[];
}

export type TypeChoice =
  { ok: true; type: string; workers: WorkerChoice[] } | { ok: false; reasons: Array<{ type: string; reason: string }> };

/**
 * Chooses the accelerator type and devices for `request` among candidates of several types, given
 * in the request's order; all workers land on one type. With `typePreference` `ordered` (the
 * default) the first type with room wins, as a preference list reads; with `none` the types are
 * equally acceptable and the policy's own score decides across them, as it does across nodes of
 * one type (ties go to the earlier type).
 */
export function chooseAmongTypes(
  groups: TypeCandidates[],
  request: ResourceRequest,
  policy: PlacementPolicyName,
  ctx: Partial<PolicyContext> = {},
): TypeChoice {
  const full = fullContext(request, ctx);
  const reasons: Array<{ type: string; reason: string }> = [];
  let best: { type: string; workers: WorkerChoice[]; score: number } | undefined;
  for (const { type, candidates } of groups) {
    const placed = scoredPlacement(candidates, request, policy, full);
    if (!placed) {
      reasons.push({ type, reason: describeShortfall(request, candidates.length) });
      continue;
    }
    if ((request.typePreference ?? 'ordered') === 'ordered') return { ok: true, type, workers: placed.workers };
    if (!best || placed.score < best.score) best = { type, ...placed };
  }
  return best ? { ok: true, type: best.type, workers: best.workers } : { ok: false, reasons };
}

/** The task class of a request (host CPU and memory only when it asks for them), with a weight. */
export function shapeOf(request: WorkerShape, weight: number): MixShape {
  const shape: MixShape =
    request.devicesPerWorker > 0
      ? { devicesPerWorker: request.devicesPerWorker, weight }
      : { devicesPerWorker: 0, milliPerWorker: request.milliPerWorker, weight };
  if (request.cpuMilliPerWorker) shape.cpuMilliPerWorker = request.cpuMilliPerWorker;
  if (request.memoryMibPerWorker) shape.memoryMibPerWorker = request.memoryMibPerWorker;
  return shape;
}

/** A rolling window of recent request shapes, as the fragmentation-aware policy's workload estimate. */
export class RecentMix {
  private readonly keys: string[] = [];
  private readonly counts = new Map<string, { shape: WorkerShape; n: number }>();
  private cached: MixShape[] | undefined;
  constructor(private readonly window = 2000) {}

  add(request: WorkerShape): void {
    const shape = shapeOf(request, 0);
    const key = `${shape.devicesPerWorker}/${shape.milliPerWorker ?? ''}/${shape.cpuMilliPerWorker ?? 0}/${shape.memoryMibPerWorker ?? 0}`;
    this.keys.push(key);
    const entry = this.counts.get(key);
    if (entry) entry.n++;
    else this.counts.set(key, { shape, n: 1 });
    if (this.keys.length > this.window) {
      const old = this.keys.shift()!;
      const e = this.counts.get(old)!;
      if (--e.n === 0) this.counts.delete(old);
    }
    this.cached = undefined;
  }

  shapes(): MixShape[] {
    if (!this.cached) {
      const total = this.keys.length;
      this.cached = [...this.counts.values()].map(({ shape, n }) => shapeOf(shape, n / total));
    }
    return this.cached;
  }
}

function describeShortfall(request: ResourceRequest, seen: number): string {
  return `no room for ${describeRequest(request)} (${seen} candidate node${seen === 1 ? '' : 's'} checked)`;
}
