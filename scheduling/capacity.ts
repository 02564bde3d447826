// Capacity beyond the owned fleet, as pure decisions: which waiting jobs wait for capacity (not
// quota), how many nodes of an offering a gang needs to land whole, the cheapest offerings that
// hold the waiting shapes within quotas, provider limits and the region's budget, which idle
// nodes to give back, what the providers could still add, and the placement's cost term and spot
// rule. The I/O (providers, the inventory, the queue) is in activities/autoscale.ts.
import type { AutoscalerLimits, DemandLine, Offering, ProviderEventKind } from '../api/autoscaler';
import type { ResourceRequest, Tier } from '../api/types';
import { describeRequest, workerSize } from '../api/units';
import { choosePlacement, type CandidateNode } from './placement';

// --- providers, as the autoscaler sees them -----------------------------------------------------

/** A provisioning request as a provider acknowledges it. */
export interface ProvisionTicket {
  requestId: string;
  provider: string;
  offering: string;
  count: number;
  state: 'provisioning' | 'fulfilled' | 'partial' | 'failed';
  /** Nodes delivered, once settled. */
  granted?: number;
  error?: string;
  /** When the nodes are expected (epoch ms). */
  readyAt: number;
}

/** Something a provider reports: a node ready or lost, a request failed, a spot node about to be reclaimed. */
export interface ProviderEvent {
  id: number;
  provider: string;
  kind: ProviderEventKind;
  requestId?: string;
  node?: string;
  /** For a reclaim notice: when the node goes (epoch ms). */
  reclaimAt?: number;
  detail?: string;
}

/** A node a provider made ready, as it is registered in the inventory. */
export interface ProvidedNode {
  name: string;
  offering: Offering;
  requestId: string;
  /** Index within its request: its rack is `index / nodesPerRack`. */
  index: number;
}

/**
 * A source of capacity: the owned datacenter (fixed) or a cloud. `provision` is idempotent on
 * `requestId` (a repeated call answers the first call's ticket, and a different ask under a used id
 * is refused); `release` is idempotent; `poll` advances the provider's own clock and reports the
 * events not yet acknowledged, in order; `acknowledge` marks them handled.
 */
export interface CapacityProvider {
  readonly name: string;
  readonly kind: 'owned' | 'simulated';
  offerings(): Offering[];
  provision(offering: string, count: number, requestId: string): Promise<ProvisionTicket>;
  release(node: string): Promise<void>;
  poll(region: string): Promise<ProviderEvent[]>;
  /** The node of a `node-ready` event, for the inventory. */
  node(name: string): Promise<ProvidedNode | undefined>;
}

// --- demand -------------------------------------------------------------------------------------

/**
 * The accelerator types a waiting job is short of capacity on, read from its waiting reason (as
 * the allocator writes it: `A100: no room for …; H100: over quota: …`, or `held for
 * higher-ranked job …`). Types refused for quota or kept by a reservation are not capacity
 * demand: more nodes would not place the job. A job held for a higher-ranked one waits for
 * capacity on all its types. Empty: not waiting for capacity.
 */
export function capacityBlockedTypes(reason: string | null, types: readonly string[]): string[] {
  if (!reason) return [];
  if (reason.startsWith('held for higher-ranked job')) return [...types];
  const blocked = new Set<string>();
  for (const part of reason.split('; ')) {
    const colon = part.indexOf(': ');
    if (colon < 0) continue;
    const type = part.slice(0, colon);
    if (types.includes(type) && part.slice(colon + 2).startsWith('no room for')) blocked.add(type);
  }
  return types.filter((t) => blocked.has(t));
}

/** A job waiting for capacity, in queue order. */
export interface WaitingDemand {
  jobId: string;
  tier: Tier;
  request: ResourceRequest;
  /** Its types short of capacity (see capacityBlockedTypes), in its order of preference. */
  types: string[];
}

/** Demand summarised by shape, for the status and the logs. */
export function summarizeDemand(demand: readonly WaitingDemand[]): DemandLine[] {
  const lines = new Map<string, DemandLine>();
  for (const d of demand) {
    const shape = `${describeRequest({ ...d.request, acceleratorTypes: d.types })}${d.tier === 'premium' ? ' (premium)' : ''}`;
    const line = lines.get(shape) ?? { shape, jobs: 0, devices: 0 };
    line.jobs++;
    line.devices += d.request.workers * Math.max(d.request.devicesPerWorker, (d.request.milliPerWorker ?? 0) / 1000);
    lines.set(shape, line);
  }
  return [...lines.values()];
}

