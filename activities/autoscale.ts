// The autoscaler's I/O: what providers report (nodes ready, requests failed, nodes lost or about
// to be reclaimed) applied to the inventory; the demand waiting for capacity and the capacity on
// its way, read for the pure plan (scheduling/capacity.ts); each provisioning request; and the
// release of a node idle past the limit. Every step is idempotent: a retry finds its own work.
import { sql, type Kysely } from 'kysely';
import type { AutoscalerLimits, DemandLine, Offering, ProvisionRecord } from '../api/autoscaler';
import type { Tier } from '../api/types';
import type { InventorySummary } from '../api/peers';
import { badRequest } from '../api/errors';
import type { Database } from '../db/schema';
import {
  capacityBlockedTypes,
  chooseScaleIn,
  nextIdleDeadline,
  offeringCost,
  planScaleUp,
  scalableDevices,
  summarizeDemand,
  type ExistingCapacity,
  type ProviderEvent,
  type ProvisionTicket,
  type WaitingDemand,
} from '../scheduling/capacity';
import { waitingQueueQuery } from './cycle';
import { setNodeState } from './nodes';
import { failpoint } from './failpoints';
import { activityLog, type Region } from './region';
import { OWNED, type Providers } from './providers';

/** Waiting jobs read per decision, in queue order. */
const DEMAND_SCAN = 2000;

export interface ObserveReport {
  registered: string[];
  failed: Array<{ requestId: string; error: string }>;
  noticed: string[];
  lost: string[];
}

/**
 * Applies what the providers report, each event once: a node ready joins the inventory (and the
 * scheduler is woken); a reclaim notice drains the node, so its jobs checkpoint and requeue before
 * it goes; a node lost is marked down, which requeues what ran there (the run watch sees it).
 */
export async function observeProviders(region: Region, providers: Providers): Promise<ObserveReport> {
  const log = activityLog();
  const report: ObserveReport = { registered: [], failed: [], noticed: [], lost: [] };
  for (const p of providers.byName.values()) {
    for (const e of await p.poll(region.name)) {
      if (e.kind === 'node-ready' && e.node) {
        const node = await p.node(e.node);
        if (node && (await registerNode(region.db, region.name, node.offering, node.name, node.requestId, node.index, e.id)))
          report.registered.push(node.name);
        else await handled(region.db, e);
        log.info('provider node ready', {
          event: 'autoscaler.node-ready',
          region: region.name,
          node: e.node,
          provider: p.name,
          requestId: e.requestId,
        });
        continue;
      }
      if (e.kind === 'provisioning-failed') {
        report.failed.push({ requestId: e.requestId ?? '?', error: e.detail ?? 'failed' });
        log.warn('provisioning failed', {
          event: 'autoscaler.provision-failed',
          region: region.name,
          provider: p.name,
          requestId: e.requestId,
          error: e.detail,
        });
      } else if (e.kind === 'spot-reclaim-notice' && e.node) {
        // Drain: every job on it is requeued through its own workflow, checkpointing first.
        if (await inInventory(region.db, e.node)) await setNodeState(region, e.node, 'draining');
        report.noticed.push(e.node);
        log.warn('spot node to be reclaimed: draining', {
          event: 'autoscaler.reclaim-notice',
          region: region.name,
          node: e.node,
          reclaimAt: e.reclaimAt ? new Date(e.reclaimAt).toISOString() : undefined,
        });
      } else if (e.kind === 'node-lost' && e.node) {
        if (await inInventory(region.db, e.node)) await setNodeState(region, e.node, 'down');
        report.lost.push(e.node);
        log.warn('provider node lost', { event: 'autoscaler.node-lost', region: region.name, node: e.node, detail: e.detail });
      }
      await handled(region.db, e);
    }
  }
  await removeDeadNodes(region.db);
  if (report.registered.length) await region.kick();
  return report;
}

async function handled(db: Kysely<Database>, e: ProviderEvent): Promise<void> {
  await db
    .updateTable('provider_events')
    .set({ handled_at: new Date() })
    .where('id', '=', String(e.id))
    .where('handled_at', 'is', null)
    .execute();
}

async function inInventory(db: Kysely<Database>, name: string): Promise<boolean> {
  return (await db.selectFrom('nodes').select('id').where('name', '=', name).executeTakeFirst()) !== undefined;
}

