// The HTTP API wired to a region: the backend (api/http/backend.ts) over the region's database
// (activities/admin.ts) and its Temporal namespace (the typed SchedulerClient, which follows
// handoffs), and `startApiServer` to build and listen. Used by the process entry point
// (worker/api-main.ts), the tests and the benchmark alike.
import { WorkflowNotFoundError } from '@temporalio/client';
import { sql, type Kysely } from 'kysely';
import type { FastifyBaseLogger } from 'fastify';
import type { Database } from '../db/schema';
import { InvalidJobSpecError, JobIdTakenError, OperatorActionRefusedError, type SchedulerClient } from '../api/client';
import { jobWorkflowId } from '../api/ids';
import type { JobResult } from '../api/types';
import { ApiError, badInput, conflict, notFound, problemFromMessage } from '../api/http/errors';
import type { ApiBackend } from '../api/http/backend';
import { buildApiApp, type ApiApp } from '../api/http/app';
import { createAuthenticator, type OidcConfig } from '../api/http/auth';
import type { LimitDefaults } from '../api/http/limits';
import * as admin from '../activities/admin';
import { METRICS_CONTENT_TYPE, metricsText, recordHttpRequest, watchRegion } from '../activities/metrics';
import { descendantsLikePattern } from '../api/tenants';
import type { FleetNodeRow, FleetRows } from '../api/http/fleet';
import { checkReadiness, databaseProbe, temporalProbe } from './metrics-server';

/** The scheduler's own refusals, as the API answers them. */
function asApiError(err: unknown): unknown {
  if (err instanceof ApiError) return err;
  if (err instanceof InvalidJobSpecError) return badInput(err.problems.map((m) => problemFromMessage(m, 'spec')));
  if (err instanceof JobIdTakenError) return conflict(err.message);
  if (err instanceof OperatorActionRefusedError) return conflict(err.message);
  if (err instanceof WorkflowNotFoundError) return notFound(`no workflow ${err.workflowId ?? ''} in this region`.replace('  ', ' '));
  return err;
}

const mapped =
  <A extends unknown[], R>(f: (...a: A) => Promise<R>) =>
  async (...a: A): Promise<R> => {
    try {
      return await f(...a);
    } catch (err) {
      throw asApiError(err);
    }
  };

/** How far back the fleet page's preemptions reach, and how many it lists. */
const PREEMPTIONS_SINCE_MS = 60 * 60 * 1000;
const PREEMPTIONS_SHOWN = 20;

/**
 * The fleet page's rows: every node with its free shares, the queued jobs of the caller's subtree,
 * and the recent preemptions in it (standing nominations, and jobs sent back by one in the last hour).
 */