// --- offerings and gangs --------------------------------------------------------------------------

/** Premium work never runs on spot capacity (it may be reclaimed at any moment). */
export function tierMayUse(tier: Tier | string, node: { spot?: boolean }): boolean {
  return !(tier === 'premium' && node.spot === true);
}

/** Workers of this request one node of the offering holds (devices, shares, CPU, memory), 0 when none. */
export function workersPerOfferingNode(offering: Offering, request: ResourceRequest): number {
  let n: number;
  if (request.devicesPerWorker > 0) n = Math.floor(offering.devicesPerNode / request.devicesPerWorker);
  else n = offering.devicesPerNode * Math.floor(1000 / Math.max(1, request.milliPerWorker ?? 1000));
  if (request.cpuMilliPerWorker && offering.cpuMilli !== undefined)
    n = Math.min(n, Math.floor(offering.cpuMilli / request.cpuMilliPerWorker));
  if (request.memoryMibPerWorker && offering.memoryMib !== undefined)
    n = Math.min(n, Math.floor(offering.memoryMib / request.memoryMibPerWorker));
  if (request.antiAffinity) n = Math.min(n, 1);
  return Math.max(0, n);
}

/**
 * Nodes of `offering` one gang of `request` needs to land whole, honouring its topology (one node,
 * one rack of `nodesPerRack`, one pod = one request), or the reason it cannot.
 */
export function nodesForGang(offering: Offering, request: ResourceRequest, tier: Tier): { nodes: number } | { reason: string } {
  const what = `${offering.provider}/${offering.name}`;
  if (!request.acceleratorTypes.includes(offering.acceleratorType)) return { reason: `${what} offers ${offering.acceleratorType}` };
  if (!tierMayUse(tier, offering)) return { reason: `${what} is spot, and premium work never runs on spot` };
  if (request.nodeLabels && Object.keys(request.nodeLabels).length) return { reason: `${what} nodes carry no labels` };
  const perNode = workersPerOfferingNode(offering, request);
  if (perNode === 0)
    return {
      reason: `${what} (${offering.devicesPerNode}×${offering.acceleratorType}${offering.cpuMilli ? `, ${offering.cpuMilli}m CPU` : ''}${offering.memoryMib ? `, ${offering.memoryMib} MiB` : ''}) cannot hold one worker of ${workerSize(request)}`,
    };
  const nodes = Math.ceil(request.workers / perNode);
  if (request.topology === 'node' && nodes > 1)
    return { reason: `${what} holds ${perNode} of the ${request.workers} workers that must share one node` };
  if (request.topology === 'rack' && nodes > offering.nodesPerRack)
    return { reason: `${what} needs ${nodes} nodes in one rack but its racks hold ${offering.nodesPerRack}` };
  return { nodes };
}

/** Price per hour of `count` nodes of the offering. */
export function offeringCost(offering: Offering, count: number): number {
  return offering.pricePerDeviceHour * offering.devicesPerNode * count;
}

// --- the scale-up plan ---------------------------------------------------------------------------

/** Capacity already there or on its way that the plan fills first. */
export interface ExistingCapacity {
  /** Free room of ready nodes of the demanded types. */
  free: Array<CandidateNode & { type: string; spot: boolean }>;
  /** Requests being provisioned: their nodes are counted as if empty. */
  inFlight: Array<{ requestId: string; offering: Offering; count: number }>;
}

export interface ScaleUpInput {
  demand: readonly WaitingDemand[];
  offerings: readonly Offering[];
  existing: ExistingCapacity;
  limits: Pick<AutoscalerLimits, 'budgetPerHour' | 'providers' | 'maxNodesPerDecision'>;
  /** Nodes per offering (`provider/offering`) running or being provisioned now. */
  offeringNodes: ReadonlyMap<string, number>;
  /** Nodes per provider running or being provisioned now. */
  providerNodes: ReadonlyMap<string, number>;
  /** Spend per hour on provider capacity now (running and being provisioned). */
  costPerHour: number;
}

/** One request to make: `count` nodes of `offering`, sized for these jobs. */
export interface PlannedRequest {
  offering: Offering;
  count: number;
  costPerHour: number;
  forJobs: string[];
}

