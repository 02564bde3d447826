// The global tier's contract: how a region names its peers, and the inventory summary regions
// send each other. Regions talk only peer to peer, through each other's Temporal namespaces;
// there is no global database and no global leader.

import { addressProblems, tlsProblems, type TemporalEndpoint, type TemporalTls } from './temporal-connection';

const REGION = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Whether `name` is a well-formed region name (lowercase letters, digits, '-'). */
export function isRegionName(name: unknown): name is string {
  return typeof name === 'string' && REGION.test(name);
}

/** TLS for a peer's Temporal endpoint: files on this host, read when the connection is made (same rules as TEMPORAL_TLS_*). */
export type PeerTls = TemporalTls;

/** A peer region, as this region reaches it. */
export interface PeerConfig {
  name: string;
  /** host:port of the peer's Temporal frontend. */
  temporalAddress: string;
  /** Default `sched-<name>`. */
  namespace: string;
  /** The peer's job task queue; default `jobs-<name>`. */
  taskQueue: string;
  tls?: PeerTls;
}

const show = (v: unknown): string => JSON.stringify(v) ?? String(v);

/**
 * Reads the peer list (from configuration: a file or an environment variable holding JSON) for
 * region `self`. Every problem names the entry and the field; an empty list means no peers.
 */
export function parsePeers(input: unknown, self: string): { peers: PeerConfig[]; problems: string[] } {
  const problems: string[] = [];
  const peers: PeerConfig[] = [];
  if (!Array.isArray(input))
    return { peers, problems: [`peers: ${show(input)} must be a list of { name, temporalAddress, namespace?, taskQueue?, tls? }`] };
  const seen = new Set<string>();
  input.forEach((raw: unknown, i) => {
    const at = `peers[${i}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      problems.push(`${at}: ${show(raw)} must be an object`);
      return;
    }
    const p = raw as Record<string, unknown>;
    const extra = Object.keys(p).filter((k) => !['name', 'temporalAddress', 'namespace', 'taskQueue', 'tls'].includes(k));
    if (extra.length) problems.push(`${at}: unknown field ${extra.join(', ')}`);
    if (!isRegionName(p.name)) problems.push(`${at}.name: ${show(p.name)} must be a region name (lowercase letters, digits, '-')`);
    else if (p.name === self) problems.push(`${at}.name: ${p.name} is this region itself`);
    else if (seen.has(p.name)) problems.push(`${at}.name: ${p.name} is listed twice`);
    if (typeof p.temporalAddress !== 'string') problems.push(`${at}.temporalAddress: ${show(p.temporalAddress)} must be host:port`);
    else problems.push(...addressProblems(p.temporalAddress, `${at}.temporalAddress`));
    for (const k of ['namespace', 'taskQueue'] as const)
      if (p[k] !== undefined && (typeof p[k] !== 'string' || !(p[k] as string).trim()))
        problems.push(`${at}.${k}: ${show(p[k])} must be a non-empty string`);
    let tls: PeerTls | undefined;
    if (p.tls !== undefined) {
      const t = p.tls as Record<string, unknown> | null;
      if (typeof t !== 'object' || t === null || Array.isArray(t)) problems.push(`${at}.tls: ${show(p.tls)} must be an object`);
      else {
        for (const [k, v] of Object.entries(t))
          if (!['serverName', 'caFile', 'certFile', 'keyFile'].includes(k)) problems.push(`${at}.tls: unknown field ${k}`);
          else if (typeof v !== 'string' || !v) problems.push(`${at}.tls.${k}: ${show(v)} must be a non-empty string`);
        const f = (k: string): string => `${at}.tls.${k}`;
        problems.push(
          ...tlsProblems(t as PeerTls, {
            serverName: f('serverName'),
            caFile: f('caFile'),
            certFile: f('certFile'),
            keyFile: f('keyFile'),
          }),
        );
        tls = t as PeerTls;
      }
    }
    if (isRegionName(p.name)) {
      seen.add(p.name);
      peers.push({
        name: p.name,
        temporalAddress: String(p.temporalAddress),
        namespace: typeof p.namespace === 'string' ? p.namespace : `sched-${p.name}`,
        taskQueue: typeof p.taskQueue === 'string' ? p.taskQueue : `jobs-${p.name}`,
        ...(tls ? { tls } : {}),
      });
    }
  });
  return { peers: problems.length ? [] : peers, problems };
}

/** A peer as a Temporal endpoint, so its connection is made by the same function as every other. */
export function peerEndpoint(peer: PeerConfig): TemporalEndpoint {
  return { address: peer.temporalAddress, namespace: peer.namespace, ...(peer.tls ? { tls: peer.tls } : {}) };
}

export const TOPOLOGY_LEVELS = ['node', 'rack', 'pod'] as const;

/** One accelerator type's capacity and demand in a region, as its peers see it. */
export interface TypeSummary {
  /** Free milli-devices on ready nodes. */
  freeMilli: number;
  /** Whole devices free on ready nodes. */
  freeWhole: number;
  /** Devices of the type on nodes that are not down: the most any job of the type could get here. */
  totalDevices: number;
  /** The most whole free devices within one node, one rack, one pod. */
  largestFree: { node: number; rack: number; pod: number };
  /** The largest node of the type: devices, CPU (milli-cores) and memory (MiB); null when some node does not track it. */
  largestNode: { devices: number; cpuMilli: number | null; memoryMib: number | null };
  /** Jobs waiting for the type (their first acceptable type), per tier: how many, the milli-devices they ask, the oldest wait. */
  queue: Record<'premium' | 'standard' | 'basic', { jobs: number; milli: number; oldestWaitMs: number }>;
  /** Devices the region could still add by scaling (0 until autoscaling exists). */
  scalableDevices: number;
}

/** A region's inventory summary: versioned, so a receiver keeps only the newest. */
export interface InventorySummary {
  region: string;
  /** Increases with every summary the region publishes. */
  version: number;
  /** When the region made it (its clock; receivers age summaries by their own receipt time). */
  generatedAt: string;
  types: Record<string, TypeSummary>;
}

const count = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;

/** Problems with a summary received from a peer; empty when it may be stored. */
export function validateSummary(input: unknown): string[] {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return [`summary: ${show(input)} must be an object`];
  const s = input as Partial<InventorySummary>;
  const problems: string[] = [];
  if (!isRegionName(s.region)) problems.push(`summary.region: ${show(s.region)} must be a region name`);
  if (typeof s.version !== 'number' || !Number.isSafeInteger(s.version) || s.version < 1)
    problems.push(`summary.version: ${show(s.version)} must be a positive integer`);
  if (typeof s.generatedAt !== 'string' || Number.isNaN(Date.parse(s.generatedAt)))
    problems.push(`summary.generatedAt: ${show(s.generatedAt)} must be an ISO timestamp`);
  if (typeof s.types !== 'object' || s.types === null || Array.isArray(s.types)) {
    problems.push(`summary.types: ${show(s.types)} must map accelerator types to their figures`);
    return problems;
  }
  for (const [type, raw] of Object.entries(s.types)) {
    const at = `summary.types.${type}`;
    const t = raw as Partial<TypeSummary> | null;
    if (typeof t !== 'object' || t === null) {
      problems.push(`${at}: must be an object`);
      continue;
    }
    for (const k of ['freeMilli', 'freeWhole', 'totalDevices', 'scalableDevices'] as const)
      if (!count(t[k])) problems.push(`${at}.${k}: ${show(t[k])} must be a number ≥ 0`);
    if (!t.largestFree || !TOPOLOGY_LEVELS.every((l) => count(t.largestFree?.[l])))
      problems.push(`${at}.largestFree: ${show(t.largestFree)} must give node, rack and pod as numbers ≥ 0`);
    const n = t.largestNode;
    if (!n || !count(n.devices) || !(n.cpuMilli === null || count(n.cpuMilli)) || !(n.memoryMib === null || count(n.memoryMib)))
      problems.push(`${at}.largestNode: ${show(n)} must give devices, cpuMilli and memoryMib (numbers ≥ 0, or null when untracked)`);
    for (const tier of ['premium', 'standard', 'basic'] as const) {
      const q = t.queue?.[tier];
      if (!q || !count(q.jobs) || !count(q.milli) || !count(q.oldestWaitMs))
        problems.push(`${at}.queue.${tier}: ${show(q)} must give jobs, milli and oldestWaitMs as numbers ≥ 0`);
    }
  }
  return problems;
}