/** Adds a provider's node to the inventory and marks its event handled, in one transaction; false if it was there already. */
async function registerNode(
  db: Kysely<Database>,
  region: string,
  o: Offering,
  name: string,
  requestId: string,
  index: number,
  eventId: number,
): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    await trx
      .insertInto('accelerator_types')
      .values({
        name: o.acceleratorType,
        family: o.acceleratorType.toLowerCase().startsWith('npu') ? 'npu' : 'gpu',
        model: o.acceleratorType,
        memory_mib: 0,
      })
      .onConflict((oc) => oc.doNothing())
      .execute();
    await trx
      .insertInto('clusters')
      .values({ region, provider: o.provider, name: `provider:${o.provider}` })
      .onConflict((oc) => oc.doNothing())
      .execute();
    const cluster = await trx
      .selectFrom('clusters')
      .select('id')
      .where('region', '=', region)
      .where('name', '=', `provider:${o.provider}`)
      .executeTakeFirstOrThrow();
    const inserted = await trx
      .insertInto('nodes')
      .values({
        cluster_id: cluster.id,
        name,
        accelerator_type: o.acceleratorType,
        pod: `${o.provider}/${requestId}`,
        rack: `${o.provider}/${requestId}/r${Math.floor(index / o.nodesPerRack)}`,
        labels: JSON.stringify({ provider: o.provider, offering: o.name, ...(o.spot ? { spot: 'true' } : {}) }),
        device_count: o.devicesPerNode,
        cpu_milli: o.cpuMilli ?? null,
        memory_mib: o.memoryMib ?? null,
        provider: o.provider,
        offering: o.name,
        provision_request: requestId,
        price_per_device_hour: o.pricePerDeviceHour,
        spot: o.spot,
        idle_since: new Date(),
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .returning('id')
      .executeTakeFirst();
    await trx.updateTable('provider_events').set({ handled_at: new Date() }).where('id', '=', String(eventId)).execute();
    return inserted !== undefined;
  });
}

/** Provider nodes that are down and hold nothing leave the inventory (the provider has them back). */
async function removeDeadNodes(db: Kysely<Database>): Promise<void> {
  await sql`
    DELETE FROM nodes n WHERE n.provision_request IS NOT NULL AND n.state = 'down'
      AND NOT EXISTS (SELECT 1 FROM allocations a WHERE a.node_id = n.id)
      AND NOT EXISTS (SELECT 1 FROM nominations m WHERE m.node_id = n.id)`.execute(db);
}

/** What one decision is based on and what it proposes; the workflow makes the requests. */
export interface CapacityPlan {
  demand: DemandLine[];
  /** Jobs waiting for capacity (not quota), counted. */
  waitingForCapacity: number;
  /** Requests to make: offering, nodes, cost, and the jobs they are sized for. */
  requests: Array<{ provider: string; offering: string; count: number; costPerHour: number; forJobs: string[] }>;
  covered: string[];
  unmet: string[];
  /** Provider nodes idle past the limit, to release. */
  idle: string[];
  /** When the next idle node reaches the limit (the workflow decides again then, not a period later). */
  nextIdleAt?: number;
  inFlight: ProvisionRecord[];
  costPerHour: number;
}

interface Usage {
  offeringNodes: Map<string, number>;
  providerNodes: Map<string, number>;
  costPerHour: number;
  inFlight: Array<{ requestId: string; offering: Offering; count: number }>;
}

/** Nodes held and requested per offering and provider, and their cost per hour, from the providers' ledger. */
async function readUsage(db: Kysely<Database>, region: string, offerings: readonly Offering[]): Promise<Usage> {
  const byKey = new Map(offerings.map((o) => [`${o.provider}/${o.name}`, o]));
  const running = await db
    .selectFrom('provider_nodes')
    .select(['provider', 'offering'])
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('region', '=', region)
    .where('state', '=', 'running')
    .groupBy(['provider', 'offering'])
    .execute();
  const open = await db
    .selectFrom('provision_requests')
    .select(['request_id', 'provider', 'offering', 'count'])
    .where('region', '=', region)
    .where('state', '=', 'provisioning')
    .orderBy('requested_at')
    .execute();
  const u: Usage = { offeringNodes: new Map(), providerNodes: new Map(), costPerHour: 0, inFlight: [] };
  const add = (provider: string, offering: string, n: number) => {
    const k = `${provider}/${offering}`;
    u.offeringNodes.set(k, (u.offeringNodes.get(k) ?? 0) + n);
    u.providerNodes.set(provider, (u.providerNodes.get(provider) ?? 0) + n);
    const o = byKey.get(k);
    if (o) u.costPerHour += offeringCost(o, n);
  };
  for (const r of running) add(r.provider, r.offering, Number(r.n));
  for (const r of open) {
    add(r.provider, r.offering, r.count);
    const o = byKey.get(`${r.provider}/${r.offering}`);
    if (o) u.inFlight.push({ requestId: r.request_id, offering: o, count: r.count });
  }
  return u;
}

/**
 * Reads the queue (jobs waiting for capacity, by their waiting reason), the free room and the
 * requests on their way, and proposes the cheapest requests that hold the waiting gangs whole
 * within the limits; marks provider nodes idle or busy and names those idle past the limit.
 */
