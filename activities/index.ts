// The activities a worker registers, bound to one database, one region and a Temporal client
// (to wake the region scheduler and to deliver its placements to job workflows).
import type { Kysely } from 'kysely';
import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Database, NodeState } from '../db/schema';
import type { JobOutcome, JobSpec, Placement, PlacementPolicyName } from '../api/types';
import { jobWorkflowId, reservationWorkflowId, schedulerTaskQueue, schedulerWorkflowId } from '../api/ids';
import { Allocator, readPlacements, type ReleaseResult } from './allocator';
import { QUEUED_REASON, enqueueJob, joinQueue, jobsOnNode, preemptionStands, requeueJob, setJobPriority, type Enqueued } from './jobs';
import { bookReservation } from './reservations';
import { validateReservation } from '../api/validation';
import type { ReservationState } from '../db/schema';
import { SimulatedExecutor, type Executor, type LaunchInput, type Observation } from './executor';
import { loadAdmissionContext } from './admission';
import { admissionProblems } from '../scheduling/admission';
import { runCycle, type CycleOptions } from './cycle';
import { badRequest } from '../api/errors';
import {
  kickSignal,
  placedSignal,
  preemptSignal,
  requeueUpdate,
  waitingSignal,
  type NodeActionResult,
  type ReservationInfo,
  type ReservationRequest,
} from '../api/messages';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';

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
}

/** An admitted job: its queue entry, and its placement when it was placed on admission. */
export interface Admitted extends Enqueued {
  admitted: true;
  placement?: Placement;
  /** Why an immediate placement did not happen, when one was tried. */
  waitingReason?: string;
}

/** Time a preempted job has to checkpoint before it releases, unless the region configures another. */
export const DEFAULT_PREEMPT_GRACE_MS = 10_000;

/**
 * How long a run's watcher goes without heartbeating: under the 5 s heartbeat timeout, and the
 * longest a cancellation waits to reach it (the server answers cancellation through heartbeats).
 */
export const QUIET_HEARTBEAT_MS = 2000;

/** Further tries a placement on admission makes when it finds no free candidate (they may be locked). */
export const FAST_PATH_RETRIES = 3;

/** The least time between two kicks one worker sends the region scheduler. */
export const KICK_SPACING_MS = 100;

/**
 * How often a running job's watcher observes the executor (each observation is a write), and so
 * how soon it notices a lost node or a failure; it also wakes when the run is due to end.
 */
export const OBSERVE_EVERY_MS = 1000;

