// The fleet summary behind `GET /v1/fleet`, the fleet page (/fleet) and `sched top`: the region's
// nodes by accelerator type, each classed by use; the queue by tier with waiting reasons; and
// recent preemptions. The rows come from a FleetSource (worker/api-server.ts reads them from the
// region's database); the classing and grouping here are plain functions over them.
import { Type, type Static } from '@sinclair/typebox';
import { TIERS } from '../types';

/** How a node is used, as the page colours it. */
export const NODE_USES = ['whole', 'shared', 'free', 'cordoned', 'down'] as const;
export type NodeUse = (typeof NODE_USES)[number];

export interface FleetNodeRow {
  name: string;
  acceleratorType: string;
  state: 'ready' | 'cordoned' | 'draining' | 'down';
  pod: string;
  rack: string;
  deviceCount: number;
  /** Free share of each device in milli-devices (1000: the whole device is free). */
  freeMilli: number[];
}

export interface FleetWaitingRow {
  jobId: string;
  tenant: string;
  tier: string;
  priority: number;
  acceleratorTypes: string[];
  devices: number;
  waitingReason: string | null;
  enqueuedAt: Date;
}

export interface FleetPreemptionRow {
  victim: string;
  tenant: string;
  tier: string;
  /** The job it gave way to (the latest, for a job preempted more than once). */
  preemptor: string;
  at: Date;
  /** Nominated but not yet off its devices. */
  pending: boolean;
}

export interface FleetRows {
  nodes: FleetNodeRow[];
  waiting: FleetWaitingRow[];
  preemptions: FleetPreemptionRow[];
}

/** What the API needs to draw the fleet; `scope` is the caller's tenant subtree (`*`: all) for the queue and preemptions. */
export interface FleetSource {
  read(scope: string): Promise<FleetRows>;
}

/**
 * whole: every device entirely allocated; shared: some device in use but not all wholly;
 * free: nothing allocated. A cordoned or draining node is `cordoned` and a down node `down`
 * whatever it still holds (what an operator needs to see first).
 */
export function nodeUse(n: Pick<FleetNodeRow, 'state' | 'freeMilli'>): NodeUse {
  if (n.state === 'down') return 'down';
  if (n.state === 'cordoned' || n.state === 'draining') return 'cordoned';
  if (n.freeMilli.every((m) => m === 0)) return 'whole';
  if (n.freeMilli.every((m) => m === 1000)) return 'free';
  return 'shared';
}

const FleetNodeSchema = Type.Object({
  name: Type.String(),
  state: Type.String(),
  use: Type.Unsafe<NodeUse>({ type: 'string', enum: [...NODE_USES] }),
  pod: Type.String(),
  rack: Type.String(),
  deviceCount: Type.Integer(),
  freeDevices: Type.Integer({ description: 'devices entirely free' }),
  usedMilli: Type.Integer({ description: 'milli-devices allocated, over all its devices' }),
});
const FleetTypeSchema = Type.Object({
  acceleratorType: Type.String(),
  nodes: Type.Array(FleetNodeSchema),
  counts: Type.Record(Type.String(), Type.Integer(), { description: 'nodes by use' }),
  devices: Type.Integer(),
  freeDevices: Type.Integer({ description: 'devices entirely free on nodes open to placements' }),
  usedMilli: Type.Integer(),
});
const FleetQueuedJobSchema = Type.Object({
  jobId: Type.String(),
  tenant: Type.String(),
  priority: Type.Integer(),
  acceleratorTypes: Type.Array(Type.String()),
  devices: Type.Integer(),
  waitingReason: Type.Union([Type.String(), Type.Null()]),
  waitingS: Type.Integer(),
});
const FleetTierSchema = Type.Object({
  tier: Type.String(),
  waiting: Type.Integer(),
  byType: Type.Record(Type.String(), Type.Integer(), { description: 'waiting jobs by their first accelerator type' }),
  jobs: Type.Array(FleetQueuedJobSchema, { description: 'the head of the tier, oldest first (at most 20)' }),
});
const FleetPreemptionSchema = Type.Object({
  victim: Type.String(),
  tenant: Type.String(),
  tier: Type.String(),
  preemptor: Type.String(),
  at: Type.String(),
  pending: Type.Boolean(),
});
export const FleetSummarySchema = Type.Object(
  {
    region: Type.String(),
    at: Type.String(),
    types: Type.Array(FleetTypeSchema),
    queue: Type.Array(FleetTierSchema),
    preemptions: Type.Array(FleetPreemptionSchema),
  },
  { description: "The region's nodes by type and use, its queue by tier, recent preemptions." },
);
export type FleetSummary = Static<typeof FleetSummarySchema>;

const QUEUE_HEAD = 20;

export function fleetSummary(region: string, rows: FleetRows, now: Date): FleetSummary {
  const byType = new Map<string, FleetSummary['types'][number]>();
  for (const n of [...rows.nodes].sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }))) {
    const t = byType.get(n.acceleratorType) ?? {
      acceleratorType: n.acceleratorType,
      nodes: [],
      counts: Object.fromEntries(NODE_USES.map((u) => [u, 0])),
      devices: 0,
      freeDevices: 0,
      usedMilli: 0,
    };
    const use = nodeUse(n);
    const freeDevices = n.freeMilli.filter((m) => m === 1000).length;
    const usedMilli = n.freeMilli.reduce((s, m) => s + (1000 - m), 0);
    t.nodes.push({ name: n.name, state: n.state, use, pod: n.pod, rack: n.rack, deviceCount: n.deviceCount, freeDevices, usedMilli });
    t.counts[use]++;
    t.devices += n.deviceCount;
    if (n.state === 'ready') t.freeDevices += freeDevices;
    t.usedMilli += usedMilli;
    byType.set(n.acceleratorType, t);
  }
  const tierRank = (tier: string) => {
    const i = (TIERS as readonly string[]).indexOf(tier);
    return i < 0 ? TIERS.length : i;
  };
  const tiers = [...new Set([...TIERS, ...rows.waiting.map((w) => w.tier)])].sort((a, b) => tierRank(a) - tierRank(b));
  const queue = tiers.map((tier) => {
    const mine = rows.waiting.filter((w) => w.tier === tier).sort((a, b) => a.enqueuedAt.getTime() - b.enqueuedAt.getTime());
    const counts: Record<string, number> = {};
    for (const w of mine) counts[w.acceleratorTypes[0] ?? '?'] = (counts[w.acceleratorTypes[0] ?? '?'] ?? 0) + 1;
    return {
      tier,
      waiting: mine.length,
      byType: counts,
      jobs: mine.slice(0, QUEUE_HEAD).map((w) => ({
        jobId: w.jobId,
        tenant: w.tenant,
        priority: w.priority,
        acceleratorTypes: w.acceleratorTypes,
        devices: w.devices,
        waitingReason: w.waitingReason,
        waitingS: Math.max(0, Math.round((now.getTime() - w.enqueuedAt.getTime()) / 1000)),
      })),
    };
  });
  return {
    region,
    at: now.toISOString(),
    types: [...byType.values()].sort((a, b) => a.acceleratorType.localeCompare(b.acceleratorType)),
    queue,
    preemptions: rows.preemptions.map((p) => ({ ...p, at: p.at.toISOString() })),
  };
}
