// The database side of the HTTP API (api/http/backend.ts): API keys, the audit log, tenants with
// their policies and limits, quota rules, node registration, the submissions ledger that makes
// submits idempotent, and the job and reservation listings. Refusals are ApiErrors naming the
// field and the rule; what the API reads of a tenant subtree is filtered here in SQL.
import { sql, type Kysely } from 'kysely';
import type { Database, NodeState } from '../db/schema';
import { descendantsLikePattern, tenantChain } from '../api/tenants';
import { ApiError, badInput, conflict } from '../api/http/errors';
import type { StoredKey } from '../api/http/auth';
import type { AuditRecord, JobFilter, Page, QuotaChange, SubmissionClaim, TenantChange } from '../api/http/backend';
import type { LimitRow } from '../api/http/limits';
import type {
  AcceleratorTypeBody,
  ApiKeyView,
  AuditEntryView,
  JobSummary,
  NodeBody,
  NodeView,
  QuotaView,
  ReservationView,
  Role,
  TenantView,
} from '../api/http/schemas';
import { validateQuotaRules, type QuotaRule } from '../scheduling/quota';
import { jobsOnNode } from './jobs';

const ALL = '*';
/** States of a job not yet placed nor ended: what counts against a tenant's queued-jobs limit. */
export const QUEUED_STATES = ['submitted', 'waiting', 'waiting-abroad', 'handing-off', 'pending'] as const;

/** `column` within the subtree `scope` (`*`: every row). */
function inScope(scope: string, column: string) {
  return scope === ALL
    ? sql<boolean>`true`
    : sql<boolean>`(${sql.ref(column)} = ${scope} OR ${sql.ref(column)} LIKE ${descendantsLikePattern(scope)})`;
}

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

// --- API keys --------------------------------------------------------------------------------
type KeyRow = { id: string; name: string; tenant: string; role: Role; created_by: string; created_at: Date; revoked_at: Date | null };
const keyView = (r: KeyRow): ApiKeyView => ({
  id: r.id,
  name: r.name,
  tenant: r.tenant,
  role: r.role,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  revokedAt: iso(r.revoked_at),
});
const KEY_COLUMNS = ['id', 'name', 'tenant', 'role', 'created_by', 'created_at', 'revoked_at'] as const;

export async function findApiKey(db: Kysely<Database>, id: string): Promise<StoredKey | undefined> {
  const r = await db
    .selectFrom('api_keys')
    .select(['id', 'tenant', 'role', 'secret_sha256', 'revoked_at'])
    .where('id', '=', id)
    .executeTakeFirst();
  return r && { id: r.id, tenant: r.tenant, role: r.role, sha256: r.secret_sha256, revoked: r.revoked_at !== null };
}

export async function createApiKey(
  db: Kysely<Database>,
  k: { id: string; name: string; tenant: string; role: Role; sha256: string; createdBy: string },
): Promise<ApiKeyView> {
  const r = await db
    .insertInto('api_keys')
    .values({ id: k.id, name: k.name, tenant: k.tenant, role: k.role, secret_sha256: k.sha256, created_by: k.createdBy })
    .returning(KEY_COLUMNS)
    .executeTakeFirstOrThrow();
  return keyView(r);
}

/** Keys bound within `scope` (an admin over `*` sees every key). */
export async function listApiKeys(db: Kysely<Database>, scope: string): Promise<ApiKeyView[]> {
  const rows = await db.selectFrom('api_keys').select(KEY_COLUMNS).where(inScope(scope, 'tenant')).orderBy('created_at').execute();
  return rows.map(keyView);
}

export async function revokeApiKey(db: Kysely<Database>, id: string, by: string): Promise<ApiKeyView | undefined> {
  const r = await db
    .updateTable('api_keys')
    .set({ revoked_at: sql<Date>`coalesce(revoked_at, now())`, revoked_by: sql<string>`coalesce(revoked_by, ${by})` })
    .where('id', '=', id)
    .returning(KEY_COLUMNS)
    .executeTakeFirst();
  return r && keyView(r);
}

