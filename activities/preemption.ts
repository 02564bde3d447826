// Turns the pure victim choice into a preemption: reads the preemptor's entitlement (tier,
// nominal quota, reservation), the candidate nodes of each acceptable type and the running jobs on
// them, asks `chooseVictims`, and records the nominations — the nodes kept for the preemptor while
// its victims wind down — in one transaction. Delivering the `preempt` signals is the caller's
// (activities/cycle.ts), which records each delivery (`told_at`) and tells again a victim whose
// tell was lost, for as long as its nomination stands. When the last victim has released,
// `placeFreedPreemptor` places the preemptor on the capacity kept for it at once, rather than a
// scheduling cycle later.
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema';
import type { ResourceRequest, Tier } from '../api/types';
import { requestMilli } from '../scheduling/geometry';
import type { CandidateNode } from '../scheduling/placement';
import { descendantsLikePattern, inSubtree } from '../api/tenants';
import { chooseVictims, type RunningJob } from '../scheduling/preemption';
import { recordPreemptions } from './metrics';
import { placedSignal } from '../api/messages';
import { activityLog, tell, type Region } from './region';
import { releaseEndedJob } from './reconcile';

export interface PreemptionPlan {
  preemptor: string;
  victims: Array<{ jobId: string; workflowId: string; epoch: number }>;
  reason: string;
}

interface QuotaRow {
  tenant: string;
  accelerator_type: string;
  nominal: number;
  used_milli: string;
}

/** The most specific quota rule governing a tenant for a type, if any. */
function leafRule(rules: QuotaRow[], tenant: string, type: string): QuotaRow | undefined {
  return rules
    .filter((r) => r.accelerator_type === type && inSubtree(tenant, r.tenant))
    .sort((a, b) => b.tenant.length - a.tenant.length)[0];
}

export type PlanOutcome = PreemptionPlan | { preemptor: string; none: string } | undefined;

/**
 * Plans a preemption for a waiting job that did not fit, or explains why none is possible.
 * Returns undefined when the job already has victims winding down for it (nothing new to do).
 */
export async function planPreemption(
  db: Kysely<Database>,
  jobId: string,
  now = Date.now(),
  /** The job is blocked by quota, not capacity: only reclaiming lent nominal from borrowers can help. */
  reclaimOnly = false,
): Promise<PlanOutcome> {
  return (await planPreemptions(db, [{ jobId, reclaimOnly }], now))[0];
}

interface NodeRow {
  id: number;
  name: string;
  pod: string;
  rack: string;
  free_milli: number[];
  free_cpu_milli: number | null;
  free_memory_mib: number | null;
  spot: boolean;
}

interface HoldRow {
  id: string;
  tier: string;
  tenant: string;
  epoch: number;
  workflow_id: string;
  placed_at: Date | null;
  min_runtime: string | null;
  checkpointable: boolean | null;
  preempted_by: string[];
  node_id: number;
  device_idx: number;
  milli: number;
  cpu_milli: number;
  memory_mib: number;
}

/**
 * Plans preemptions for waiting jobs that did not fit, in the order given (the cycle's rank
 * order), as `planPreemption` would one after another — each plan sees the plans before it: their
 * victims are busy, their nodes kept — but in one transaction that reads the shared tables, and
 * each accelerator type's nodes and running jobs, once. A cycle plans several preemptions, and
 * one transaction per plan, each reading the same rows, made planning most of a cycle's time.
 */
