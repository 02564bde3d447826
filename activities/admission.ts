// Admission's I/O: loads the policy rows of a tenant's chain (the `tenants` table, read on every
// admission, so an operator's change applies to the next submission without a restart) and whether
// a waiting job ranks ahead of the new one, in one round trip. The decision is `scheduling/admission`.
import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { Database } from '../db/schema';
import { PREPARED } from '../db/connection';
import type { JobSpec, Placement } from '../api/types';
import { tenantChain } from '../api/tenants';
import { admissionProblems, regionRules, type TenantPolicyRow } from '../scheduling/admission';
import { allowedPeers, handoffPolicy } from '../scheduling/handoff';
import { ErrorTypes, findDomainError, isDomainError } from '../api/errors';
import { QUEUED_REASON, enqueueJob, joinQueue, queueEntry, withdrawSubmitted, type Enqueued, type EnqueueRow } from './jobs';
import { activityLog, type Region } from './region';
import { queueKeySql, rankBaseSql, sqlNumber } from './cycle';
import { DEFAULT_QUEUE_CONFIG, QUEUE_KEY_EPOCH, TIER_RANK, type QueueConfig } from '../scheduling/queue';

/** An admitted job: its queue entry, and its placement when it was placed on admission. */
export interface Admitted extends Enqueued {
  admitted: true;
  placement?: Placement;
  /** Why an immediate placement did not happen, when one was tried. */
  waitingReason?: string;
}

export type AdmissionResult = Admitted | { admitted: false; problems: string[] };

/** Further tries a placement on admission makes when it finds no free candidate (they may be locked). */
export const FAST_PATH_RETRIES = 3;

/**
 * Everything a new job does first, in one step the job workflow runs as a local activity (no
 * task dispatch, no extra workflow task): admission; if admitted, its place in the queue; then,
 * when no waiting job that could use the same accelerator types may rank at or ahead of it in the
 * cycle's queue order (`mayRankAhead`), an immediate placement through the same allocator
 * transaction a scheduling cycle uses (quota, reservations, nominations and all): the next cycle
 * would try it first among the jobs that compete with it, so placing it now overtakes no one.
 * Jobs waiting for other types only are no competitors: a node has one type, and quota and
 * reservations are kept per type. Otherwise, or when it does not fit, it waits for the region
 * scheduler, which this wakes (and which may preempt for it). Idempotent: a retry finds the same
 * queue entry and placement.
 */
export async function admitAndPlace(region: Region, spec: JobSpec, workflowId: string): Promise<AdmissionResult> {
  const { db, allocator } = region;
  const peers = region.peers.names;
  const regions = regionRules(spec, region.name, peers);
  // Whether it can run here at all: the spec allows this region, and some node here could hold it
  // (the allocator's inventory shape, cached: no round trip as a rule).
  let notHere: string | undefined = regions.home
    ? undefined
    : `allowedRegions: ${spec.allowedRegions?.join(', ')} excludes this region (${region.name})`;
  if (!notHere)
    try {
      await allocator.checkRequest(spec.request);
    } catch (err) {
      // Only the allocator's refusal says the job cannot run here. Anything else (the inventory
      // could not be read: a database restart, a lost connection) fails this step, which the
      // workflow retries; taken as a refusal it rejected the job, leaving no row (chaos: lost 2).
      if (!isDomainError(err, ErrorTypes.badRequest)) throw err;
      notHere = (err as Error).message;
    }
  let entry: Enqueued | { admitted: false; problems: string[] };
  let queueAhead: boolean;
  if (!notHere && !regions.problems.length) {
    // The common case in one round trip: the tenant's policy, whether a competitor waits ahead of
    // it, and the job's row as `submitted` (taken back below if the policy refuses the job).
    const context = await admitIntoQueue(db, spec, region.name, workflowId, region.queue);
    const problems = admissionProblems(spec, region.name, context.policy);
    if (problems.length) {
      await withdrawSubmitted(db, spec.jobId, workflowId);
      return { admitted: false, problems };
    }
    // A competitor waits ahead (then it joins the queue below, keeping its position), or none does
    // (then it is placed now, as `submitted`, which concurrent admissions do not take for a queue).
    entry = context.entry;
    queueAhead = context.queueAhead;
    if ('problems' in entry) return entry;
  } else {
    const context = await loadAdmissionContext(db, spec.tenant, region.name, spec.jobId);
    const problems = [...admissionProblems(spec, region.name, context.policy), ...regions.problems];
    if (problems.length) return { admitted: false, problems };
    queueAhead = context.queueAhead;
    if (notHere) {
      // It can only run abroad: admitted to wait for a peer with room, unless no peer may take it.
      if (!handoffPolicy(spec).enabled || !allowedPeers(spec, peers).length) return { admitted: false, problems: [notHere] };
      const reason = `waiting for a peer region with room: ${notHere}`;
      const abroad = await enqueueOrRefuse(() => enqueueJob(db, spec, region.name, workflowId, 'waiting-abroad'));
      if ('problems' in abroad) return abroad;
      return { admitted: true, ...abroad, waitingReason: reason };
    }
    // Someone waits: this job must not overtake them, so it joins the queue for the scheduler.
    // Nobody waits: it is recorded as `submitted`, not `waiting`, while it is placed, so
    // concurrent admissions do not mistake it for a queue to wait behind.
    entry = await enqueueOrRefuse(() => enqueueJob(db, spec, region.name, workflowId, queueAhead ? 'waiting' : 'submitted'));
    if ('problems' in entry) return entry;
  }
  // A retry of this step may find the job already placed: the allocator returns that placement.
  const placedBefore = entry.state === 'placed' || entry.state === 'running';
  if (placedBefore || (!queueAhead && entry.state === 'submitted')) {
    const place = async () => (await allocator.allocateBatch([{ jobId: spec.jobId, epoch: entry.epoch, request: spec.request }]))[0];
    let tried = await place();
    // Candidates are read with SKIP LOCKED: while other placements hold a type's fitting nodes
    // (a cycle's batch, concurrent admissions), this one may see none. That is contention,
    // not a full region, so try again shortly before joining the queue — a job queued here
    // sends every later arrival to the queue behind it.
    for (let retry = 0; retry < FAST_PATH_RETRIES && tried.result?.placed === false && tried.result.blockedBy === 'capacity'; retry++) {
      await new Promise((r) => setTimeout(r, 10 + Math.random() * 30 * (retry + 1)));
      tried = await place();
    }
    if (tried.result?.placed) {
      activityLog().info('job placed', {
        jobId: spec.jobId,
        epoch: entry.epoch,
        event: 'admission.placed',
        nodes: tried.result.placement.workers.map((w) => w.nodeName),
      });
      return { admitted: true, ...entry, state: 'placed', placement: tried.result.placement };
    }
    const reason = tried.result?.placed === false ? tried.result.reason : (tried.error ?? QUEUED_REASON);
    await joinQueue(db, spec.jobId, reason);
    await region.kick();
    return { admitted: true, ...entry, state: 'waiting', waitingReason: reason };
  }
  await joinQueue(db, spec.jobId, QUEUED_REASON); // a retry may find it mid-admission (`submitted`)
  await region.kick();
  return { admitted: true, ...entry, state: entry.state === 'submitted' ? 'waiting' : entry.state };
}