export async function planCapacity(region: Region, providers: Providers, limits: AutoscalerLimits, now: number): Promise<CapacityPlan> {
  const db = region.db;
  const offerings = providers.offerings(region.name);
  const queue = await waitingQueueQuery(region.name, DEMAND_SCAN).execute(db);
  const demand: WaitingDemand[] = [];
  for (const j of queue.rows) {
    const types = capacityBlockedTypes(j.waiting_reason, j.spec.request.acceleratorTypes);
    if (types.length) demand.push({ jobId: j.id, tier: j.tier as Tier, request: j.spec.request, types });
  }
  const usage = await readUsage(db, region.name, offerings);
  const types = [...new Set(demand.flatMap((d) => d.types))];
  const free = types.length
    ? await db
        .selectFrom('nodes')
        .select([
          'id',
          'name',
          'pod',
          'rack',
          'accelerator_type',
          'free_milli',
          'free_cpu_milli',
          'free_memory_mib',
          'spot',
          'price_per_device_hour',
        ])
        .where('state', '=', 'ready')
        .where('accelerator_type', 'in', types)
        .where((eb) => eb.or([eb('free_whole', '>', 0), eb('max_partial', '>', 0)]))
        .limit(5000)
        .execute()
    : [];
  const existing: ExistingCapacity = {
    free: free.map((n) => ({
      id: n.id,
      name: n.name,
      pod: n.pod,
      rack: n.rack,
      type: n.accelerator_type,
      spot: n.spot,
      freeMilli: n.free_milli,
      ...(n.free_cpu_milli !== null ? { freeCpuMilli: n.free_cpu_milli } : {}),
      ...(n.free_memory_mib !== null ? { freeMemoryMib: n.free_memory_mib } : {}),
    })),
    inFlight: usage.inFlight,
  };
  const plan = planScaleUp({
    demand,
    offerings,
    existing,
    limits,
    offeringNodes: usage.offeringNodes,
    providerNodes: usage.providerNodes,
    costPerHour: usage.costPerHour,
  });

  // Idle bookkeeping for scale-in: a provider node holding nothing is idle since it was first seen so.
  await sql`UPDATE nodes n SET idle_since = ${new Date(now)} WHERE n.provision_request IS NOT NULL AND n.idle_since IS NULL
    AND NOT EXISTS (SELECT 1 FROM allocations a WHERE a.node_id = n.id)`.execute(db);
  await sql`UPDATE nodes n SET idle_since = NULL WHERE n.idle_since IS NOT NULL
    AND EXISTS (SELECT 1 FROM allocations a WHERE a.node_id = n.id)`.execute(db);
  const candidates = await sql<{
    name: string;
    provider: string;
    state: string;
    idle_since: Date | null;
    allocations: number;
    premium: number;
  }>`
    SELECT n.name, n.provider, n.state, n.idle_since, count(a.id)::int AS allocations,
      count(a.id) FILTER (WHERE j.tier = 'premium')::int AS premium
    FROM nodes n LEFT JOIN allocations a ON a.node_id = n.id LEFT JOIN jobs j ON j.id = a.job_id
    WHERE n.provision_request IS NOT NULL
    GROUP BY n.id`.execute(db);
  const seen = candidates.rows.map((c) => ({
    name: c.name,
    provider: c.provider,
    state: c.state,
    allocations: c.allocations,
    premiumJobs: c.premium,
    ...(c.idle_since ? { idleSince: c.idle_since.getTime() } : {}),
  }));
  const owned = new Set([...providers.owned, OWNED]);
  const idle = chooseScaleIn(seen, now, limits.idleLimitMs, owned);
  const nextIdleAt = nextIdleDeadline(seen, now, limits.idleLimitMs, owned);
  const inFlight = usage.inFlight.map((r) => ({
    requestId: r.requestId,
    provider: r.offering.provider,
    offering: r.offering.name,
    count: r.count,
    costPerHour: offeringCost(r.offering, r.count),
    forJobs: [],
    state: 'provisioning' as const,
  }));
  return {
    demand: summarizeDemand(demand),
    waitingForCapacity: demand.length,
    requests: plan.requests.map((r) => ({
      provider: r.offering.provider,
      offering: r.offering.name,
      count: r.count,
      costPerHour: r.costPerHour,
      forJobs: r.forJobs.slice(0, 20),
    })),
    covered: plan.covered.slice(0, 20),
    unmet: plan.unmet.slice(0, 20),
    idle,
    ...(nextIdleAt !== undefined ? { nextIdleAt } : {}),
    inFlight,
    costPerHour: usage.costPerHour,
  };
}