export function createActivities({ db, region, client, taskQueue, policy, executor: given, cycle }: ActivityDeps) {
  const log = () => Context.current().log;
  const allocator = new Allocator(db, policy);
  const executor = given ?? new SimulatedExecutor(db);

  const sendKick = async (): Promise<void> => {
    // By name: activities do not load workflow code.
    await client.workflow.signalWithStart('RegionSchedulerWorkflow', {
      workflowId: schedulerWorkflowId(region),
      taskQueue: schedulerTaskQueue(taskQueue),
      args: [{ region }],
      signal: kickSignal,
      signalArgs: [],
    });
  };
  /**
   * Wakes the scheduler, coalescing concurrent callers: while one signal is in flight, every
   * new caller shares the single signal sent after it. Each caller still gets a signal sent after
   * its call began, which is all a kick promises (a cycle reads the whole queue), while the
   * scheduler's history and its one workflow lock see a handful of signals instead of one per job.
   */
  let inflight: Promise<void> | undefined;
  let queued: Promise<void> | undefined;
  let lastSent = 0;
  const kick = (): Promise<void> => {
    if (queued) return queued;
    const start = (): Promise<void> => {
      // Kicks at most every KICK_SPACING_MS: the scheduler debounces for about as long, so a
      // closer kick would only cost it a workflow task, and they pile up under load.
      const wait = lastSent + KICK_SPACING_MS - Date.now();
      const p = (wait > 0 ? new Promise<void>((r) => setTimeout(r, wait)) : Promise.resolve())
        .then(() => {
          lastSent = Date.now();
          return sendKick();
        })
        .finally(() => {
          if (inflight === p) inflight = undefined;
        });
      inflight = p;
      return p;
    };
    if (!inflight) return start();
    const next = inflight
      .catch(() => undefined)
      .then(() => {
        queued = undefined;
        return start();
      });
    queued = next;
    return next;
  };
  /** Signals a job workflow, ignoring one that has already finished. */
  const tell = async (what: () => Promise<void>): Promise<boolean> => {
    try {
      await what();
      return true;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  };

  return {
    /**
     * Everything a new job does first, in one step the job workflow runs as a local activity (no
     * task dispatch, no extra workflow task): admission; if admitted, its place in the queue; then,
     * when nobody else waits in the region, an immediate placement through the same allocator
     * transaction a scheduling cycle uses (quota, reservations, nominations and all), since with
     * an empty queue there is no one it could overtake. Otherwise it waits for the region
     * scheduler, which this wakes. Idempotent: a retry finds the same queue entry and placement.
     */
    async admitAndPlace(spec: JobSpec): Promise<Admitted | { admitted: false; problems: string[] }> {
      const { policy, queueAhead } = await loadAdmissionContext(db, spec.tenant, region, spec.jobId);
      const problems = admissionProblems(spec, region, policy);
      if (!problems.length) {
        try {
          await allocator.checkRequest(spec.request);
        } catch (err) {
          problems.push((err as Error).message);
        }
      }
      if (problems.length) return { admitted: false, problems };
      const workflowId = Context.current().info.workflowExecution?.workflowId ?? jobWorkflowId(spec.tenant, spec.jobId);
      // Someone waits: this job must not overtake them, so it joins the queue for the scheduler.
      // Nobody waits: it is recorded as `submitted`, not `waiting`, while it is placed, so
      // concurrent admissions do not mistake it for a queue to wait behind.
      const entry = await enqueueJob(db, spec, region, workflowId, queueAhead ? 'waiting' : 'submitted');
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
          log().info('job placed', { jobId: spec.jobId, epoch: entry.epoch, event: 'admission.placed', nodes: tried.result.placement.workers.map((w) => w.nodeName) });
          return { admitted: true, ...entry, state: 'placed', placement: tried.result.placement };
        }
        const reason = tried.result?.placed === false ? tried.result.reason : tried.error ?? QUEUED_REASON;
        await joinQueue(db, spec.jobId, reason);
        await kick();
        return { admitted: true, ...entry, state: 'waiting', waitingReason: reason };
      }
      await joinQueue(db, spec.jobId, QUEUED_REASON); // a retry may find it mid-admission (`submitted`)
      await kick();
      return { admitted: true, ...entry, state: entry.state === 'submitted' ? 'waiting' : entry.state };
    },
    /** The job's placement at `epoch` if it has one; otherwise wakes the scheduler (a delivery may have been missed). */
    async checkPlacement(jobId: string, epoch: number): Promise<Placement | undefined> {
      const found = (await readPlacements(db, [jobId])).get(`${jobId}@${epoch}`);
      if (!found) await kick();
      return found;
    },
    async setPriority(jobId: string, priority: number): Promise<void> {
      await setJobPriority(db, jobId, priority);
      await kick();
    },
    /** Ends the job: its final state and the release of everything it holds, in one transaction. */
    async finish(jobId: string, epoch: number, state: JobOutcome, reason: string | null): Promise<ReleaseResult> {
      const result = await allocator.finish(jobId, epoch, state, reason);
      log().info('job finished', { jobId, epoch, event: 'job.finish', state, devices: result.released });
      // Freed capacity matters to the scheduler only when someone waits for it (its timer covers the rest).
      if (result.released && result.othersWaiting) await kick();
      return result;
    },
    /** Releases what the job holds at `epoch` and queues it again at epoch + 1, keeping its position. */
    async requeue(jobId: string, epoch: number, attempt: number, reason: string, preemptedBy?: string): Promise<number> {
      await allocator.release(jobId, epoch).catch((err: Error) => {
        // A retry after the epoch moved on has nothing left to release.
        if (!/stale/.test(err.message)) throw err;
      });
      const next = await requeueJob(db, jobId, epoch, attempt, reason, preemptedBy);
      log().info('job requeued', { jobId, epoch: next, event: 'job.requeued', reason });
      await kick();
      return next;
    },

    /** One scheduling cycle, then delivery of its outcome to the job workflows. */
    async scheduleCycle(): Promise<{ considered: number; placed: number; waiting: number; more: boolean; ms: number }> {
      const out = await runCycle(db, allocator, region, cycle);
      await Promise.all([
        ...out.placed.map((p) => tell(() => client.workflow.getHandle(p.workflowId).signal(placedSignal, { epoch: p.epoch, placement: p.placement }))),
        ...out.reasons.map((r) => tell(() => client.workflow.getHandle(r.workflowId).signal(waitingSignal, { epoch: r.epoch, reason: r.reason }))),
      ]);
      for (const p of out.placed)
        log().info('job placed', { jobId: p.jobId, epoch: p.epoch, event: 'scheduler.placed', nodes: p.placement.workers.map((w) => w.nodeName) });
      const graceMs = cycle?.preemptGraceMs ?? DEFAULT_PREEMPT_GRACE_MS;
      for (const p of out.preemptions) {
        log().info('preemption', { event: 'scheduler.preempt', jobId: p.preemptor, preemptor: p.preemptor, victims: p.victims.map((v) => v.jobId), reason: p.reason });
        await Promise.all(p.victims.map((v) => tell(() => client.workflow.getHandle(v.workflowId).signal(preemptSignal, { preemptor: p.preemptor, graceMs }))));
      }
      for (const r of out.refused) log().warn('job refused by allocator', { jobId: r.jobId, event: 'scheduler.refused', error: r.error });
      return { considered: out.considered, placed: out.placed.length, waiting: out.considered - out.placed.length, more: out.more, ms: out.ms };
    },

    async preemptionStands(victim: string, preemptor: string): Promise<boolean> {
      return preemptionStands(db, victim, preemptor);
    },

    // --- reservations --------------------------------------------------------------------------
    /** Books a reservation (refused if it overbooks) and starts the workflow that opens and closes it. */
    async createReservation(r: ReservationRequest): Promise<ReservationInfo> {
      const problems = validateReservation(r);
      if (problems.length) throw badRequest(problems.join('; '));
      const booked = await bookReservation(db, region, r);
      const workflowId = reservationWorkflowId(r.id);
      try {
        await client.workflow.start('ReservationWorkflow', { workflowId, taskQueue: schedulerTaskQueue(taskQueue), args: [{ ...r, region }] });
      } catch (err) {
        if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      }
      log().info('reservation booked', { event: 'reservation.booked', reservation: r.id, tenant: r.tenant, devices: r.devices, type: r.acceleratorType });
      return { ...r, state: booked.state as ReservationInfo['state'], workflowId };
    },
    async setReservationState(id: string, state: ReservationState): Promise<void> {
      await db.updateTable('reservations').set({ state }).where('id', '=', id).where('state', 'in', ['pending', 'active']).execute();
      log().info('reservation state', { event: `reservation.${state}`, reservation: id });
      await kick();
    },

    // --- the executor --------------------------------------------------------------------------
    /**
     * Launches the run (idempotent) and watches it until it ends, heartbeating its progress. A
     * worker crash or a cancellation only stops the watching; the run itself lives in the
     * executor, and a retry picks the same run up.
     */
    async runJob(input: LaunchInput): Promise<Observation & { finished?: boolean }> {
      const ctx = Context.current();
      const { jobId, epoch } = input;
      await executor.launch(input); // a no-op if an earlier attempt launched it, or it was stopped first
      // Only a placed job becomes running: a late launch must not revive a job that has ended.
      await db.updateTable('jobs').set({ state: 'running', updated_at: new Date() }).where('id', '=', jobId).where('epoch', '=', epoch).where('state', '=', 'placed').execute();
      if (ctx.info.attempt === 1) ctx.log.info('executor launched', { jobId, epoch, event: 'executor.launch', resumeFromMs: input.resumeFromMs });
      const watchStarted = Date.now();
      // A first attempt has just launched the run, so it knows where the run stands without asking:
      // its first look is one observation interval (or the whole run, if shorter) away.
      if (ctx.info.attempt === 1) await ctx.sleep(Math.max(20, Math.min(OBSERVE_EVERY_MS, input.durationMs - input.resumeFromMs)));
      for (let first = true; ; first = false) {
        const seen = await executor.observe(jobId, epoch);
        // The first heartbeat goes to the server at once (later ones are throttled), so a short
        // run finishes without one: it starts after QUIET_HEARTBEAT_MS, well inside the timeout.
        if (Date.now() - watchStarted >= QUIET_HEARTBEAT_MS) ctx.heartbeat(seen.progressMs);
        if (first && ctx.info.attempt > 1)
          ctx.log.info('executor watch resumed', { jobId, epoch, event: 'executor.watch-resumed', progressMs: seen.progressMs, attempt: ctx.info.attempt });
        if (seen.state === 'succeeded') {
          // The common ending, done here: final state and release in the run's own activity,
          // which spares every job one more activity and workflow task.
          const released = await allocator.finish(jobId, epoch, 'completed', null);
          ctx.log.info('job finished', { jobId, epoch, event: 'job.finish', state: 'completed', devices: released.released });
          if (released.released && released.othersWaiting) await kick();
          return { ...seen, finished: true };
        }
        if (seen.state !== 'running') return seen;
        await ctx.sleep(Math.max(20, Math.min(OBSERVE_EVERY_MS, seen.durationMs - seen.progressMs)));
      }
    },
    async stopRun(jobId: string, epoch: number, detail: string, keepCheckpoint: boolean): Promise<Observation & { checkpointMs: number }> {
      const checkpointMs = keepCheckpoint ? await executor.checkpoint(jobId, epoch) : 0;
      const seen = await executor.stop(jobId, epoch, detail);
      return { ...seen, checkpointMs };
    },

    // --- nodes ---------------------------------------------------------------------------------
    /** Sets a node's state; a drain also sends every job on it back to the queue. */
    async setNodeState(name: string, state: NodeState): Promise<NodeActionResult> {
      const node = await db.updateTable('nodes').set({ state }).where('name', '=', name).returning(['id', 'state']).executeTakeFirst();
      if (!node) throw badRequest(`node ${JSON.stringify(name)} does not exist`);
      log().info('node state', { event: `node.${state}`, node: name });
      const requeued: string[] = [];
      if (state === 'draining')
        for (const job of await jobsOnNode(db, node.id)) {
          const sent = await tell(async () => {
            await client.workflow.getHandle(job.workflowId).executeUpdate(requeueUpdate, { args: [`node ${name} is draining`] });
          }).catch((err: Error) => {
            // A job that finished or moved on meanwhile no longer needs moving.
            log().warn('drain could not requeue job', { jobId: job.id, node: name, error: err.message });
            return false;
          });
          if (sent) requeued.push(job.id);
        }
      if (state === 'ready') await kick();
      return { node: name, state, requeued };
    },
  };
}

export type SchedulerActivities = ReturnType<typeof createActivities>;
