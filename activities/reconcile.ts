// The reconciler's I/O: finds what a job workflow that ended without its cleanup left behind
// (terminated, reset, or ended at the server's history limit: release only runs in the
// workflow's own `finally`) and releases it. A row is suspect when its job is not finished and
// its workflow is not among the running ones the server lists; a suspect is released only after
// the server confirms, for that one workflow id, that it is closed or unknown. Rows touched
// within the grace period are left alone (their workflow may be starting). Nominations expire,
// and quota usage that drifted from what holds devices is rebuilt (db/migrations/0009).
import { sql } from 'kysely';
import { WorkflowNotFoundError } from '@temporalio/client';
import type { StoredJobState } from '../api/types';
import type { ReleaseResult } from './allocator';
import { activityLog, type Region } from './region';

/** Rows touched this recently are not looked at: their workflow may still be starting. */
export const RECONCILE_GRACE_MS = 60_000;
/** Capacity nominated to a preemptor is kept for it at most this long. */
export const NOMINATION_TTL_MS = 15 * 60_000;
/** Most suspects confirmed and released in one pass. */
export const RECONCILE_BATCH = 200;

export interface ReconcileOptions {
  graceMs?: number;
  nominationTtlMs?: number;
  batch?: number;
}

export interface ReconcileReport {
  /** Unfinished job rows older than the grace period. */
  checked: number;
  /** Rows whose workflow the server listed as running. */
  live: number;
  /** Jobs released: their workflow was closed or unknown. */
  released: Array<{ jobId: string; epoch: number; state: string; why: string }>;
  /** Nominations dropped: older than the TTL, or kept for a job no longer waiting. */
  nominationsDropped: number;
  /** Quota rules whose usage disagreed with what holds devices, rebuilt. */
  quotaRulesRepaired: number;
}

const UNFINISHED: StoredJobState[] = [
  'submitted',
  'waiting',
  'waiting-abroad',
  'pending',
  'handing-off',
  'handed-off',
  'placed',
  'running',
];

/** The ids of the region's running job workflows, as the server lists them. */
async function runningJobWorkflows(region: Region): Promise<Set<string>> {
  const ids = new Set<string>();
  for await (const w of region.client.workflow.list({ query: `WorkflowType = 'JobWorkflow' AND ExecutionStatus = 'Running'` }))
    ids.add(w.workflowId);
  return ids;
}

/** How the workflow stands, confirmed by id: undefined while it runs. */
async function closedStatus(region: Pick<Region, 'client'>, workflowId: string): Promise<string | undefined> {
  try {
    const d = await region.client.workflow.getHandle(workflowId).describe();
    return d.status.name === 'RUNNING' ? undefined : d.status.name.toLowerCase().replace('_', ' ');
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return 'not found';
    throw err;
  }
}

/**
 * Ends a job whose workflow has ended without releasing it: `failed` with `why`, its devices and
 * quota given back and, when it may have been launched, its run stopped (best effort: it may be
 * gone). Undefined when its row has moved on meanwhile (a newer epoch: someone runs it).
 */
export async function releaseEndedJob(
  region: Region,
  jobId: string,
  epoch: number,
  why: string,
  launched: boolean,
): Promise<ReleaseResult | undefined> {
  let result: ReleaseResult;
  try {
    result = await region.allocator.finish(jobId, epoch, 'failed', why);
  } catch (err) {
    activityLog().warn('release of an ended job skipped', { jobId, epoch, event: 'release-ended.skipped', error: (err as Error).message });
    return undefined;
  }
  if (launched) await region.executor.stop(jobId, epoch, why).catch(() => undefined);
  return result;
}