export interface ScaleUpPlan {
  requests: PlannedRequest[];
  /** Jobs that need no nodes of their own: free room, requests in flight or nodes planned for earlier gangs hold them. */
  covered: string[];
  /** Why a job's demand is not served, one line each. */
  unmet: string[];
}

interface Bin extends CandidateNode {
  type: string;
  spot: boolean;
}

const keyOf = (o: Offering): string => `${o.provider}/${o.name}`;

/**
 * The cheapest set of requests that holds every waiting gang whole, in queue order (premium
 * first). Each gang first goes where existing free room or nodes on their way can hold it; else
 * onto new nodes of the offering that costs least per hour for the nodes that gang needs (ties:
 * the faster to provision, then by name), among those whose quota, provider limit, the budget and
 * the per-decision cap still allow it. Gangs that need one node or any nodes share a request's
 * nodes with later gangs; a gang that must share a rack gets a request of its own, so its nodes
 * come in one rack.
 */
export function planScaleUp(input: ScaleUpInput): ScaleUpPlan {
  const { limits } = input;
  const bins: Bin[] = [];
  let nextId = -1;
  const addBin = (type: string, spot: boolean, freeMilli: number[], pod: string, rack: string, host: Partial<CandidateNode> = {}) => {
    const bin: Bin = { id: nextId--, name: `planned${-nextId}`, pod, rack, type, spot, freeMilli, ...host };
    bins.push(bin);
    return bin;
  };
  const emptyNode = (o: Offering) => ({
    freeMilli: Array.from({ length: o.devicesPerNode }, () => 1000),
    ...(o.cpuMilli !== undefined ? { freeCpuMilli: o.cpuMilli } : {}),
    ...(o.memoryMib !== undefined ? { freeMemoryMib: o.memoryMib } : {}),
  });
  for (const f of input.existing.free) bins.push({ ...f, freeMilli: [...f.freeMilli] });
  for (const r of input.existing.inFlight)
    for (let i = 0; i < r.count; i++) {
      const e = emptyNode(r.offering);
      addBin(
        r.offering.acceleratorType,
        r.offering.spot,
        e.freeMilli,
        `req:${r.requestId}`,
        `req:${r.requestId}/r${Math.floor(i / r.offering.nodesPerRack)}`,
        e,
      );
    }

  const offeringUsed = new Map(input.offeringNodes);
  const providerUsed = new Map(input.providerNodes);
  let cost = input.costPerHour;
  let nodesThisDecision = 0;
  // Open groups (future requests) per offering that later gangs may add nodes to.
  interface Group {
    offering: Offering;
    count: number;
    forJobs: string[];
    extendable: boolean;
    id: string;
  }
  const groups: Group[] = [];

  const tryPlace = (d: WaitingDemand, within: Bin[]): boolean =>
    // Room that exists now, as asked; nodes not here yet, counting a share as a whole device: the
    // allocator's own choices on them may scatter shares, and a job that finds no room on the
    // nodes sized for it waits a whole provisioning time again.
    placeIn(
      d,
      d.request,
      within.filter((b) => b.id >= 0),
    ) ||
    placeIn(
      d,
      d.request.devicesPerWorker > 0 ? d.request : { ...d.request, devicesPerWorker: 1, milliPerWorker: undefined },
      within.filter((b) => b.id < 0),
    );

  const placeIn = (d: WaitingDemand, request: ResourceRequest, within: Bin[]): boolean => {
    const usable = within.filter((b) => d.types.includes(b.type) && tierMayUse(d.tier, b));
    for (const type of d.types) {
      const ofType = usable.filter((b) => b.type === type);
      if (!ofType.length) continue;
      const choice = choosePlacement(ofType, { ...request, acceleratorTypes: [type] }, 'best-fit', { rng: () => 0 });
      if (!choice.ok) continue;
      for (const w of choice.workers) {
        const bin = ofType.find((b) => b.id === w.nodeId)!;
        for (const i of w.deviceIdx) bin.freeMilli[i] -= w.milli;
        if (bin.freeCpuMilli !== undefined) bin.freeCpuMilli -= request.cpuMilliPerWorker ?? 0;
        if (bin.freeMemoryMib !== undefined) bin.freeMemoryMib -= request.memoryMibPerWorker ?? 0;
      }
      return true;
    }
    return false;
  };

  const plan: ScaleUpPlan = { requests: [], covered: [], unmet: [] };
  const ordered = [...input.demand].sort((a, b) => Number(b.tier === 'premium') - Number(a.tier === 'premium'));
  for (const d of ordered) {
    if (tryPlace(d, bins)) {
      if (!groups.some((g) => g.forJobs.includes(d.jobId))) plan.covered.push(d.jobId);
      continue;
    }
    // New nodes: the cheapest offering that holds this gang whole and that the limits allow.
    const why: string[] = [];
    let best: { offering: Offering; nodes: number; cost: number } | undefined;
    for (const o of input.offerings) {
      if (!d.types.includes(o.acceleratorType)) continue;
      const need = nodesForGang(o, { ...d.request, acceleratorTypes: [o.acceleratorType] }, d.tier);
      if ('reason' in need) {
        why.push(need.reason);
        continue;
      }
      const k = keyOf(o);
      const quotaLeft = o.quota - (offeringUsed.get(k) ?? 0);
      if (need.nodes > quotaLeft) {
        why.push(`${k}: quota of ${o.quota} nodes leaves ${Math.max(0, quotaLeft)}, the gang needs ${need.nodes}`);
        continue;
      }
      const cap = limits.providers[o.provider]?.maxNodes;
      if (cap !== undefined && (providerUsed.get(o.provider) ?? 0) + need.nodes > cap) {
        why.push(`${o.provider}: at its limit of ${cap} nodes (${providerUsed.get(o.provider) ?? 0} held)`);
        continue;
      }
      const c = offeringCost(o, need.nodes);
      if (cost + c > limits.budgetPerHour + 1e-9) {
        why.push(
          `${k}: ${need.nodes} node(s) cost ${round(c)}/h, ${round(Math.max(0, limits.budgetPerHour - cost))}/h of the ${round(limits.budgetPerHour)}/h budget left`,
        );
        continue;
      }
      if (nodesThisDecision + need.nodes > limits.maxNodesPerDecision) {
        why.push(`${k}: ${need.nodes} more node(s) exceed ${limits.maxNodesPerDecision} per decision`);
        continue;
      }
      const better =
        !best ||
        c < best.cost - 1e-9 ||
        (Math.abs(c - best.cost) <= 1e-9 &&
          (o.provisioningMs < best.offering.provisioningMs ||
            (o.provisioningMs === best.offering.provisioningMs && k < keyOf(best.offering))));
      if (better) best = { offering: o, nodes: need.nodes, cost: c };
    }
    if (!best) {
      plan.unmet.push(
        `${d.jobId} (${describeRequest({ ...d.request, acceleratorTypes: d.types })}): ${why.length ? why.join('; ') : `no offering of ${d.types.join('|')} in this region`}`,
      );
      continue;
    }
    const o = best.offering;
    const k = keyOf(o);
    const ownGroup = d.request.topology === 'rack';
    let group = ownGroup ? undefined : groups.find((g) => g.extendable && keyOf(g.offering) === k);
    if (!group) {
      group = { offering: o, count: 0, forJobs: [], extendable: !ownGroup, id: `g${groups.length}` };
      groups.push(group);
    }
    const fresh: Bin[] = [];
    for (let i = 0; i < best.nodes; i++) {
      const e = emptyNode(o);
      const idx = group.count + i;
      fresh.push(addBin(o.acceleratorType, o.spot, e.freeMilli, group.id, `${group.id}/r${Math.floor(idx / o.nodesPerRack)}`, e));
    }
    group.count += best.nodes;
    group.forJobs.push(d.jobId);
    offeringUsed.set(k, (offeringUsed.get(k) ?? 0) + best.nodes);
    providerUsed.set(o.provider, (providerUsed.get(o.provider) ?? 0) + best.nodes);
    cost += best.cost;
    nodesThisDecision += best.nodes;
    // The gang goes onto the new nodes (they hold it by construction); later gangs share their room.
    tryPlace(d, fresh);
  }
  plan.requests = groups.map((g) => ({
    offering: g.offering,
    count: g.count,
    costPerHour: offeringCost(g.offering, g.count),
    forJobs: g.forJobs,
  }));
  return plan;
}