// --- audit -------------------------------------------------------------------------------------
export async function writeAudit(db: Kysely<Database>, e: AuditRecord): Promise<void> {
  await db
    .insertInto('audit_log')
    .values({
      actor: e.actor,
      actor_kind: e.actorKind,
      role: e.role,
      action: e.action,
      target: e.target,
      tenant: e.tenant,
      reason: e.reason,
      outcome: e.outcome,
      detail: e.detail ?? null,
      request: JSON.stringify(e.request),
    })
    .execute();
}

/** Audit rows newest first; a caller bound to a subtree sees the rows about tenants in it. */
export async function listAudit(
  db: Kysely<Database>,
  q: { scope: string; tenant?: string; action?: string; limit: number; cursor?: string },
): Promise<Page<AuditEntryView>> {
  let before: string | undefined;
  if (q.cursor !== undefined) {
    const text = Buffer.from(q.cursor, 'base64url').toString('utf8');
    if (!/^\d{1,18}$/.test(text)) throw badInput([{ field: 'cursor', rule: "must be a previous page's nextCursor, unchanged" }]);
    before = text;
  }
  let query = db
    .selectFrom('audit_log')
    .selectAll()
    .orderBy('id', 'desc')
    .limit(q.limit + 1);
  if (q.scope !== ALL) query = query.where(inScope(q.scope, 'tenant'));
  if (q.tenant) query = query.where(inScope(q.tenant, 'tenant'));
  if (q.action) query = query.where('action', '=', q.action);
  if (before) query = query.where('id', '<', before);
  const rows = await query.execute();
  const page = rows.slice(0, q.limit);
  return {
    rows: page.map((r) => ({
      id: String(r.id),
      at: r.at.toISOString(),
      actor: r.actor,
      actorKind: r.actor_kind,
      role: r.role,
      action: r.action,
      target: r.target,
      tenant: r.tenant,
      reason: r.reason,
      outcome: r.outcome,
      detail: r.detail,
    })),
    ...(rows.length > q.limit ? { nextCursor: Buffer.from(String(page[page.length - 1].id)).toString('base64url') } : {}),
  };
}

// --- submissions and limits ----------------------------------------------------------------------
export async function limitRows(db: Kysely<Database>, tenant: string): Promise<LimitRow[]> {
  const rows = await db.selectFrom('tenant_limits').selectAll().where('tenant', 'in', tenantChain(tenant)).execute();
  return rows.map((r) => ({
    tenant: r.tenant,
    maxQueuedJobs: r.max_queued_jobs,
    submitPerSecond: r.submit_per_second,
    submitBurst: r.submit_burst,
  }));
}

export async function queuedJobs(db: Kysely<Database>, scope: string): Promise<number> {
  const r = await db
    .selectFrom('jobs')
    .select((eb) => eb.fn.countAll<string>().as('n'))
    .where('state', 'in', [...QUEUED_STATES])
    .where(inScope(scope, 'tenant'))
    .executeTakeFirstOrThrow();
  return Number(r.n);
}

/** Records the first submission of a job id, atomically; a second one learns how it compares. */
export async function claimSubmission(
  db: Kysely<Database>,
  c: { jobId: string; tenant: string; sha256: string; by: string },
): Promise<SubmissionClaim> {
  const inserted = await db
    .insertInto('api_submissions')
    .values({ job_id: c.jobId, tenant: c.tenant, spec_sha256: c.sha256, submitted_by: c.by })
    .onConflict((oc) => oc.column('job_id').doNothing())
    .returning('job_id')
    .executeTakeFirst();
  if (inserted) {
    // A job id used outside the API (the SDK) is another job's unless it is this tenant's.
    const row = await db.selectFrom('jobs').select('tenant').where('id', '=', c.jobId).executeTakeFirst();
    if (row && row.tenant !== c.tenant) {
      await dropClaim(db, c.jobId, c.sha256);
      return { other: 'tenant' };
    }
    return 'new';
  }
  const had = await db
    .selectFrom('api_submissions')
    .select(['tenant', 'spec_sha256'])
    .where('job_id', '=', c.jobId)
    .executeTakeFirstOrThrow();
  if (had.tenant !== c.tenant) return { other: 'tenant' };
  return had.spec_sha256 === c.sha256 ? 'same' : { other: 'spec' };
}

