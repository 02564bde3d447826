// The activities a region's worker registers: a thin registry binding each to the region (its
// database, Temporal client, allocator and executor). The work is in the modules named beside
// each entry; the decisions they apply are in scheduling/.
import type { Kysely } from 'kysely';
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { Database, NodeState, ReservationState } from '../db/schema';
import type { JobOutcome, JobResult, JobSpec, Placement, PlacementPolicyName } from '../api/types';
import { jobWorkflowId, peerExchangeWorkflowId } from '../api/ids';
import { ErrorTypes, isDomainError, rootMessage } from '../api/errors';
import { offerSummaryUpdate, type ReservationRequest } from '../api/messages';
import { Allocator, readPlacements, type ReleaseResult } from './allocator';
import { preemptionStands, requeueJob, setJobPriority } from './jobs';
import { SimulatedExecutor, type Executor, type LaunchInput, type Observation } from './executor';
import { admitAndPlace, type AdmissionResult } from './admission';
import { scheduleCycle, type CycleOptions, type CycleSummary } from './cycle';
import { placeFreedPreemptor } from './preemption';
import { reconcileRegion, type ReconcileReport } from './reconcile';
import { createReservation, setReservationState } from './reservations';
import { setNodeState } from './nodes';
import { watchRun, type RunOutcome } from './run-watch';
import { activityLog, finishJob, regionOf } from './region';
import { PeerLinks } from './peers';
import { failpoint } from './failpoints';
import { readPeerSummaries, storePeerSummary, summarizeInventory } from './inventory';
import { CHANGE_POLL_MS, waitForLargeChange } from './publish-wait';
import { freeByType, type FreeByType } from '../scheduling/handoff';
import * as handoff from './handoff';
import type { HandoffDecision, HandoffOrigin, PublishWhenDue, PublishedWhenDue } from '../api/messages';
import type { InventorySummary } from '../api/peers';
import type { AutoscalerLimits, ProviderConfig } from '../api/autoscaler';
import { Providers } from './providers';
import type { PlacementObjective } from '../scheduling/capacity';
import { addScalableDevices, observeProviders, planCapacity, provisionCapacity, recordSettings, releaseIdleNode } from './autoscale';

export type { Admitted, AdmissionResult } from './admission';
/** What a publication reached: per peer, the version taken or the error. */
export type Published = Record<string, { ok: true; version: number } | { ok: false; error: string }>;
export { DEFAULT_PREEMPT_GRACE_MS } from './cycle';

export interface ActivityDeps {
  db: Kysely<Database>;
  region: string;
  /** Temporal client in the worker's namespace. */
  client: Client;
  /** Task queue the region's workflows run on (the scheduler is started there). */
  taskQueue: string;
  policy?: PlacementPolicyName;
  executor?: Executor;
  cycle?: CycleOptions;
  /** The region's peers (none: a region on its own). */
  peers?: PeerLinks;
  /** Capacity providers besides the owned fleet (none: the fleet is fixed). */
  providers?: ProviderConfig[];
  /** How placement weighs price (default `cost`: no change while every node costs 0). */
  objective?: PlacementObjective;
  /** Publish the summary between periods when free capacity moves a lot (default true; false: on the period only). */
  publishEarly?: boolean;
}