/**
 * The queue entry, or a refusal when the job id is taken (`JobIdTaken`, non-retryable: another
 * tenant's job holds it, or the job has ended). Refused like any other admission problem, so the
 * job ends `rejected` with the reason in its result and its `WaitingReason`, holding nothing.
 */
async function enqueueOrRefuse(enqueue: () => Promise<Enqueued>): Promise<Enqueued | { admitted: false; problems: string[] }> {
  try {
    return await enqueue();
  } catch (err) {
    const taken = findDomainError(err, ErrorTypes.jobIdTaken);
    if (taken) return { admitted: false, problems: [taken.message] };
    throw err;
  }
}

/**
 * What an admission decides on, in one round trip: the tenant chain's policy rows, and whether
 * anyone other than `jobId` waits in `region` (then the job must queue behind them rather than be
 * placed on admission).
 */
export async function loadAdmissionContext(
  db: Kysely<Database>,
  tenant: string,
  region: string,
  jobId: string,
): Promise<{ policy: TenantPolicyRow[]; queueAhead: boolean }> {
  // Prepared: a small table by key and a partial index by region, so the generic plan is the custom one.
  const r = await sql<{ policy: TenantPolicyRow[]; queue_ahead: boolean }>`${sql.raw(PREPARED)}
    SELECT
      coalesce((SELECT json_agg(json_build_object('path', path, 'active', active, 'allowed_tiers', allowed_tiers,
          'allowed_types', allowed_types, 'max_devices_per_job', max_devices_per_job))
        FROM tenants WHERE path = ANY(${tenantChain(tenant)}::text[])), '[]') AS policy,
      EXISTS (SELECT 1 FROM jobs WHERE region = ${region} AND state = 'waiting' AND id <> ${jobId}) AS queue_ahead`.execute(db);
  return { policy: r.rows[0].policy, queueAhead: r.rows[0].queue_ahead };
}

/**
 * Admission's reads and the job's queue entry in one statement: the tenant chain's policy rows,
 * whether a waiting job of `region` ranks ahead of the job on a type it could use
 * (`rankedAheadSql`, judged at the job's queue position), and the job's row, inserted as
 * `submitted` (invisible to cycles and to other admissions' queue check) or, on a retry, the row
 * already there. Nothing is inserted for an unknown tenant (the policy then refuses the job). The
 * entry is a refusal when the id is another job's, or an ended one's.
 */