export async function dropClaim(db: Kysely<Database>, jobId: string, sha256: string): Promise<void> {
  await db.deleteFrom('api_submissions').where('job_id', '=', jobId).where('spec_sha256', '=', sha256).execute();
}

export async function replaceClaim(db: Kysely<Database>, jobId: string, sha256: string): Promise<void> {
  await db.updateTable('api_submissions').set({ spec_sha256: sha256 }).where('job_id', '=', jobId).execute();
}

// --- jobs ----------------------------------------------------------------------------------------
export async function jobTenant(db: Kysely<Database>, jobId: string): Promise<string | undefined> {
  const row =
    (await db.selectFrom('jobs').select('tenant').where('id', '=', jobId).executeTakeFirst()) ??
    (await db.selectFrom('api_submissions').select('tenant').where('job_id', '=', jobId).executeTakeFirst());
  return row?.tenant;
}

const jobColumns = sql<string>`j.id, j.tenant, j.state, j.tier, j.priority, j.epoch, j.waiting_reason,
  CASE WHEN j.state = 'handed-off' AND j.handoff_peer IS NOT NULL THEN j.handoff_peer ELSE j.region END AS at_region,
  coalesce(j.spec->'request'->'acceleratorTypes', '[]'::jsonb) AS types,
  to_char(j.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created,
  to_char(j.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated`;

interface JobListRow {
  id: string;
  tenant: string;
  state: string;
  tier: string;
  priority: number;
  epoch: number;
  waiting_reason: string | null;
  at_region: string;
  types: string[];
  created: string;
  updated: string;
}

const jobSummaryOf = (r: JobListRow): JobSummary => ({
  jobId: r.id,
  tenant: r.tenant,
  state: r.state,
  tier: r.tier,
  priority: r.priority,
  region: r.at_region,
  acceleratorTypes: Array.isArray(r.types) ? r.types.map(String) : [],
  epoch: r.epoch,
  waitingReason: r.waiting_reason,
  createdAt: r.created,
  updatedAt: r.updated,
});

export async function jobSummary(db: Kysely<Database>, jobId: string): Promise<JobSummary | undefined> {
  const r = await sql<JobListRow>`SELECT ${jobColumns} FROM jobs j WHERE j.id = ${jobId}`.execute(db);
  return r.rows[0] && jobSummaryOf(r.rows[0]);
}

/** A subtree's jobs, newest first, `limit` at a time after the cursor's (createdAt, id). */
export async function listJobs(db: Kysely<Database>, f: JobFilter): Promise<Page<JobSummary>> {
  const where = [sql`true`];
  const subtree = (t: string) => sql`(j.tenant = ${t} OR j.tenant LIKE ${descendantsLikePattern(t)})`;
  if (f.scope !== ALL) where.push(subtree(f.scope));
  if (f.tenant) where.push(subtree(f.tenant));
  if (f.state) where.push(sql`j.state = ${f.state}`);
  if (f.tier) where.push(sql`j.tier = ${f.tier}`);
  if (f.acceleratorType) where.push(sql`j.spec->'request'->'acceleratorTypes' ? ${f.acceleratorType}`);
  if (f.region)
    where.push(sql`CASE WHEN j.state = 'handed-off' AND j.handoff_peer IS NOT NULL THEN j.handoff_peer ELSE j.region END = ${f.region}`);
  if (f.cursor) where.push(sql`(j.created_at, j.id) < (${f.cursor.createdAt}::timestamptz, ${f.cursor.id})`);
  const r = await sql<JobListRow>`
    SELECT ${jobColumns} FROM jobs j WHERE ${sql.join(where, sql` AND `)}
    ORDER BY j.created_at DESC, j.id DESC LIMIT ${f.limit + 1}`.execute(db);
  const rows = r.rows.slice(0, f.limit).map(jobSummaryOf);
  const last = rows[rows.length - 1];
  return {
    rows,
    ...(r.rows.length > f.limit && last
      ? { nextCursor: Buffer.from(JSON.stringify([last.createdAt, last.jobId])).toString('base64url') }
      : {}),
  };
}

