// Handoff decisions, pure: when a waiting job should look abroad, and which peer should take it,
// from the inventory summaries peers sent. A summary older than its TTL counts as absent, so a
// region that died stops receiving work within the TTL.
import type { JobSpec, ResourceRequest, Tier } from '../api/types';
import type { InventorySummary, TypeSummary } from '../api/peers';
import { describeRequest, formatDevices } from '../api/units';
import { neverFits, requestMilli, wholeDevicesPerNode, type LargestNode } from './geometry';

/** How long a job waits at home before it is offered abroad, unless its spec says. */
export const DEFAULT_HANDOFF_AFTER_MS = 30_000;
/** A peer summary older than this (by its receipt time) counts as absent. */
export const DEFAULT_SUMMARY_TTL_MS = 10_000;

export interface HeldSummary {
  summary: InventorySummary;
  /** When this region received it (its own clock). */
  receivedAt: number;
}

/** Whether a job may be handed off at all, and after how long a wait. */
export function handoffPolicy(spec: JobSpec): { enabled: boolean; afterMs: number } {
  return { enabled: spec.handoff?.enabled !== false, afterMs: spec.handoff?.afterMs ?? DEFAULT_HANDOFF_AFTER_MS };
}

/** Peers the spec allows, among those configured. */
export function allowedPeers(spec: Pick<JobSpec, 'allowedRegions'>, peers: readonly string[]): string[] {
  return spec.allowedRegions ? peers.filter((p) => spec.allowedRegions!.includes(p)) : [...peers];
}

/** The largest node of each type a summary lists, as the geometry rules take it. */
function largestNodes(summary: InventorySummary): Map<string, LargestNode> {
  const out = new Map<string, LargestNode>();
  for (const [type, t] of Object.entries(summary.types))
    out.set(type, {
      devices: t.largestNode.devices,
      cpuMilli: t.largestNode.cpuMilli ?? Infinity,
      memoryMib: t.largestNode.memoryMib ?? Infinity,
    });
  return out;
}

/** Whole devices free where the request's gang must land together (the region, a pod, a rack, a node). */
function roomFor(request: ResourceRequest, t: TypeSummary): number {
  if (request.devicesPerWorker === 0) return t.freeMilli;
  const total = request.workers * request.devicesPerWorker * 1000;
  switch (request.topology) {
    case 'node':
      return t.largestFree.node >= wholeDevicesPerNode(request) ? total : 0;
    case 'rack':
      return t.largestFree.rack * 1000;
    case 'pod':
      return t.largestFree.pod * 1000;
    default:
      // Spread workers still need a node with room for one worker.
      return t.largestFree.node >= request.devicesPerWorker ? t.freeWhole * 1000 : 0;
  }
}

/** Demand queued at a peer that would go before a job of `tier` (its tier and above). */
function demandAhead(t: TypeSummary, tier: Tier): number {
  const q = t.queue;
  return q.premium.milli + (tier === 'premium' ? 0 : q.standard.milli + (tier === 'standard' ? 0 : q.basic.milli));
}

export type PeerChoice = { peer: string; reason: string } | { peer?: undefined; reason: string };

/**
 * What this region is handing to each peer (whenever that started), and what it handed since that
 * peer's summary was made, per accelerator type (the job's first acceptable type, as the peer's
 * queue counts it): demand the summary cannot show yet. Without it every job looking abroad
 * between two summaries sees the same room and all of them go to the same peer.
 */
export type InFlight = ReadonlyMap<string, ReadonlyMap<string, number>>;

/**
 * The peer that should take a waiting job: among the allowed peers whose summary is fresh, not
 * excluded (tried and refused lately), that could ever hold the shape and have room for it now
 * after the demand queued ahead of it, the one with the most room left over (the shortest
 * expected wait). `mustLeave`: the job cannot run at home at all, so a peer that could ever hold
 * it is chosen even without room now (the least loaded one).
 */