export async function readFleet(db: Kysely<Database>, scope: string): Promise<FleetRows> {
  const within = (column: string) =>
    scope === '*'
      ? sql<boolean>`true`
      : sql<boolean>`(${sql.ref(column)} = ${scope} OR ${sql.ref(column)} LIKE ${descendantsLikePattern(scope)})`;
  const [nodes, waiting, preemptions] = await Promise.all([
    db.selectFrom('nodes').select(['name', 'accelerator_type', 'state', 'pod', 'rack', 'device_count', 'free_milli']).execute(),
    db
      .selectFrom('jobs')
      .select(['id', 'tenant', 'tier', 'priority', 'waiting_reason', 'enqueued_at'])
      .select(sql<string[]>`ARRAY(SELECT jsonb_array_elements_text(spec::jsonb->'request'->'acceleratorTypes'))`.as('types'))
      .select(
        sql<number>`COALESCE((spec::jsonb->'request'->>'workers')::int * (spec::jsonb->'request'->>'devicesPerWorker')::int, 0)`.as(
          'devices',
        ),
      )
      .where('state', 'in', ['submitted', 'waiting', 'pending'])
      .where(within('tenant'))
      .orderBy('enqueued_at')
      .limit(500)
      .execute(),
    sql<{ victim: string; tenant: string; tier: string; preemptor: string; at: Date; pending: boolean }>`
      SELECT victim, tenant, tier, preemptor, at, pending FROM (
        (SELECT DISTINCT ON (m.victim) m.victim, j.tenant, j.tier, m.preemptor, m.created_at AS at, true AS pending
           FROM nominations m JOIN jobs j ON j.id = m.victim
          WHERE ${within('j.tenant')}
          ORDER BY m.victim, m.created_at DESC)
        UNION ALL
        SELECT j.id, j.tenant, j.tier, j.preempted_by[cardinality(j.preempted_by)], j.updated_at, false
          FROM jobs j
         WHERE cardinality(j.preempted_by) > 0 AND j.updated_at > now() - make_interval(secs => ${PREEMPTIONS_SINCE_MS / 1000})
           AND NOT EXISTS (SELECT 1 FROM nominations m WHERE m.victim = j.id) AND ${within('j.tenant')}
      ) p ORDER BY at DESC LIMIT ${PREEMPTIONS_SHOWN}`.execute(db),
  ]);
  return {
    nodes: nodes.map((n) => ({
      name: n.name,
      acceleratorType: n.accelerator_type,
      state: n.state as FleetNodeRow['state'],
      pod: n.pod,
      rack: n.rack,
      deviceCount: n.device_count,
      freeMilli: n.free_milli,
    })),
    waiting: waiting.map((w) => ({
      jobId: w.id,
      tenant: w.tenant,
      tier: w.tier,
      priority: w.priority,
      acceleratorTypes: w.types,
      devices: Number(w.devices),
      waitingReason: w.waiting_reason,
      enqueuedAt: w.enqueued_at,
    })),
    preemptions: preemptions.rows,
  };
}

/** The backend of one region: its database and its scheduler client (whose peers it follows). */
export function regionBackend(o: { db: Kysely<Database>; client: SchedulerClient; region: string }): ApiBackend {
  const { db, client, region } = o;
  return {
    region,
    findApiKey: (id) => admin.findApiKey(db, id),
    createApiKey: (k) => admin.createApiKey(db, k),
    listApiKeys: (scope) => admin.listApiKeys(db, scope),
    revokeApiKey: (id, by) => admin.revokeApiKey(db, id, by),
    audit: (e) => admin.writeAudit(db, e),
    listAudit: (q) => admin.listAudit(db, q),

    limitRows: (tenant) => admin.limitRows(db, tenant),
    queuedJobs: (scope) => admin.queuedJobs(db, scope),
    claimSubmission: (c) => admin.claimSubmission(db, c),
    dropClaim: (jobId, sha) => admin.dropClaim(db, jobId, sha),
    replaceClaim: (jobId, sha) => admin.replaceClaim(db, jobId, sha),
    submit: mapped(async (spec) => ({ workflowId: await client.submit(spec) })),
    async endedAs(tenant, jobId) {
      const handle = client.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId));
      const d = await handle.describe().catch(() => undefined);
      if (!d || d.status.name === 'RUNNING') return undefined;
      if (d.status.name !== 'COMPLETED') return d.status.name.toLowerCase();
      return ((await handle.result()) as JobResult).outcome;
    },

    jobTenant: (jobId) => admin.jobTenant(db, jobId),
    jobSummary: (jobId) => admin.jobSummary(db, jobId),
    listJobs: (f) => admin.listJobs(db, f),
    async jobStatus(tenant, jobId) {
      // A workflow that cannot be asked (gone from the server, no worker to answer) leaves the row to speak.
      return client.status(tenant, jobId).catch(() => undefined);
    },
    locate: mapped((tenant, jobId) => client.locate(tenant, jobId)),
    cancel: mapped((tenant, jobId, reason) => client.cancel(tenant, jobId, reason)),
    requeue: mapped((tenant, jobId, reason) => client.requeue(tenant, jobId, reason)),
    setPriority: mapped((tenant, jobId, priority) => client.setPriority(tenant, jobId, priority)),

    reserve: mapped((r) => client.reserve(r)),
    reservation: (id) => admin.reservation(db, id),
    listReservations: (q) => admin.listReservations(db, q),
    cancelReservation: mapped(async (id) => {
      const r = await admin.reservation(db, id);
      if (r && (r.state === 'ended' || r.state === 'cancelled'))
        throw conflict(`reservation ${id} has already ${r.state === 'ended' ? 'ended' : 'been cancelled'}`);
      await client.cancelReservation(id);
    }),

    listTenants: (scope) => admin.listTenants(db, scope),
    tenant: (path) => admin.tenant(db, path),
    putTenant: (t) => admin.putTenant(db, t),
    listQuotas: (scope, tenant) => admin.listQuotas(db, scope, tenant),
    putQuota: (q) => admin.putQuota(db, q),
    removeQuota: (tenant, type) => admin.removeQuota(db, tenant, type),

    listNodes: (q) => admin.listNodes(db, q),
    node: (name) => admin.node(db, name),
    registerNode: (n) => admin.registerNode(db, region, n),
    putAcceleratorType: (t) => admin.putAcceleratorType(db, t),
    nodeAction: mapped(async (name, action) => {
      if (action === 'down') return admin.markNodeDown(db, name);
      return action === 'cordon' ? client.cordon(name) : action === 'uncordon' ? client.uncordon(name) : client.drain(name);
    }),

    async ready() {
      // The same bounded checks as a worker's /readyz: a hung database or frontend fails the check, not the probe's caller.
      const r = await checkReadiness({ database: databaseProbe(db), temporal: temporalProbe(client.temporal.connection) });
      return { database: r.checks.database === 'ok', temporal: r.checks.temporal === 'ok' };
    },
  };
}

