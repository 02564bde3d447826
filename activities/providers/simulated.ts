// A simulated public cloud that behaves like one: a request takes its offering's provisioning time
// (±20%), may fail or come back short, is refused beyond the offering's quota; spot nodes are
// reclaimed after a short notice. Its whole state is in PostgreSQL (provision_requests,
// provider_nodes, provider_events), so a worker that dies mid-request loses nothing, and a retried
// request (same id) is answered from its row. Every draw comes from the provider's seed and the
// request id, so the same requests have the same fate in every run.
import { sql, type Kysely } from 'kysely';
import type { Offering, SimulatedProviderConfig } from '../../api/autoscaler';
import { badRequest } from '../../api/errors';
import type { Database, ProvisionRequestsTable } from '../../db/schema';
import type { Selectable } from 'kysely';
import {
  seededRandom,
  type CapacityProvider,
  type ProvidedNode,
  type ProviderEvent,
  type ProvisionTicket,
} from '../../scheduling/capacity';

const REQUEST_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,119}$/;

export class SimulatedCloud implements CapacityProvider {
  readonly kind = 'simulated' as const;
  readonly name: string;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly config: SimulatedProviderConfig,
    private readonly clock: () => number = Date.now,
  ) {
    this.name = config.name;
  }

  offerings(): Offering[] {
    return this.config.offerings;
  }

  private offering(name: string): Offering {
    const o = this.config.offerings.find((x) => x.name === name);
    if (!o)
      throw badRequest(
        `provider ${this.name} has no offering ${JSON.stringify(name)} (offers: ${this.config.offerings.map((x) => x.name).join(', ')})`,
      );
    return o;
  }

  /** Node names: `<provider>-<request id>-<index>`. */
  nodeName(requestId: string, idx: number): string {
    return `${this.name}-${requestId}-${idx}`;
  }

  /**
   * Records the request (or finds it: same id, same ask) and answers its ticket. Over quota, it is
   * recorded as failed at once. The fate of an accepted request is drawn now and shown when due.
   */
  async provision(offeringName: string, count: number, requestId: string): Promise<ProvisionTicket> {
    const o = this.offering(offeringName);
    if (!Number.isInteger(count) || count < 1 || count > 1000)
      throw badRequest(`provision: count ${count} must be a whole number from 1 to 1000`);
    if (!REQUEST_ID.test(requestId))
      throw badRequest(`provision: request id ${JSON.stringify(requestId)} must be 1-120 letters, digits, '.', '_' or '-'`);
    const row = await this.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtext(${`provider:${this.name}`}))`.execute(trx);
      const had = await trx.selectFrom('provision_requests').selectAll().where('request_id', '=', requestId).executeTakeFirst();
      if (had) {
        if (had.provider !== this.name || had.offering !== o.name || had.count !== count)
          throw badRequest(
            `provision: request id ${requestId} was used for ${had.count} × ${had.provider}/${had.offering}; it cannot ask for ${count} × ${this.name}/${o.name}`,
          );
        return had;
      }
      const now = this.clock();
      const used = await sql<{ n: string }>`
        SELECT (SELECT count(*) FROM provider_nodes WHERE provider = ${this.name} AND offering = ${o.name} AND state = 'running')
             + (SELECT coalesce(sum(count), 0) FROM provision_requests WHERE provider = ${this.name} AND offering = ${o.name} AND state = 'provisioning') AS n`.execute(
        trx,
      );
      const inUse = Number(used.rows[0].n);
      if (inUse + count > o.quota) {
        const error = `quota exceeded: ${this.name}/${o.name} allows ${o.quota} nodes, ${inUse} running or requested, ${count} asked`;
        const failed = await trx
          .insertInto('provision_requests')
          .values({
            request_id: requestId,
            provider: this.name,
            offering: o.name,
            region: o.region,
            count,
            state: 'failed',
            outcome_granted: 0,
            outcome_error: error,
            granted: 0,
            error,
            requested_at: new Date(now),
            ready_at: new Date(now),
            settled_at: new Date(now),
          })
          .returningAll()
          .executeTakeFirstOrThrow();
        await trx
          .insertInto('provider_events')
          .values({
            provider: this.name,
            region: o.region,
            kind: 'provisioning-failed',
            request_id: requestId,
            node: null,
            reclaim_at: null,
            detail: error,
            handled_at: null,
          })
          .execute();
        return failed;
      }
      const rng = seededRandom(this.config.seed, requestId);
      const fails = rng() < this.config.failureRate;
      const short = rng() < this.config.partialRate && count > 1;
      const shortBy = 1 + Math.floor(rng() * (count - 1));
      const jitter = 0.8 + 0.4 * rng();
      const granted = fails ? 0 : short ? count - shortBy : count;
      return trx
        .insertInto('provision_requests')
        .values({
          request_id: requestId,
          provider: this.name,
          offering: o.name,
          region: o.region,
          count,
          state: 'provisioning',
          outcome_granted: granted,
          outcome_error: fails
            ? `${this.name} could not provision ${count} × ${o.name}: insufficient capacity in ${o.region}`
            : short
              ? `${this.name} delivered ${granted} of ${count} × ${o.name}: insufficient capacity in ${o.region}`
              : null,
          granted: null,
          error: null,
          requested_at: new Date(now),
          ready_at: new Date(now + Math.round(o.provisioningMs * jitter)),
          settled_at: null,
        })
        .returningAll()
        .executeTakeFirstOrThrow();
    });
    // The cloud's API answers after a while; a worker dying meanwhile finds the request recorded on its retry.
    if (this.config.apiLatencyMs > 0) await new Promise((r) => setTimeout(r, this.config.apiLatencyMs));
    return ticketOf(row);
  }

  /** Gives a node back; a node already gone stays gone. */
  async release(node: string): Promise<void> {
    const r = await this.db
      .updateTable('provider_nodes')
      .set({ state: 'released', ended_at: new Date(this.clock()) })
      .where('name', '=', node)
      .where('provider', '=', this.name)
      .where('state', '=', 'running')
      .returning('name')
      .executeTakeFirst();
    if (r) return;
    const had = await this.db
      .selectFrom('provider_nodes')
      .select('state')
      .where('name', '=', node)
      .where('provider', '=', this.name)
      .executeTakeFirst();
    if (!had) throw badRequest(`provider ${this.name} has no node ${JSON.stringify(node)}`);
  }

  /**
   * Moves the cloud's clock on: requests that are due deliver their nodes (or fail), spot nodes
   * whose notice time came are announced, and those whose time is up are reclaimed; then answers
   * every event of the region not yet handled, oldest first.
   */
  async poll(region: string): Promise<ProviderEvent[]> {
    const now = new Date(this.clock());
    await this.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtext(${`provider:${this.name}`}))`.execute(trx);
      const due = await trx
        .selectFrom('provision_requests')
        .selectAll()
        .where('provider', '=', this.name)
        .where('state', '=', 'provisioning')
        .where('ready_at', '<=', now)
        .orderBy('ready_at')
        .execute();
      for (const r of due) {
        const o = this.config.offerings.find((x) => x.name === r.offering);
        const granted = o ? r.outcome_granted : 0;
        const error = o ? r.outcome_error : `offering ${r.offering} is no longer offered`;
        await trx
          .updateTable('provision_requests')
          .set({ state: granted === 0 ? 'failed' : granted < r.count ? 'partial' : 'fulfilled', granted, error, settled_at: now })
          .where('request_id', '=', r.request_id)
          .execute();
        if (granted === 0 || !o) {
          await trx
            .insertInto('provider_events')
            .values({
              provider: this.name,
              region: r.region,
              kind: 'provisioning-failed',
              request_id: r.request_id,
              node: null,
              reclaim_at: null,
              detail: error,
              handled_at: null,
            })
            .execute();
          continue;
        }
        const nodes = Array.from({ length: granted }, (_, idx) => {
          const fate = seededRandom(this.config.seed, `${r.request_id}/${idx}`);
          const reclaimed = o.spot && fate() < this.config.spotReclaimRate;
          const reclaimAt = reclaimed
            ? new Date(now.getTime() + this.config.spotNoticeMs + Math.round(fate() * this.config.spotLifetimeMs))
            : null;
          return {
            name: this.nodeName(r.request_id, idx),
            provider: this.name,
            offering: o.name,
            request_id: r.request_id,
            idx,
            region: r.region,
            state: 'running' as const,
            ready_at: now,
            reclaim_at: reclaimAt,
            notice_at: reclaimAt ? new Date(reclaimAt.getTime() - this.config.spotNoticeMs) : null,
            ended_at: null,
          };
        });
        await trx.insertInto('provider_nodes').values(nodes).execute();
        await trx
          .insertInto('provider_events')
          .values(
            nodes.map((n) => ({
              provider: this.name,
              region: r.region,
              kind: 'node-ready' as const,
              request_id: r.request_id,
              node: n.name,
              reclaim_at: null,
              detail: granted < r.count ? error : null,
              handled_at: null,
            })),
          )
          .execute();
      }
      await sql`
        WITH noticed AS (
          UPDATE provider_nodes SET noticed = true
          WHERE provider = ${this.name} AND state = 'running' AND NOT noticed AND notice_at <= ${now}
          RETURNING name, region, request_id, reclaim_at)
        INSERT INTO provider_events (provider, region, kind, request_id, node, reclaim_at, detail)
        SELECT ${this.name}, region, 'spot-reclaim-notice', request_id, name, reclaim_at, 'spot capacity reclaimed by the provider' FROM noticed`.execute(
        trx,
      );
      await sql`
        WITH gone AS (
          UPDATE provider_nodes SET state = 'reclaimed', ended_at = ${now}
          WHERE provider = ${this.name} AND state = 'running' AND reclaim_at <= ${now}
          RETURNING name, region, request_id)
        INSERT INTO provider_events (provider, region, kind, request_id, node, detail)
        SELECT ${this.name}, region, 'node-lost', request_id, name, 'spot capacity reclaimed by the provider' FROM gone`.execute(trx);
    });
    const events = await this.db
      .selectFrom('provider_events')
      .selectAll()
      .where('provider', '=', this.name)
      .where('region', '=', region)
      .where('handled_at', 'is', null)
      .orderBy('id')
      .limit(1000)
      .execute();
    return events.map((e) => ({
      id: Number(e.id),
      provider: e.provider,
      kind: e.kind,
      ...(e.request_id ? { requestId: e.request_id } : {}),
      ...(e.node ? { node: e.node } : {}),
      ...(e.reclaim_at ? { reclaimAt: e.reclaim_at.getTime() } : {}),
      ...(e.detail ? { detail: e.detail } : {}),
    }));
  }

  async node(name: string): Promise<ProvidedNode | undefined> {
    const n = await this.db
      .selectFrom('provider_nodes')
      .selectAll()
      .where('name', '=', name)
      .where('provider', '=', this.name)
      .executeTakeFirst();
    const o = n && this.config.offerings.find((x) => x.name === n.offering);
    return n && o ? { name: n.name, offering: o, requestId: n.request_id, index: n.idx } : undefined;
  }

  /** The cloud takes a spot node back: notice now, gone after `noticeMs` (what a real cloud does on its own schedule). */
  async reclaim(node: string, noticeMs = this.config.spotNoticeMs): Promise<void> {
    const now = this.clock();
    const r = await this.db
      .updateTable('provider_nodes')
      .set({ notice_at: new Date(now), reclaim_at: new Date(now + noticeMs) })
      .where('name', '=', node)
      .where('provider', '=', this.name)
      .where('state', '=', 'running')
      .where('noticed', '=', false)
      .returning('name')
      .executeTakeFirst();
    if (!r) throw badRequest(`provider ${this.name}: node ${JSON.stringify(node)} is not a running node awaiting no notice`);
  }

  /** The cloud loses a node outright (a host failure): no notice. */
  async fail(node: string, detail = 'host failure'): Promise<void> {
    await sql`
      WITH gone AS (
        UPDATE provider_nodes SET state = 'lost', ended_at = ${new Date(this.clock())}
        WHERE provider = ${this.name} AND name = ${node} AND state = 'running'
        RETURNING name, region, request_id)
      INSERT INTO provider_events (provider, region, kind, request_id, node, detail)
      SELECT ${this.name}, region, 'node-lost', request_id, name, ${detail} FROM gone`.execute(this.db);
  }
}

function ticketOf(r: Selectable<ProvisionRequestsTable>): ProvisionTicket {
  return {
    requestId: r.request_id,
    provider: r.provider,
    offering: r.offering,
    count: r.count,
    state: r.state,
    ...(r.granted !== null ? { granted: r.granted } : {}),
    ...(r.error ? { error: r.error } : {}),
    readyAt: r.ready_at.getTime(),
  };
}