/** One provisioning request, made once whatever the retries (the provider keys it by request id). */
export async function provisionCapacity(
  providers: Providers,
  r: { requestId: string; provider: string; offering: string; count: number },
): Promise<ProvisionTicket> {
  const p = providers.get(r.provider);
  if (!p) throw badRequest(`provision: no provider ${JSON.stringify(r.provider)} (configured: ${providers.names.join(', ')})`);
  const ticket = await p.provision(r.offering, r.count, r.requestId);
  await failpoint('autoscale.provisioned');
  activityLog().info('provisioning requested', {
    event: 'autoscaler.provision',
    ...r,
    state: ticket.state,
    readyAt: new Date(ticket.readyAt).toISOString(),
  });
  return ticket;
}

/**
 * Gives back a provider node that holds nothing: cordoned first (no placement lands on it from
 * then on), checked again (anything placed meanwhile, and it is put back in service), then
 * released to its provider and removed from the inventory. A node holding premium work is never
 * released. Idempotent: a node already gone is reported released.
 */
export async function releaseIdleNode(region: Region, providers: Providers, name: string): Promise<{ released: boolean; reason?: string }> {
  const db = region.db;
  const node = await db
    .selectFrom('nodes')
    .select(['id', 'provider', 'state', 'provision_request'])
    .where('name', '=', name)
    .executeTakeFirst();
  if (!node) return { released: true, reason: 'already gone from the inventory' };
  if (node.provision_request === null || providers.owned.has(node.provider) || node.provider === OWNED)
    throw badRequest(`node ${name} belongs to the owned fleet (${node.provider}); only provisioned nodes are released`);
  const cordoned = await db
    .updateTable('nodes')
    .set({ state: 'cordoned' })
    .where('id', '=', node.id)
    .where('state', 'in', ['ready', 'cordoned'])
    .returning('id')
    .executeTakeFirst();
  if (!cordoned) return { released: false, reason: `node is ${node.state}` };
  const held = await sql<{ n: number; premium: number }>`
    SELECT count(*)::int AS n, count(*) FILTER (WHERE j.tier = 'premium')::int AS premium
    FROM allocations a JOIN jobs j ON j.id = a.job_id WHERE a.node_id = ${node.id}`.execute(db);
  const { n, premium } = held.rows[0];
  if (n > 0) {
    // Something was placed before the cordon took: it is not idle; back in service.
    await db
      .updateTable('nodes')
      .set({ state: 'ready', idle_since: null })
      .where('id', '=', node.id)
      .where('state', '=', 'cordoned')
      .execute();
    return { released: false, reason: premium > 0 ? 'holds premium work' : 'holds work placed since it was seen idle' };
  }
  const p = providers.get(node.provider);
  if (!p) throw badRequest(`node ${name}: provider ${node.provider} is not configured`);
  await p.release(name);
  await sql`DELETE FROM nodes n WHERE n.id = ${node.id} AND NOT EXISTS (SELECT 1 FROM allocations a WHERE a.node_id = n.id)
    AND NOT EXISTS (SELECT 1 FROM nominations m WHERE m.node_id = n.id)`.execute(db);
  await db.updateTable('nodes').set({ state: 'down' }).where('id', '=', node.id).execute();
  activityLog().info('idle node released', { event: 'autoscaler.release', region: region.name, node: name, provider: node.provider });
  return { released: true };
}

/** Records the autoscaler's limits and pause, for the summary sent to peers. */
export async function recordSettings(db: Kysely<Database>, region: string, limits: AutoscalerLimits, paused: boolean): Promise<void> {
  await db
    .insertInto('autoscaler_settings')
    .values({ region, limits: JSON.stringify(limits), paused, updated_at: new Date() })
    .onConflict((oc) => oc.column('region').doUpdateSet({ limits: JSON.stringify(limits), paused, updated_at: new Date() }))
    .execute();
}

/**
 * Fills the summary's `scalableDevices`: what the providers could still add per type (offerings
 * × remaining quota, within provider limits and the budget left). Zero while no autoscaler runs
 * the region, or it is paused.
 */
export async function addScalableDevices(
  db: Kysely<Database>,
  region: string,
  providers: Providers,
  summary: InventorySummary,
): Promise<void> {
  const settings = await db.selectFrom('autoscaler_settings').selectAll().where('region', '=', region).executeTakeFirst();
  if (!settings || settings.paused) return;
  const offerings = providers.offerings(region);
  if (!offerings.length) return;
  const usage = await readUsage(db, region, offerings);
  const scalable = scalableDevices(offerings, settings.limits, usage.offeringNodes, usage.providerNodes, usage.costPerHour);
  for (const [type, devices] of scalable) {
    const t = summary.types[type];
    if (t) t.scalableDevices = devices;
  }
}