// --- reservations --------------------------------------------------------------------------------
const reservationView = (r: {
  id: string;
  tenant: string;
  accelerator_type: string;
  devices: number;
  starts_at: Date;
  ends_at: Date;
  state: string;
}): ReservationView => ({
  id: r.id,
  tenant: r.tenant,
  acceleratorType: r.accelerator_type,
  devices: r.devices,
  startsAt: r.starts_at.toISOString(),
  endsAt: r.ends_at.toISOString(),
  state: r.state,
});

export async function reservation(db: Kysely<Database>, id: string): Promise<ReservationView | undefined> {
  const r = await db.selectFrom('reservations').selectAll().where('id', '=', id).executeTakeFirst();
  return r && reservationView(r);
}

export async function listReservations(
  db: Kysely<Database>,
  q: { scope: string; tenant?: string; state?: string },
): Promise<ReservationView[]> {
  let query = db.selectFrom('reservations').selectAll().where(inScope(q.scope, 'tenant')).orderBy('starts_at');
  if (q.tenant) query = query.where(inScope(q.tenant, 'tenant'));
  if (q.state) query = query.where('state', '=', q.state as never);
  return (await query.execute()).map(reservationView);
}

// --- tenants -------------------------------------------------------------------------------------
export async function listTenants(db: Kysely<Database>, scope: string, only?: string): Promise<TenantView[]> {
  let q = db
    .selectFrom('tenants as t')
    .leftJoin('tenant_limits as l', 'l.tenant', 't.path')
    .select([
      't.path',
      't.parent',
      't.active',
      't.allowed_tiers',
      't.allowed_types',
      't.max_devices_per_job',
      'l.max_queued_jobs',
      'l.submit_per_second',
      'l.submit_burst',
    ])
    .where(inScope(scope, 't.path'))
    .orderBy('t.path');
  if (only !== undefined) q = q.where('t.path', '=', only);
  const rows = await q.execute();
  return rows.map((r) => ({
    path: r.path,
    parent: r.parent,
    active: r.active,
    allowedTiers: r.allowed_tiers,
    allowedTypes: r.allowed_types,
    maxDevicesPerJob: r.max_devices_per_job,
    limits: { maxQueuedJobs: r.max_queued_jobs ?? null, submitPerSecond: r.submit_per_second ?? null, submitBurst: r.submit_burst ?? null },
  }));
}

export async function tenant(db: Kysely<Database>, path: string): Promise<TenantView | undefined> {
  return (await listTenants(db, ALL, path))[0];
}

/** Creates or changes a tenant and its limits in one transaction; fields not given keep their value. */
export async function putTenant(db: Kysely<Database>, t: TenantChange): Promise<TenantView> {
  await db.transaction().execute(async (trx) => {
    const policy = {
      ...(t.active !== undefined ? { active: t.active } : {}),
      ...(t.allowedTiers !== undefined ? { allowed_tiers: t.allowedTiers } : {}),
      ...(t.allowedTypes !== undefined ? { allowed_types: t.allowedTypes } : {}),
      ...(t.maxDevicesPerJob !== undefined ? { max_devices_per_job: t.maxDevicesPerJob } : {}),
    };
    const parent = t.path.includes('/') ? t.path.slice(0, t.path.lastIndexOf('/')) : null;
    await trx
      .insertInto('tenants')
      .values({ path: t.path, parent, allowed_tiers: null, allowed_types: null, max_devices_per_job: null, ...policy })
      .onConflict((oc) => oc.column('path').doUpdateSet({ ...policy, updated_at: new Date() }))
      .execute();
    if (t.limits && Object.keys(t.limits).length) {
      const l = {
        ...(t.limits.maxQueuedJobs !== undefined ? { max_queued_jobs: t.limits.maxQueuedJobs } : {}),
        ...(t.limits.submitPerSecond !== undefined ? { submit_per_second: t.limits.submitPerSecond } : {}),
        ...(t.limits.submitBurst !== undefined ? { submit_burst: t.limits.submitBurst } : {}),
      };
      await trx
        .insertInto('tenant_limits')
        .values({ tenant: t.path, max_queued_jobs: null, submit_per_second: null, submit_burst: null, ...l })
        .onConflict((oc) => oc.column('tenant').doUpdateSet({ ...l, updated_at: new Date() }))
        .execute();
    }
  });
  return (await tenant(db, t.path))!;
}