export async function admitIntoQueue(
  db: Kysely<Database>,
  spec: JobSpec,
  region: string,
  workflowId: string,
  cfg: QueueConfig = DEFAULT_QUEUE_CONFIG,
): Promise<{ policy: TenantPolicyRow[]; queueAhead: boolean; entry: Enqueued | { admitted: false; problems: string[] } }> {
  // Prepared: small tables by key and partial indexes by region, so the generic plan is the custom one.
  const r = await sql<{ policy: TenantPolicyRow[]; queue_ahead: boolean } & Partial<EnqueueRow>>`${sql.raw(PREPARED)}
    WITH ins AS (
      INSERT INTO jobs (id, tenant, tier, priority, region, workflow_id, spec, state, epoch, waiting_reason)
      SELECT ${spec.jobId}, ${spec.tenant}, ${spec.tier}, ${spec.priority ?? 0}, ${region}, ${workflowId}, ${JSON.stringify(spec)}::jsonb,
             'submitted', 1, NULL
      WHERE EXISTS (SELECT 1 FROM tenants WHERE path = ${spec.tenant})
      ON CONFLICT (id) DO NOTHING
      RETURNING epoch, state, enqueued_at, workflow_id),
    entry AS (
      SELECT * FROM ins
      UNION ALL
      SELECT epoch, state, enqueued_at, workflow_id FROM jobs WHERE id = ${spec.jobId} AND NOT EXISTS (SELECT 1 FROM ins))
    SELECT
      coalesce((SELECT json_agg(json_build_object('path', path, 'active', active, 'allowed_tiers', allowed_tiers,
          'allowed_types', allowed_types, 'max_devices_per_job', max_devices_per_job))
        FROM tenants WHERE path = ANY(${tenantChain(spec.tenant)}::text[])), '[]') AS policy,
      ${rankedAheadSql(region, spec, sql`coalesce(e.enqueued_at, now())`, cfg)} AS queue_ahead,
      e.epoch, e.state, e.enqueued_at, e.workflow_id
    FROM (SELECT 1) one LEFT JOIN entry e ON true`.execute(db);
  const row = r.rows[0];
  const policy = row.policy;
  const queueAhead = row.queue_ahead;
  if (row.workflow_id === undefined || row.workflow_id === null) {
    // No row: an unknown tenant (refused by the policy, nothing to take back), or one another
    // transaction inserted after this statement's snapshot (it waited for it: a fresh read sees it).
    if (!policy.some((p) => p.path === spec.tenant))
      return { policy, queueAhead, entry: { admitted: false, problems: [`tenant: ${spec.tenant} is not registered`] } };
    return { policy, queueAhead, entry: await enqueueOrRefuse(() => enqueueJob(db, spec, region, workflowId, 'submitted')) };
  }
  return { policy, queueAhead, entry: await enqueueOrRefuse(async () => queueEntry(row as EnqueueRow, spec, region, workflowId)) };
}

/**
 * Whether a job of `region` other than `arrival` waits that may rank at or ahead of it
 * (scheduling/queue.ts `mayRankAhead`, the same rule written in SQL) and could use one of its
 * accelerator types, were `arrival` queued at `enqueuedAt`. Bounded by the rank index
 * (`jobs_queue_rank`, with the default settings): only waiting jobs whose queue key is at most one
 * aging step (and a point, for rounding) below the arrival's can rank ahead of it, so the index is
 * read from the head of the queue down to there and no further.
 */
export function rankedAheadSql(
  region: string,
  arrival: Pick<JobSpec, 'jobId' | 'tier' | 'priority' | 'request'>,
  enqueuedAt: RawBuilder<Date>,
  cfg: QueueConfig = DEFAULT_QUEUE_CONFIG,
): RawBuilder<boolean> {
  const base = TIER_RANK[arrival.tier] * cfg.tierWeight + (arrival.priority ?? 0);
  const step = sqlNumber('agingStep', cfg.agingStep);
  const interval = sqlNumber('agingIntervalMs', cfg.agingIntervalMs);
  const keyEpoch = new Date(QUEUE_KEY_EPOCH).toISOString();
  return sql<boolean>`EXISTS (SELECT 1 FROM jobs
      WHERE region = ${region} AND state = 'waiting' AND id <> ${arrival.jobId}
        AND ${queueKeySql(cfg)} >= ${base}::float8
          - date_part('epoch', ${enqueuedAt} - TIMESTAMPTZ '${sql.raw(keyEpoch)}') * ${sql.raw(sqlNumber('agingStep × 1000', cfg.agingStep * 1000))} / ${sql.raw(interval)}
          - ${sql.raw(step)} - 1
        AND ${rankBaseSql(cfg)} - ${base}::float8
          + ${sql.raw(step)} * ceil(date_part('epoch', ${enqueuedAt} - enqueued_at) * 1000 / ${sql.raw(interval)}) >= 0
        AND (spec->'request'->'acceleratorTypes') ?| ${arrival.request.acceleratorTypes}::text[])`;
}