const round = (x: number): number => Math.round(x * 100) / 100;

// --- scale-in ---------------------------------------------------------------------------------------

/** A provider node as scale-in sees it. */
export interface ScaleInCandidate {
  name: string;
  provider: string;
  state: string;
  /** Allocation rows on it now. */
  allocations: number;
  /** Premium jobs on it now. */
  premiumJobs: number;
  /** Since when it has held nothing (epoch ms); undefined: it holds something. */
  idleSince?: number;
}

/**
 * Nodes to give back: provider nodes (never owned ones) that are ready (or cordoned: a release cut
 * short), hold nothing and have held nothing for `idleLimitMs`. A node holding premium work is never chosen, whatever else is true.
 */
export function chooseScaleIn(nodes: readonly ScaleInCandidate[], now: number, idleLimitMs: number, owned: ReadonlySet<string>): string[] {
  return nodes
    .filter(
      (n) =>
        !owned.has(n.provider) &&
        (n.state === 'ready' || n.state === 'cordoned') &&
        n.premiumJobs === 0 &&
        n.allocations === 0 &&
        n.idleSince !== undefined &&
        now - n.idleSince >= idleLimitMs,
    )
    .map((n) => n.name)
    .sort();
}

/** When the next provider node that holds nothing reaches the idle limit (epoch ms), so a release is not a period late; undefined: none. */
export function nextIdleDeadline(
  nodes: readonly ScaleInCandidate[],
  now: number,
  idleLimitMs: number,
  owned: ReadonlySet<string>,
): number | undefined {
  let next: number | undefined;
  for (const n of nodes)
    if (!owned.has(n.provider) && n.allocations === 0 && n.idleSince !== undefined && (n.state === 'ready' || n.state === 'cordoned')) {
      const due = n.idleSince + idleLimitMs;
      if (due > now && (next === undefined || due < next)) next = due;
    }
  return next;
}

