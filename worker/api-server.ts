// The HTTP API wired to a region: the backend (api/http/backend.ts) over the region's database
// (activities/admin.ts) and its Temporal namespace (the typed SchedulerClient, which follows
// handoffs), and `startApiServer` to build and listen. Used by the process entry point
// (worker/api-main.ts), the tests and the benchmark alike.
import { WorkflowNotFoundError } from '@temporalio/client';
import type { Kysely } from 'kysely';
import { sql } from 'kysely';
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
      const database = await sql`SELECT 1`.execute(db).then(
        () => true,
        () => false,
      );
      const temporal = await client.temporal.workflowService.getSystemInfo({}).then(
        () => true,
        () => false,
      );
      return { database, temporal };
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
  return buildApiApp({ backend, auth, logger: o.logger, limits: o.limits });
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