/** One pass: releases the jobs whose workflow is gone and drops stale nominations. */
export async function reconcileRegion(region: Region, o: ReconcileOptions = {}): Promise<ReconcileReport> {
  const graceMs = o.graceMs ?? RECONCILE_GRACE_MS;
  const log = activityLog();
  const rows = await region.db
    .selectFrom('jobs')
    .select(['id', 'epoch', 'state', 'workflow_id'])
    .where('state', 'in', UNFINISHED)
    .where('updated_at', '<', new Date(Date.now() - graceMs))
    .orderBy('updated_at')
    .execute();
  const report: ReconcileReport = { checked: rows.length, live: 0, released: [], nominationsDropped: 0, quotaRulesRepaired: 0 };
  if (rows.length) {
    const running = await runningJobWorkflows(region);
    const suspects = rows.filter((r) => !running.has(r.workflow_id));
    report.live = rows.length - suspects.length;
    for (const r of suspects.slice(0, o.batch ?? RECONCILE_BATCH)) {
      const closed = await closedStatus(region, r.workflow_id);
      if (closed === undefined) continue;
      const why = `its workflow ${r.workflow_id} is ${closed} and never released the job (released by the reconciler)`;
      const result = await releaseEndedJob(region, r.id, r.epoch, why, r.state === 'placed' || r.state === 'running');
      if (!result) continue;
      report.released.push({ jobId: r.id, epoch: r.epoch, state: r.state, why });
      log.warn('job released by the reconciler', {
        jobId: r.id,
        epoch: r.epoch,
        event: 'reconciler.released',
        state: r.state,
        workflowStatus: closed,
        devices: result.released,
      });
    }
  }
  // Nominations: kept for a job that is no longer waiting (it was placed, ended, or its row is
  // gone), or older than the TTL (a victim that never released must not fence capacity forever).
  const dropped = await sql<{ n: number }>`
    WITH gone AS (
      DELETE FROM nominations n
      WHERE n.created_at < ${new Date(Date.now() - (o.nominationTtlMs ?? NOMINATION_TTL_MS))}
         OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = n.preemptor AND j.state IN ('submitted', 'waiting'))
      RETURNING 1)
    SELECT count(*)::int AS n FROM gone`.execute(region.db);
  report.nominationsDropped = dropped.rows[0].n;
  if (report.nominationsDropped)
    log.warn('nominations dropped by the reconciler', { event: 'reconciler.nominations', count: report.nominationsDropped });
  // Quota usage: a counter the allocator moves; when it disagrees with what holds devices now
  // (one snapshot, so a placement in flight is wholly in or out), it is rebuilt from the holders.
  const drift = await sql<{ n: number }>`
    SELECT ((SELECT count(*) FROM quota_usage_expected WHERE used <> expected)
      + (SELECT count(*) FROM quota_charges_expected c JOIN jobs j ON j.id = c.id
         WHERE j.quota_charge IS DISTINCT FROM c.keys OR j.quota_milli IS DISTINCT FROM c.milli))::int AS n`.execute(region.db);
  if (drift.rows[0].n > 0) {
    const fixed = await sql<{ n: number }>`SELECT recompute_quota_usage() AS n`.execute(region.db);
    report.quotaRulesRepaired = fixed.rows[0].n;
    log.warn('quota usage repaired by the reconciler', { event: 'reconciler.quota', rules: report.quotaRulesRepaired });
  }
  if (report.released.length || report.nominationsDropped || report.quotaRulesRepaired) await region.kick();
  return report;
}

/**
 * Invariant 4 of the design, checked: every allocation belongs to a job whose workflow is running.
 * Returns the allocations' jobs whose workflow is closed or unknown (empty when it holds).
 */
export async function allocationsWithoutLiveWorkflow(
  db: Region['db'],
  client: Region['client'],
): Promise<Array<{ jobId: string; workflowId: string; status: string }>> {
  const held = await sql<{ id: string; workflow_id: string }>`
    SELECT DISTINCT j.id, j.workflow_id FROM allocations a JOIN jobs j ON j.id = a.job_id`.execute(db);
  const out: Array<{ jobId: string; workflowId: string; status: string }> = [];
  for (const r of held.rows) {
    const closed = await closedStatus({ client }, r.workflow_id);
    if (closed !== undefined) out.push({ jobId: r.id, workflowId: r.workflow_id, status: closed });
  }
  return out;
}