// --- what scaling could add -----------------------------------------------------------------------

/**
 * Devices per accelerator type the providers could still add within quotas, provider limits and
 * the budget: each type on its own (the budget is not split between types), cheapest offering first.
 */
export function scalableDevices(
  offerings: readonly Offering[],
  limits: Pick<AutoscalerLimits, 'budgetPerHour' | 'providers'>,
  offeringNodes: ReadonlyMap<string, number>,
  providerNodes: ReadonlyMap<string, number>,
  costPerHour: number,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const type of new Set(offerings.map((o) => o.acceleratorType))) {
    let budget = Math.max(0, limits.budgetPerHour - costPerHour);
    const providerLeft = new Map<string, number>();
    let devices = 0;
    for (const o of offerings.filter((x) => x.acceleratorType === type).sort((a, b) => a.pricePerDeviceHour - b.pricePerDeviceHour)) {
      const cap = limits.providers[o.provider]?.maxNodes;
      const left = providerLeft.get(o.provider) ?? (cap === undefined ? Infinity : Math.max(0, cap - (providerNodes.get(o.provider) ?? 0)));
      const perNode = offeringCost(o, 1);
      const byBudget = perNode > 0 ? Math.floor((budget + 1e-9) / perNode) : Infinity;
      const n = Math.max(0, Math.min(o.quota - (offeringNodes.get(keyOf(o)) ?? 0), left, byBudget));
      devices += n * o.devicesPerNode;
      budget -= n * perNode;
      providerLeft.set(o.provider, left - n);
    }
    out.set(type, devices);
  }
  return out;
}

// --- placement: the cost objective --------------------------------------------------------------

/**
 * How placement weighs a node's price: `cost` (the default) places on the cheapest capacity that
 * fits, owned (price 0) first, the policy's own score deciding among equally priced nodes;
 * `packing` ignores price. With no provider data every node costs 0 and both place alike.
 */
export const PLACEMENT_OBJECTIVES = ['cost', 'packing'] as const;
export type PlacementObjective = (typeof PLACEMENT_OBJECTIVES)[number];

/** Far above any policy score (FGD's are below 1e9), so price decides first and the policy breaks ties. */
const COST_SCALE = 1e12;

/** The cost term added to a policy's score for one worker taking `devices` devices of `node` (lower is better). */
export function costScore(node: { pricePerDeviceHour?: number }, devices: number, objective: PlacementObjective | undefined): number {
  if (objective === 'packing' || !node.pricePerDeviceHour) return 0;
  return node.pricePerDeviceHour * devices * COST_SCALE;
}

// --- seeded randomness for the simulated cloud ---------------------------------------------------

/** A repeatable stream of numbers in [0, 1) from a seed and a key (e.g. a request id): mulberry32 over an FNV-1a hash. */
export function seededRandom(seed: number, key: string): () => number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193) >>> 0;
  let a = h >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