export async function planPreemptions(
  db: Kysely<Database>,
  wanted: ReadonlyArray<{ jobId: string; reclaimOnly: boolean }>,
  now = Date.now(),
): Promise<PlanOutcome[]> {
  if (!wanted.length) return [];
  return db.transaction().execute(async (trx) => {
    const locked = await trx
      .selectFrom('jobs')
      .select(['id', 'tenant', 'tier', 'region', 'epoch', 'state', 'spec', 'preempted_by'])
      .where(
        'id',
        'in',
        wanted.map((w) => w.jobId),
      )
      .orderBy('id')
      .forUpdate()
      .execute();
    const jobs = new Map(locked.map((j) => [j.id, j]));
    const standing = await trx.selectFrom('nominations').select(['preemptor', 'victim', 'node_id']).execute();
    /** Victims already winding down for a preemptor, and nodes kept for one (this batch's plans added as they are made). */
    const busyVictims = new Set(standing.map((n) => n.victim));
    const keptFor = new Map<number, Set<string>>();
    const keep = (node: number, preemptor: string): void => {
      const set = keptFor.get(node) ?? new Set<string>();
      set.add(preemptor);
      keptFor.set(node, set);
    };
    for (const n of standing) keep(n.node_id, n.preemptor);
    const hasNominations = new Set(standing.map((n) => n.preemptor));
    const rules = (await trx.selectFrom('quotas').select(['tenant', 'accelerator_type', 'nominal', 'used_milli']).execute()) as QuotaRow[];
    const reservations = await trx.selectFrom('reservations').selectAll().where('state', '=', 'active').execute();
    const nodesOf = new Map<string, NodeRow[]>();
    const typeNodes = async (type: string): Promise<NodeRow[]> => {
      let rows = nodesOf.get(type);
      if (!rows) {
        rows = await trx
          .selectFrom('nodes')
          .select(['id', 'name', 'pod', 'rack', 'free_milli', 'free_cpu_milli', 'free_memory_mib', 'spot'])
          .where('accelerator_type', '=', type)
          .where('state', '=', 'ready')
          .orderBy('id')
          .execute();
        nodesOf.set(type, rows);
      }
      return rows;
    };
    const holdsOf = new Map<string, HoldRow[]>();
    const typeHolds = async (type: string): Promise<HoldRow[]> => {
      let rows = holdsOf.get(type);
      if (!rows) {
        rows = (
          await sql<HoldRow>`
          SELECT j.id, j.tier, j.tenant, j.epoch, j.workflow_id, j.placed_at, j.spec->>'minRuntimeMs' AS min_runtime, (j.spec->>'checkpointable')::boolean AS checkpointable, j.preempted_by,
                 a.node_id, a.device_idx, a.milli, a.cpu_milli, a.memory_mib
          FROM allocations a JOIN jobs j ON j.id = a.job_id AND j.epoch = a.epoch JOIN nodes n ON n.id = a.node_id
          WHERE n.accelerator_type = ${type} AND j.state IN ('placed', 'running')
          ORDER BY j.id`.execute(trx)
        ).rows;
        holdsOf.set(type, rows);
      }
      return rows;
    };
    const nominationRows: Array<{ preemptor: string; victim: string; node_id: number }> = [];
    const reasons: Array<{ id: string; reason: string }> = [];

    const planOne = async (jobId: string, reclaimOnly: boolean): Promise<PlanOutcome> => {
      const job = jobs.get(jobId);
      if (!job || job.state !== 'waiting') return undefined;
      if (hasNominations.has(jobId)) return undefined;
      const request = job.spec.request;
      const milli = requestMilli(request);
      const tier = job.tier as Tier;
      if (tier !== 'premium' && !rules.length && !reservations.length)
        return { preemptor: jobId, none: 'only premium work preempts where no quota or reservation entitles a job' };
      const why: string[] = [];
      for (const type of request.acceleratorTypes) {
        const rule = leafRule(rules, job.tenant, type);
        const ownReservation = reservations.find((r) => r.accelerator_type === type && inSubtree(job.tenant, r.tenant));
        let ownerMilli = 0;
        if (ownReservation) {
          const held = await sql<{ m: string }>`
            SELECT coalesce(sum(a.milli), 0)::bigint AS m FROM allocations a JOIN jobs j ON j.id = a.job_id JOIN nodes n ON n.id = a.node_id
            WHERE n.accelerator_type = ${type} AND (j.tenant = ${ownReservation.tenant} OR j.tenant LIKE ${descendantsLikePattern(ownReservation.tenant)})`.execute(
            trx,
          );
          ownerMilli = Number(held.rows[0].m);
        }
        const withinReservation = ownReservation !== undefined && ownerMilli + milli <= ownReservation.devices * 1000;
        const withinNominal = withinReservation || (rule !== undefined && Number(rule.used_milli) + milli <= rule.nominal * 1000);
        if (reclaimOnly && !withinNominal) {
          why.push(`${type}: over its own nominal quota, so it cannot reclaim`);
          continue;
        }
        // Quota reclaim only helps within the preemptor's own quota tree.
        const root = rules
          .filter((r) => r.accelerator_type === type && inSubtree(job.tenant, r.tenant))
          .sort((a, b) => a.tenant.length - b.tenant.length)[0];
        // Nodes kept for another preemptor are not candidates; premium work never lands on spot
        // nodes (the allocator's rule), so it preempts nothing there.
        let candidates = (await typeNodes(type)).filter(
          (n) => ![...(keptFor.get(n.id) ?? [])].some((p) => p !== jobId) && !(tier === 'premium' && n.spot),
        );
        if (request.nodeLabels && Object.keys(request.nodeLabels).length) {
          const labelled = new Set(
            (
              await trx
                .selectFrom('nodes')
                .select('id')
                .where('accelerator_type', '=', type)
                .where('labels', '@>', JSON.stringify(request.nodeLabels) as never)
                .execute()
            ).map((n) => n.id),
          );
          candidates = candidates.filter((n) => labelled.has(n.id));
        }
        const nodes: CandidateNode[] = candidates.map((n) => ({
          id: n.id,
          name: n.name,
          pod: n.pod,
          rack: n.rack,
          freeMilli: n.free_milli,
          freeCpuMilli: n.free_cpu_milli ?? undefined,
          freeMemoryMib: n.free_memory_mib ?? undefined,
        }));
        const running = new Map<string, RunningJob & { workflowId: string; epoch: number }>();
        for (const h of await typeHolds(type)) {
          if (h.id === jobId) continue;
          if (busyVictims.has(h.id)) continue; // already winding down for another preemptor
          if (reclaimOnly && !(root && inSubtree(h.tenant, root.tenant))) continue;
          let r = running.get(h.id);
          if (!r) {
            const ran = h.placed_at ? Math.max(0, now - new Date(h.placed_at).getTime()) : 0;
            const vRule = leafRule(rules, h.tenant, type);
            const borrowing =
              (vRule !== undefined && Number(vRule.used_milli) > vRule.nominal * 1000) ||
              // On a reservation the owner may reclaim, other tenants' basic work is only borrowing it.
              (withinReservation && h.tier === 'basic' && !inSubtree(h.tenant, ownReservation!.tenant));
            if (reclaimOnly && !borrowing) continue;
            r = {
              // A checkpointable job checkpoints when it is stopped: it loses (almost) nothing.
              jobId: h.id,
              tier: h.tier as Tier,
              tenant: h.tenant,
              borrowing,
              workLostMs: h.checkpointable ? 0 : ran,
              ranMs: ran,
              minRuntimeMs: Number(h.min_runtime ?? 0),
              preemptedBy: h.preempted_by,
              holds: [],
              workflowId: h.workflow_id,
              epoch: h.epoch,
            };
            running.set(h.id, r);
          }
          r.holds.push({ nodeId: h.node_id, deviceIdx: h.device_idx, milli: h.milli, cpuMilli: h.cpu_milli, memoryMib: h.memory_mib });
        }
        const decision = chooseVictims({ jobId, tier, tenant: job.tenant, request, withinNominal, preemptedBy: job.preempted_by }, nodes, [
          ...running.values(),
        ]);
        if (!decision.ok) {
          why.push(`${type}: ${decision.reason}`);
          continue;
        }
        if (!decision.victims.length) return undefined; // it fits now; the next cycle places it
        const chosenNodes = new Set(decision.workers.map((w) => w.nodeId));
        const rows: Array<{ preemptor: string; victim: string; node_id: number }> = [];
        for (const v of decision.victims) {
          const vNodes = [...new Set(running.get(v)!.holds.map((h) => h.nodeId))];
          for (const n of vNodes.filter((x) => chosenNodes.has(x)).concat(vNodes.some((x) => chosenNodes.has(x)) ? [] : [vNodes[0]]))
            rows.push({ preemptor: jobId, victim: v, node_id: n });
        }
        // The chosen nodes the victims do not hold are kept too, so the freed room stays whole.
        for (const n of chosenNodes)
          if (!rows.some((r) => r.node_id === n)) rows.push({ preemptor: jobId, victim: decision.victims[0], node_id: n });
        for (const r of rows) {
          nominationRows.push(r);
          busyVictims.add(r.victim);
          keep(r.node_id, jobId);
        }
        hasNominations.add(jobId);
        reasons.push({ id: jobId, reason: decision.reason });
        recordPreemptions(
          job.region,
          decision.victims.map((v) => running.get(v)!.tier),
        );
        return {
          preemptor: jobId,
          victims: decision.victims.map((v) => ({ jobId: v, workflowId: running.get(v)!.workflowId, epoch: running.get(v)!.epoch })),
          reason: decision.reason,
        };
      }
      return { preemptor: jobId, none: why.join('; ') };
    };

    const out: PlanOutcome[] = [];
    for (const w of wanted) out.push(await planOne(w.jobId, w.reclaimOnly));
    if (nominationRows.length)
      await trx
        .insertInto('nominations')
        .values(nominationRows)
        .onConflict((oc) => oc.doNothing())
        .execute();
    if (reasons.length)
      await sql`UPDATE jobs AS j SET waiting_reason = u.reason, updated_at = now()
        FROM unnest(${reasons.map((r) => r.id)}::text[], ${reasons.map((r) => r.reason)}::text[]) AS u(id, reason)
        WHERE j.id = u.id`.execute(trx);
    return out;
  });
}

