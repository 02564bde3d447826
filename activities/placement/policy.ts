// Pure placement: given candidate nodes (their free share per device) and a request, choose
// which devices each worker gets. The SQL only finds candidates; the policy decides.
import type { PlacementPolicyName, ResourceRequest, Topology } from '../../api/types';

export interface CandidateNode {
  id: number;
  name: string;
  pod: string;
  rack: string;
  /** Free share of each device in milli-devices. */
  freeMilli: number[];
}

export interface WorkerChoice {
  workerIdx: number;
  nodeId: number;
  deviceIdx: number[];
  milli: number;
}

export type PlacementChoice = { ok: true; workers: WorkerChoice[] } | { ok: false; reason: string };

/** One request shape in the recent mix, with its share of the mix. */
export interface MixShape {
  devicesPerWorker: number;
  milliPerWorker?: number;
  weight: number;
}

export interface PolicyContext {
  rng: () => number;
  /** Recent request shapes (weights sum to 1); used by the fragmentation-aware policy. */
  mix: MixShape[];
}

/** Scores placing one worker on `node` using `fitted` devices (lower is better). */
type NodeScore = (node: CandidateNode, fitted: number[], milli: number, ctx: PolicyContext) => number;

const WHOLE = 1000;

/** Devices a worker would take on this node's current free shares, or undefined if it does not fit. */
export function fitWorker(free: number[], request: Pick<ResourceRequest, 'devicesPerWorker' | 'milliPerWorker'>): number[] | undefined {
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

function freeTotal(node: CandidateNode): number {
  return node.freeMilli.reduce((a, b) => a + b, 0);
}

/**
 * Free capacity on a node that a task of `shape` could not use: all of it when the task does
 * not fit the node at all; otherwise the devices too small for the task's per-device need.
 * (The node-level fragmentation measure of Weng et al., ATC '23.)
 */
export function fragmentFor(free: number[], shape: Pick<MixShape, 'devicesPerWorker' | 'milliPerWorker'>): number {
  const total = free.reduce((a, b) => a + b, 0);
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
export function fragmentation(free: number[], mix: MixShape[]): number {
  let sum = 0;
  for (const m of mix) sum += m.weight * fragmentFor(free, m);
  return sum;
}

const SCORES: Record<PlacementPolicyName, NodeScore> = {
  // Least capacity left after placing: fill nearly full nodes first, keep empty nodes empty.
  'best-fit': (node) => freeTotal(node),
  // Lowest node id that fits.
  'first-fit': (node) => node.id,
  'random-fit': (_node, _fitted, _milli, ctx) => ctx.rng(),
  // Fragmentation gradient descent: the placement that grows expected fragmentation least.
  // Ties go to the fuller node, as best-fit would.
  fgd: (node, fitted, milli, ctx) => {
    const after = [...node.freeMilli];
    for (const d of fitted) after[d] -= milli;
    const delta = fragmentation(after, ctx.mix) - fragmentation(node.freeMilli, ctx.mix);
    return delta * 1e4 + freeTotal(node) / 1e4;
  },
};

/** Device choices to consider on one node: FGD weighs every device a share fits on. */
function fitOptions(free: number[], request: ResourceRequest, policy: PlacementPolicyName): number[][] {
  if (policy === 'fgd' && request.devicesPerWorker === 0) {
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
  const one = fitWorker(free, request);
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

/** Places all workers inside the candidate set, or none. Candidates are not modified. */
function placeWithin(
  nodes: CandidateNode[],
  request: ResourceRequest,
  policy: PlacementPolicyName,
  ctx: PolicyContext,
): WorkerChoice[] | undefined {
  const score = SCORES[policy];
  const free = new Map(nodes.map((n) => [n.id, [...n.freeMilli]]));
  const used = new Set<number>();
  const milli = request.devicesPerWorker > 0 ? WHOLE : request.milliPerWorker ?? WHOLE;
  const workers: WorkerChoice[] = [];
  for (let w = 0; w < request.workers; w++) {
    let bestNode: CandidateNode | undefined;
    let bestDevices: number[] | undefined;
    let bestScore = Infinity;
    for (const node of nodes) {
      if (request.antiAffinity && used.has(node.id)) continue;
      const current = free.get(node.id)!;
      for (const fitted of fitOptions(current, request, policy)) {
        const s = score({ ...node, freeMilli: current }, fitted, milli, ctx);
        if (s < bestScore || (s === bestScore && bestNode && node.id < bestNode.id)) {
          bestScore = s;
          bestNode = node;
          bestDevices = fitted;
        }
      }
    }
    if (!bestNode || !bestDevices) return undefined;
    const current = free.get(bestNode.id)!;
    for (const d of bestDevices) current[d] -= milli;
    used.add(bestNode.id);
    workers.push({ workerIdx: w, nodeId: bestNode.id, deviceIdx: bestDevices, milli });
  }
  return workers;
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
  const full: PolicyContext = { rng: ctx.rng ?? Math.random, mix: ctx.mix?.length ? ctx.mix : [shapeOf(request, 1)] };
  const domains = new Map<string, CandidateNode[]>();
  for (const node of candidates) {
    const key = domainOf(node, request.topology);
    const list = domains.get(key);
    if (list) list.push(node);
    else domains.set(key, [node]);
  }
  const ordered = [...domains.values()].sort(
    (a, b) => a.reduce((s, n) => s + freeTotal(n), 0) - b.reduce((s, n) => s + freeTotal(n), 0),
  );
  for (const nodes of ordered) {
    const workers = placeWithin(nodes, request, policy, full);
    if (workers) return { ok: true, workers };
  }
  return { ok: false, reason: describeShortfall(request, candidates.length) };
}

export function shapeOf(request: Pick<ResourceRequest, 'devicesPerWorker' | 'milliPerWorker'>, weight: number): MixShape {
  return request.devicesPerWorker > 0
    ? { devicesPerWorker: request.devicesPerWorker, weight }
    : { devicesPerWorker: 0, milliPerWorker: request.milliPerWorker, weight };
}

/** A rolling window of recent request shapes, as the fragmentation-aware policy's workload estimate. */
export class RecentMix {
  private readonly keys: string[] = [];
  private readonly counts = new Map<string, number>();
  private cached: MixShape[] | undefined;
  constructor(private readonly window = 2000) {}

  add(request: Pick<ResourceRequest, 'devicesPerWorker' | 'milliPerWorker'>): void {
    const key = request.devicesPerWorker > 0 ? `d${request.devicesPerWorker}` : `m${request.milliPerWorker}`;
    this.keys.push(key);
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    if (this.keys.length > this.window) {
      const old = this.keys.shift()!;
      const n = this.counts.get(old)! - 1;
      if (n) this.counts.set(old, n);
      else this.counts.delete(old);
    }
    this.cached = undefined;
  }

  shapes(): MixShape[] {
    if (!this.cached) {
      const total = this.keys.length;
      this.cached = [...this.counts].map(([k, n]) =>
        k[0] === 'd' ? { devicesPerWorker: Number(k.slice(1)), weight: n / total } : { devicesPerWorker: 0, milliPerWorker: Number(k.slice(1)), weight: n / total },
      );
    }
    return this.cached;
  }
}

export function describeRequest(request: ResourceRequest): string {
  const each = request.devicesPerWorker > 0 ? `${request.devicesPerWorker}` : `${request.milliPerWorker}m`;
  const where = request.topology === 'any' ? '' : ` in one ${request.topology}`;
  return `${request.workers}×${each} of ${request.acceleratorTypes.join('|')}${where}`;
}

function describeShortfall(request: ResourceRequest, seen: number): string {
  return `no room for ${describeRequest(request)} (${seen} candidate node${seen === 1 ? '' : 's'} checked)`;
}