export function choosePeer(
  spec: Pick<JobSpec, 'request' | 'tier' | 'allowedRegions'>,
  peers: readonly string[],
  held: ReadonlyMap<string, HeldSummary>,
  o: { now: number; ttlMs?: number; exclude?: ReadonlySet<string>; mustLeave?: boolean; inFlight?: InFlight },
): PeerChoice {
  const ttl = o.ttlMs ?? DEFAULT_SUMMARY_TTL_MS;
  const candidates = allowedPeers(spec, peers).filter((p) => !o.exclude?.has(p));
  if (!candidates.length)
    return {
      reason: 'no peer region is allowed for this job' + (o.exclude?.size ? ` (refused lately: ${[...o.exclude].join(', ')})` : ''),
    };
  const milli = requestMilli(spec.request);
  const why: string[] = [];
  let best: { peer: string; spare: number; room: number } | undefined;
  for (const peer of candidates) {
    const h = held.get(peer);
    if (!h) {
      why.push(`${peer}: no summary received`);
      continue;
    }
    if (o.now - h.receivedAt > ttl) {
      why.push(`${peer}: summary ${Math.round((o.now - h.receivedAt) / 1000)} s old (TTL ${Math.round(ttl / 1000)} s)`);
      continue;
    }
    // Types the peer has none of are simply not options there; the others decide.
    const known = spec.request.acceleratorTypes.filter((t) => h.summary.types[t]);
    if (!known.length) {
      why.push(`${peer}: no node of ${spec.request.acceleratorTypes.join('|')}`);
      continue;
    }
    const never = neverFits({ ...spec.request, acceleratorTypes: known }, largestNodes(h.summary), `region ${peer}`);
    if (never) {
      why.push(`${peer}: ${never.replace(/^request[^:]*: /, '')}`);
      continue;
    }
    // Among the acceptable types large enough in all, the one with the most room after the demand ahead.
    const types = spec.request.acceleratorTypes.filter(
      (type) => h.summary.types[type] && h.summary.types[type].totalDevices * 1000 >= milli,
    );
    if (!types.length) {
      const total = spec.request.acceleratorTypes.map((type) => `${h.summary.types[type]?.totalDevices ?? 0} ${type}`).join(', ');
      why.push(`${peer}: ${describeRequest(spec.request)} needs ${formatDevices(milli)} devices, the region has ${total} in all`);
      continue;
    }
    let spare = -Infinity;
    let room = 0;
    const sent = o.inFlight?.get(peer);
    // Over all its types together: queued and sent jobs count under their first type only, and a
    // job that accepts several may land on any of them, so no one type's room is known to be
    // taken; the sum is. Without it, jobs kept being sent for the room of the types nobody's
    // first type named, and queued at the peer while another had room.
    let together = -milli;
    for (const type of types) {
      const t = h.summary.types[type];
      const r = roomFor(spec.request, t);
      // Jobs sent since the summary arrived before this one: they go ahead whatever their tier.
      const ahead = demandAhead(t, spec.tier) + (sent?.get(type) ?? 0);
      together += r - ahead;
      const s = r - ahead - milli;
      if (s > spare) [spare, room] = [s, r];
    }
    spare = Math.min(spare, together);
    if (room < milli && !o.mustLeave) {
      why.push(`${peer}: no room now for ${describeRequest(spec.request)} (${formatDevices(room)} free where it must land)`);
      continue;
    }
    if (spare < 0 && !o.mustLeave) {
      why.push(`${peer}: ${formatDevices(room)} free but ${formatDevices(room - spare - milli)} queued ahead or on its way`);
      continue;
    }
    if (!best || spare > best.spare) best = { peer, spare, room };
  }
  if (!best) return { reason: `no peer has room: ${why.join('; ')}` };
  return {
    peer: best.peer,
    reason: `${best.peer} has ${formatDevices(best.room)} free for it, ${formatDevices(Math.max(0, best.spare))} to spare after its queue`,
  };
}

/**
 * Whether a job handed off from this region could be placed here now, by this region's own
 * summary: one of its types has room where its gang must land, after the demand queued here ahead
 * of it. A home that has room again takes back its jobs still queued abroad (a recall), so
 * capacity left idle at home never waits behind a peer's queue.
 */
export function roomHere(spec: Pick<JobSpec, 'request' | 'tier'>, own: InventorySummary): { room: boolean; reason: string } {
  const milli = requestMilli(spec.request);
  const why: string[] = [];
  for (const type of spec.request.acceleratorTypes) {
    const t = own.types[type];
    if (!t) continue;
    const room = roomFor(spec.request, t);
    const ahead = demandAhead(t, spec.tier);
    if (room >= milli && room - ahead >= milli)
      return { room: true, reason: `${own.region} has ${formatDevices(room)} ${type} free for it, ${formatDevices(ahead)} queued ahead` };
    why.push(`${type}: ${formatDevices(room)} free where it must land, ${formatDevices(ahead)} queued ahead`);
  }
  return { room: false, reason: why.join('; ') || `${own.region} has none of ${spec.request.acceleratorTypes.join('|')}` };
}

/**
 * Free and total whole devices per accelerator type, as a region last told its peers (a plain
 * record: the exchange workflow keeps it between publications).
 */
export type FreeByType = Readonly<Record<string, { free: number; total: number }>>;

/** Free devices of a type that grew by at least this share of its devices (and ≥ 1 device) are a large change. */
export const LARGE_CHANGE_SHARE = 0.1;

/** The free and total devices per type a summary states. */
export function freeByType(summary: Pick<InventorySummary, 'types'>): FreeByType {
  return Object.fromEntries(Object.entries(summary.types).map(([type, t]) => [type, { free: t.freeWhole, total: t.totalDevices }]));
}

/**
 * Whether a region's free capacity moved, since the summary it last published, in a way its peers
 * should hear now rather than at the next period: for some type, room appeared (free whole devices
 * grew by ≥ LARGE_CHANGE_SHARE of its devices: peers may send work), the type filled up (free fell
 * to 0: peers should stop sending), or the type appeared or went. Room shrinking short of full is
 * left to the period: the home counts what it has sent (`readInFlight`), and a refusal is an
 * answer. The reason, or undefined.
 */
export function largeChange(published: FreeByType, now: FreeByType, share = LARGE_CHANGE_SHARE): string | undefined {
  for (const [type, n] of Object.entries(now)) {
    const p = published[type];
    if (!p) return `${type}: new since the last summary`;
    if (n.free - p.free >= Math.max(1, Math.ceil(share * n.total))) return `${type}: ${p.free} → ${n.free} free of ${n.total}`;
    if (n.free === 0 && p.free > 0) return `${type}: full (${p.free} → 0 free of ${n.total})`;
  }
  for (const type of Object.keys(published)) if (!(type in now)) return `${type}: gone since the last summary`;
  return undefined;
}