export function createActivities({
  db,
  region: name,
  client,
  taskQueue,
  policy,
  executor,
  cycle,
  peers,
  providers: providerConfigs,
  objective,
  publishEarly = true,
}: ActivityDeps) {
  const region = regionOf({
    name,
    db,
    client,
    taskQueue,
    allocator: new Allocator(db, { policy, region: name, objective }),
    executor: executor ?? new SimulatedExecutor(db),
    peers: peers ?? new PeerLinks(name, []),
    queue: cycle?.queue,
  });
  const providers = new Providers(db, providerConfigs ?? []);

  /** Sends this region's summary to every peer at once; an unreachable peer is reported, not waited for. */
  const publish = async (): Promise<{ sent: Published; free: FreeByType }> => {
    const summary = await summarizeInventory(db, name);
    await addScalableDevices(db, name, providers, summary);
    const sent = await Promise.all(
      region.peers.names.map(async (peer) => {
        try {
          await region.peers.call(peer, (c) =>
            c.workflow.getHandle(peerExchangeWorkflowId(peer)).executeUpdate(offerSummaryUpdate, { args: [summary] }),
          );
          return [peer, { ok: true as const, version: summary.version }] as const;
        } catch (err) {
          return [peer, { ok: false as const, error: rootMessage(err) }] as const;
        }
      }),
    );
    return { sent: Object.fromEntries(sent), free: freeByType(summary) };
  };

  return {
    // --- a job's lifecycle (admission.ts, jobs.ts, allocator/) --------------------------------
    /** Admission, the queue entry and the placement tried on admission, as one local activity. */
    async admitAndPlace(spec: JobSpec): Promise<AdmissionResult> {
      const workflowId = Context.current().info.workflowExecution?.workflowId ?? jobWorkflowId(spec.tenant, spec.jobId);
      return admitAndPlace(region, spec, workflowId);
    },
    /** The job's placement at `epoch` if it has one; otherwise wakes the scheduler (a delivery may have been missed). */
    async checkPlacement(jobId: string, epoch: number): Promise<Placement | undefined> {
      const found = (await readPlacements(db, [jobId])).get(`${jobId}@${epoch}`);
      if (!found) await region.kick();
      return found;
    },
    async setPriority(jobId: string, priority: number): Promise<void> {
      await setJobPriority(db, jobId, priority);
      await region.kick();
    },
    /** Ends the job: its final state and the release of everything it holds, in one transaction. */
    async finish(jobId: string, epoch: number, state: JobOutcome, reason: string | null): Promise<ReleaseResult> {
      return finishJob(region, jobId, epoch, state, reason);
    },
    /** Releases what the job holds at `epoch` and queues it again at epoch + 1, keeping its position. */
    async requeue(jobId: string, epoch: number, attempt: number, reason: string, preemptedBy?: string): Promise<number> {
      await region.allocator.release(jobId, epoch).catch((err: unknown) => {
        // A retry after the epoch moved on has nothing left to release.
        if (!isDomainError(err, ErrorTypes.staleEpoch)) throw err;
      });
      const next = await requeueJob(db, jobId, epoch, attempt, reason, preemptedBy);
      activityLog().info('job requeued', { jobId, epoch: next, event: 'job.requeued', reason });
      // A victim's release may complete its preemptor's room: placed now, not a cycle later.
      if (preemptedBy) await placeFreedPreemptor(region, preemptedBy);
      await region.kick();
      return next;
    },
    async preemptionStands(victim: string, preemptor: string): Promise<boolean> {
      return preemptionStands(db, victim, preemptor);
    },

    // --- the run (run-watch.ts, executor.ts) -----------------------------------------------------
    /** Launches the run (idempotent) and watches it until it ends, heartbeating its progress. */
    async runJob(input: LaunchInput): Promise<RunOutcome> {
      return watchRun(region, input);
    },
    async stopRun(jobId: string, epoch: number, detail: string, keepCheckpoint: boolean): Promise<Observation & { checkpointMs: number }> {
      const checkpointMs = keepCheckpoint ? await region.executor.checkpoint(jobId, epoch) : 0;
      const seen = await region.executor.stop(jobId, epoch, detail);
      return { ...seen, checkpointMs };
    },

    // --- the region scheduler (cycle.ts, nodes.ts, reservations.ts) ------------------------------
    /**
     * One scheduling cycle, then delivery of its outcome to the job workflows. `debounceMs`: wait
     * that long first, so a burst of submissions lands before the queue is read (a pause here, not
     * a workflow timer: a server timer of a few milliseconds was seen to fire minutes late under load).
     */
    async scheduleCycle(debounceMs?: number): Promise<CycleSummary> {
      return whileHeartbeating(async () => {
        await failpoint('cycle.running');
        if (debounceMs !== undefined && debounceMs > 0) await new Promise((r) => setTimeout(r, Math.min(debounceMs, 5_000)));
        return scheduleCycle(region, cycle);
      });
    },
    /** Sets a node's state; a drain also sends every job on it back to the queue. */
    async setNodeState(node: string, state: NodeState) {
      return setNodeState(region, node, state);
    },
    /** Books a reservation (refused if it overbooks) and starts the workflow that opens and closes it. */
    async createReservation(r: ReservationRequest) {
      return createReservation(region, r);
    },
    async setReservationState(id: string, state: ReservationState): Promise<void> {
      return setReservationState(region, id, state);
    },

    // --- the reconciler (reconcile.ts) ----------------------------------------------------------
    /** One pass: releases jobs whose workflow ended without releasing them, drops stale nominations. */
    async reconcile(graceMs?: number): Promise<ReconcileReport> {
      return reconcileRegion(region, graceMs === undefined ? {} : { graceMs });
    },

    // --- the inventory exchange (inventory.ts, peers.ts) ----------------------------------------
    /** Sends this region's summary to every peer at once; an unreachable peer is reported, not waited for. */
    async publishSummary(): Promise<Published> {
      return (await publish()).sent;
    },
    /**
     * Publishes when due: at once without a last publication, else at the end of `waitMs` or as soon
     * as free capacity moved a lot since `published` (publish-wait.ts), whichever comes first.
     */
    async publishWhenDue(input: PublishWhenDue): Promise<PublishedWhenDue> {
      const early = input.published
        ? await waitForLargeChange(db, input.published, input.waitMs, input.minWaitMs, CHANGE_POLL_MS, publishEarly)
        : undefined;
      // Heartbeats on while a peer takes its time (up to its call deadline), so only a lost worker times out.
      const { sent, free } = await whileHeartbeating(publish);
      return { sent, free, ...(early ? { early } : {}) };
    },
    /** Keeps a peer's summary if newer than the one held; refuses a malformed, unknown or older one with the reason. */
    async storePeerSummary(summary: InventorySummary) {
      return storePeerSummary(db, region.peers.names, summary);
    },
    async peerSummaries() {
      return Object.fromEntries(
        [...(await readPeerSummaries(db))].map(([k, v]) => [k, { version: v.summary.version, receivedAt: v.receivedAt }]),
      );
    },

    // --- the autoscaler (autoscale.ts, providers/) -------------------------------------------
    /** The providers configured and their offerings in this region. */
    async autoscaleProviders() {
      return { providers: providers.names, offerings: providers.offerings(name) };
    },
    /** Applies what the providers report (nodes ready, failed requests, reclaim notices, nodes lost), each event once. */
    async autoscaleObserve() {
      return observeProviders(region, providers);
    },
    /** Reads demand waiting for capacity and capacity on its way; proposes requests and names idle nodes. */
    async autoscalePlan(limits: AutoscalerLimits, paused: boolean, now: number) {
      await recordSettings(db, name, limits, paused);
      return planCapacity(region, providers, limits, now);
    },
    /** One provisioning request, idempotent on its request id. */
    async autoscaleProvision(r: { requestId: string; provider: string; offering: string; count: number }) {
      return provisionCapacity(providers, r);
    },
    /** Cordons, checks and releases a provider node idle past the limit (never one holding work). */
    async autoscaleRelease(node: string) {
      return releaseIdleNode(region, providers, node);
    },

    // --- handoff, at home (handoff.ts) ----------------------------------------------------------
    async pickPeer(spec: JobSpec, exclude: string[], mustLeave: boolean) {
      return handoff.pickPeer(region, spec, { exclude, mustLeave });
    },
    async prepareHandoff(spec: JobSpec, epoch: number, peer: string) {
      return handoff.prepareHandoff(region, spec, epoch, peer);
    },
    async decideHandoff(
      jobId: string,
      epoch: number,
      decision: HandoffDecision | 'recalled',
      reason: string,
      abroad: boolean,
    ): Promise<number> {
      return handoff.decideHandoff(region, jobId, epoch, decision, reason, abroad);
    },
    async tellDecision(peer: string, workflowId: string, epoch: number, decision: HandoffDecision): Promise<boolean> {
      return handoff.tellDecision(region, peer, workflowId, epoch, decision);
    },
    async forwardCancel(peer: string, workflowId: string, reason: string): Promise<void> {
      return handoff.forwardCancel(region, peer, workflowId, reason);
    },
    /** Whether the home could place a job it handed off, now (for the automatic recall). */
    async roomAtHome(spec: JobSpec) {
      return handoff.roomAtHome(region, spec);
    },
    async recallFromPeer(peer: string, workflowId: string, reason: string) {
      return handoff.recallFromPeer(region, peer, workflowId, reason);
    },
    async peerCopyOutcome(peer: string, workflowId: string): Promise<JobResult | undefined> {
      return handoff.peerCopyOutcome(region, peer, workflowId);
    },

    // --- handoff, at the peer (handoff.ts) ------------------------------------------------------
    async admitCopy(spec: JobSpec, origin: HandoffOrigin) {
      const workflowId = Context.current().info.workflowExecution?.workflowId ?? jobWorkflowId(spec.tenant, spec.jobId);
      return handoff.admitCopy(region, spec, origin, workflowId);
    },
    async activateCopy(jobId: string, originEpoch: number): Promise<void> {
      return handoff.activateCopy(region, jobId, originEpoch);
    },
    async withdrawCopy(jobId: string, originEpoch: number, reason: string): Promise<boolean> {
      return handoff.withdrawCopy(region, jobId, originEpoch, reason);
    },
    async askOrigin(origin: HandoffOrigin, workflowId: string) {
      return handoff.askOrigin(region, origin, workflowId);
    },
    async tellOriginEnded(origin: HandoffOrigin, workflowId: string, result: JobResult): Promise<void> {
      return handoff.tellOriginEnded(region, origin, workflowId, result);
    },
  };
}

export type SchedulerActivities = ReturnType<typeof createActivities>;

/** How often a running cycle tells the server it is alive (well inside the scheduler's heartbeat timeout). */
export const CYCLE_HEARTBEAT_MS = 1_000;

/**
 * Runs `work`, heartbeating every CYCLE_HEARTBEAT_MS while it runs, so the server learns within
 * the workflow's heartbeat timeout that a worker died mid-cycle and retries the cycle on another
 * (or the restarted) worker, instead of waiting out the whole start-to-close timeout while the
 * region places nothing. Outside an activity (called directly) it just runs `work`.
 */
async function whileHeartbeating<T>(work: () => Promise<T>): Promise<T> {
  let ctx: Context | undefined;
  try {
    ctx = Context.current();
  } catch {
    return work();
  }
  ctx.heartbeat();
  const timer = setInterval(() => ctx.heartbeat(), CYCLE_HEARTBEAT_MS);
  try {
    return await work();
  } finally {
    clearInterval(timer);
  }
}