export interface ApiServerOptions {
  db: Kysely<Database>;
  client: SchedulerClient;
  region: string;
  /** SCHED_BOOTSTRAP_ADMIN_KEY: an admin key over every tenant, for a fresh install. */
  bootstrapKey?: string;
  oidc?: OidcConfig;
  limits?: LimitDefaults;
  logger?: FastifyBaseLogger;
}

/** The app of a region, unstarted (`app.inject` in tests; `app.listen` to serve). */
export async function createApiApp(o: ApiServerOptions): Promise<ApiApp> {
  const backend = regionBackend(o);
  const auth = createAuthenticator({ findKey: backend.findApiKey, bootstrapKey: o.bootstrapKey, oidc: o.oidc });
  const app = await buildApiApp({
    backend,
    auth,
    logger: o.logger,
    limits: o.limits,
    fleet: { read: (scope) => readFleet(o.db, scope) },
  });
  mountMetrics(app, o.region, o.db);
  return app;
}

/**
 * Prometheus text at /metrics (public, like /healthz: a scraper holds no key), every response counted
 * and timed by route pattern (not raw URL, so ids do not explode the label set), and the region's
 * queue, utilisation and job-state gauges read from its database at scrape time.
 */
function mountMetrics(app: ApiApp, region: string, db: Kysely<Database>): void {
  app.get(
    '/metrics',
    { config: { public: true }, schema: { tags: ['service'], summary: 'Prometheus metrics (text exposition format)', hide: false } },
    async (_req, reply) => reply.type(METRICS_CONTENT_TYPE).send(await metricsText()),
  );
  app.addHook('onResponse', async (req, reply) => {
    recordHttpRequest(region, `${req.method} ${req.routeOptions.url ?? 'unmatched'}`, reply.statusCode, reply.elapsedTime / 1000);
  });
  const unwatch = watchRegion(region, db);
  app.addHook('onClose', async () => unwatch());
}

/** Builds the app and listens on host:port (port 0: any free one); `url` is where it answers. */
export async function startApiServer(
  o: ApiServerOptions & { host?: string; port?: number },
): Promise<{ app: ApiApp; url: string; close(): Promise<void> }> {
  const app = await createApiApp(o);
  const host = o.host ?? '127.0.0.1';
  await app.listen({ host, port: o.port ?? 0 });
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : o.port;
  return { app, url: `http://${host}:${port}`, close: () => app.close() };
}