// --- quotas --------------------------------------------------------------------------------------
export async function listQuotas(db: Kysely<Database>, scope: string, only?: string): Promise<QuotaView[]> {
  let q = db.selectFrom('quotas').selectAll().where(inScope(scope, 'tenant')).orderBy('tenant').orderBy('accelerator_type');
  if (only) q = q.where(inScope(only, 'tenant'));
  return (await q.execute()).map((r) => ({
    tenant: r.tenant,
    acceleratorType: r.accelerator_type,
    nominal: r.nominal,
    borrowingLimit: r.borrowing_limit,
    lendingLimit: r.lending_limit,
    usedDevices: Number(r.used_milli) / 1000,
  }));
}

/**
 * Stores a quota rule once the quota validation (scheduling/quota.ts) accepts it beside every
 * other rule. Inserting fires the usage recount (migration 0009); a changed rule is recounted here
 * too, so the rule starts true to what the subtree holds. One transaction: refused, nothing changes.
 */
export async function putQuota(db: Kysely<Database>, q: QuotaChange): Promise<QuotaView> {
  await db.transaction().execute(async (trx) => {
    const problems = [];
    if (!(await trx.selectFrom('tenants').select('path').where('path', '=', q.tenant).executeTakeFirst()))
      problems.push({ field: 'tenant', rule: `${q.tenant} is not a registered tenant` });
    if (!(await trx.selectFrom('accelerator_types').select('name').where('name', '=', q.acceleratorType).executeTakeFirst()))
      problems.push({ field: 'acceleratorType', rule: `${q.acceleratorType} is not a known accelerator type` });
    if (problems.length) throw badInput(problems);
    const others = await trx.selectFrom('quotas').selectAll().execute();
    const rules: QuotaRule[] = [
      ...others
        .filter((r) => !(r.tenant === q.tenant && r.accelerator_type === q.acceleratorType))
        .map((r) => ({
          tenant: r.tenant,
          acceleratorType: r.accelerator_type,
          nominal: r.nominal,
          borrowingLimit: r.borrowing_limit,
          lendingLimit: r.lending_limit,
        })),
      q,
    ];
    try {
      validateQuotaRules(rules);
    } catch (err) {
      throw badInput([{ field: 'quota', rule: (err as Error).message }]);
    }
    const values = { nominal: q.nominal, borrowing_limit: q.borrowingLimit, lending_limit: q.lendingLimit };
    await trx
      .insertInto('quotas')
      .values({ tenant: q.tenant, accelerator_type: q.acceleratorType, ...values })
      .onConflict((oc) => oc.columns(['tenant', 'accelerator_type']).doUpdateSet(values))
      .execute();
    await sql`SELECT recompute_quota_usage()`.execute(trx);
  });
  return (await listQuotas(db, q.tenant)).find((r) => r.tenant === q.tenant && r.acceleratorType === q.acceleratorType)!;
}

export async function removeQuota(db: Kysely<Database>, tenantPath: string, acceleratorType: string): Promise<boolean> {
  const r = await db
    .deleteFrom('quotas')
    .where('tenant', '=', tenantPath)
    .where('accelerator_type', '=', acceleratorType)
    .executeTakeFirst();
  return r.numDeletedRows > 0n;
}

// --- nodes ---------------------------------------------------------------------------------------
const nodeQuery = (db: Kysely<Database>) =>
  db
    .selectFrom('nodes as n')
    .innerJoin('clusters as c', 'c.id', 'n.cluster_id')
    .select([
      'n.name',
      'c.name as cluster',
      'n.accelerator_type',
      'n.state',
      'n.device_count',
      'n.free_whole',
      'n.pod',
      'n.rack',
      'n.labels',
    ]);

type NodeRowOut = Awaited<ReturnType<ReturnType<typeof nodeQuery>['execute']>>[number];
const nodeView = (r: NodeRowOut): NodeView => ({
  name: r.name,
  cluster: r.cluster,
  acceleratorType: r.accelerator_type,
  state: r.state,
  deviceCount: r.device_count,
  freeDevices: r.free_whole,
  pod: r.pod,
  rack: r.rack,
  labels: r.labels ?? {},
});