/**
 * Places `preemptor` once none of its victims holds a node nominated to it any more (each victim
 * calls this after its release; the last one's call places it), and delivers the placement to its
 * workflow. The nominated nodes are the preemptor's alone, and a scheduling cycle places a
 * nominated preemptor ahead of any backfill rule, so this is the placement the next cycle would
 * make, made a cycle sooner. Idempotent (the allocator's transaction is keyed by job and epoch);
 * a concurrent cycle placing the same job finds the placement and delivers the same message.
 * Returns whether the preemptor is placed.
 */
export async function placeFreedPreemptor(region: Region, preemptor: string): Promise<boolean> {
  const r = await sql<{ epoch: number; workflow_id: string; request: ResourceRequest; holding: boolean }>`
    SELECT j.epoch, j.workflow_id, j.spec->'request' AS request,
      EXISTS (SELECT 1 FROM nominations n JOIN allocations a ON a.node_id = n.node_id AND a.job_id = n.victim
              WHERE n.preemptor = j.id) AS holding
    FROM jobs j
    WHERE j.id = ${preemptor} AND j.region = ${region.name} AND j.state = 'waiting'
      AND EXISTS (SELECT 1 FROM nominations n WHERE n.preemptor = j.id)`.execute(region.db);
  const job = r.rows[0];
  if (!job || job.holding) return false;
  const [tried] = await region.allocator.allocateBatch([{ jobId: preemptor, epoch: job.epoch, request: job.request }]);
  if (!tried?.result?.placed) return false;
  const placement = tried.result.placement;
  const log = activityLog();
  if (!(await tell(() => region.client.workflow.getHandle(job.workflow_id).signal(placedSignal, { epoch: job.epoch, placement })))) {
    await releaseEndedJob(
      region,
      preemptor,
      job.epoch,
      `its workflow ${job.workflow_id} had ended when its placement was delivered`,
      false,
    );
    log.warn('placement for an ended workflow released', { jobId: preemptor, epoch: job.epoch, event: 'preemption.released-dead' });
    return false;
  }
  log.info('preemptor placed on the capacity its victims released', {
    jobId: preemptor,
    epoch: job.epoch,
    event: 'preemption.placed',
    nodes: placement.workers.map((w) => w.nodeName),
  });
  return true;
}
