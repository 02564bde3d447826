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

/** Picks one node among those that fit one worker. `rng` only matters for random-fit. */
type NodeScore = (node: CandidateNode, fitted: number[], rng: () => number) => number;

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

const SCORES: Record<PlacementPolicyName, NodeScore> = {
  // Least capacity left after placing: fill nearly full nodes first, keep empty nodes empty.
  'best-fit': (node) => freeTotal(node),
  // Lowest node id that fits.
  'first-fit': (node) => node.id,
  'random-fit': (_node, _fitted, rng) => rng(),
};

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
  score: NodeScore,
  rng: () => number,
): WorkerChoice[] | undefined {
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
      const fitted = fitWorker(current, request);
      if (!fitted) continue;
      const s = score({ ...node, freeMilli: current }, fitted, rng);
      if (s < bestScore || (s === bestScore && bestNode && node.id < bestNode.id)) {
        bestScore = s;
        bestNode = node;
        bestDevices = fitted;
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
  rng: () => number = Math.random,
): PlacementChoice {
  const score = SCORES[policy];
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
    const workers = placeWithin(nodes, request, score, rng);
    if (workers) return { ok: true, workers };
  }
  return { ok: false, reason: describeShortfall(request, candidates.length) };
}

export function describeRequest(request: ResourceRequest): string {
  const each = request.devicesPerWorker > 0 ? `${request.devicesPerWorker}` : `${request.milliPerWorker}m`;
  const where = request.topology === 'any' ? '' : ` in one ${request.topology}`;
  return `${request.workers}×${each} of ${request.acceleratorTypes.join('|')}${where}`;
}

function describeShortfall(request: ResourceRequest, seen: number): string {
  return `no room for ${describeRequest(request)} (${seen} candidate node${seen === 1 ? '' : 's'} checked)`;
}