export async function listNodes(db: Kysely<Database>, q: { state?: string; acceleratorType?: string }): Promise<NodeView[]> {
  let query = nodeQuery(db).orderBy('n.name');
  if (q.state) query = query.where('n.state', '=', q.state as NodeState);
  if (q.acceleratorType) query = query.where('n.accelerator_type', '=', q.acceleratorType);
  return (await query.execute()).map(nodeView);
}

export async function node(db: Kysely<Database>, name: string): Promise<NodeView | undefined> {
  const r = await nodeQuery(db).where('n.name', '=', name).executeTakeFirst();
  return r && nodeView(r);
}

export async function putAcceleratorType(db: Kysely<Database>, t: Omit<AcceleratorTypeBody, 'reason'>): Promise<void> {
  const values = { family: t.family, model: t.model, memory_mib: t.memoryMib };
  await db
    .insertInto('accelerator_types')
    .values({ name: t.name, ...values })
    .onConflict((oc) => oc.column('name').doUpdateSet(values))
    .execute();
}

/** Registers a node (and its cluster, in this region); the same node again is no change, another shape under its name a conflict. */
export async function registerNode(
  db: Kysely<Database>,
  region: string,
  n: Omit<NodeBody, 'reason'>,
): Promise<{ node: NodeView; created: boolean }> {
  const created = await db.transaction().execute(async (trx) => {
    if (!(await trx.selectFrom('accelerator_types').select('name').where('name', '=', n.acceleratorType).executeTakeFirst()))
      throw badInput([
        {
          field: 'acceleratorType',
          rule: `${n.acceleratorType} is not a known accelerator type: declare it first (PUT /v1/accelerator-types)`,
        },
      ]);
    await trx
      .insertInto('clusters')
      .values({ region, provider: n.provider ?? 'owned', name: n.cluster })
      .onConflict((oc) => oc.columns(['region', 'name']).doNothing())
      .execute();
    const cluster = await trx
      .selectFrom('clusters')
      .select('id')
      .where('region', '=', region)
      .where('name', '=', n.cluster)
      .executeTakeFirstOrThrow();
    const inserted = await trx
      .insertInto('nodes')
      .values({
        cluster_id: cluster.id,
        name: n.name,
        accelerator_type: n.acceleratorType,
        device_count: n.deviceCount,
        pod: n.pod,
        rack: n.rack,
        labels: JSON.stringify(n.labels ?? {}),
        cpu_milli: n.cpuMilli ?? null,
        memory_mib: n.memoryMib ?? null,
      })
      .onConflict((oc) => oc.column('name').doNothing())
      .returning('id')
      .executeTakeFirst();
    if (inserted) return true;
    const had = await trx
      .selectFrom('nodes')
      .select(['cluster_id', 'accelerator_type', 'device_count', 'pod', 'rack'])
      .where('name', '=', n.name)
      .executeTakeFirstOrThrow();
    if (
      had.cluster_id !== cluster.id ||
      had.accelerator_type !== n.acceleratorType ||
      had.device_count !== n.deviceCount ||
      had.pod !== n.pod ||
      had.rack !== n.rack
    )
      throw conflict(
        `node ${n.name} is registered with another shape (${had.device_count}×${had.accelerator_type} in ${had.pod}/${had.rack})`,
      );
    return false;
  });
  return { node: (await node(db, n.name))!, created };
}

/**
 * Marks a node down: the node-loss path. Each job running there sees it at its next observation
 * (activities/executor.ts: the run is `lost`) and is requeued with its queue position kept; nothing
 * new is placed on it. Returns the jobs on it (which their runs requeue).
 */
export async function markNodeDown(db: Kysely<Database>, name: string): Promise<{ node: string; state: string; requeued: string[] }> {
  const r = await db.updateTable('nodes').set({ state: 'down' }).where('name', '=', name).returning('id').executeTakeFirst();
  if (!r) throw new ApiError('not-found', `node ${name} is not registered`);
  const jobs = await jobsOnNode(db, r.id);
  return { node: name, state: 'down', requeued: jobs.map((j) => j.id) };
}
