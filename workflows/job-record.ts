// What one JobWorkflow knows about its job while it runs: its status (the `status` query's
// answer), what the scheduler and operators have told it, and the activity proxies it calls.
// Shared by the lifecycle (job.ts), its message handlers (job-handlers.ts) and the handoff
// protocol (handoff.ts). Deterministic: no I/O here.
import { CancellationScope, log, proxyActivities, proxyLocalActivities, upsertSearchAttributes } from '@temporalio/workflow';
import type { SchedulerActivities } from '../activities';
import { TERMINAL_STATES, type JobResult, type JobSpec, type JobState, type JobStatus } from '../api/types';
import { AcceleratorTypeKey, HandoffPeerKey, JobStateKey, WaitingReasonKey } from '../api/search-attributes';
import { NON_RETRYABLE_ERROR_TYPES as NON_RETRYABLE } from '../api/errors';
import type { HandoffDecision, HandoffOrigin, PlacedDelivery } from '../api/messages';

// Few, merged steps: each activity costs the server three events and a task dispatch. In the
// common case a job makes one: admission and placement run as a local activity inside its first
// workflow task, and the run activity records the ending itself.
export const acts = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '200ms', maximumInterval: '10s', nonRetryableErrorTypes: NON_RETRYABLE },
});

/**
 * Admission and the placement tried on admission: short database work, run inside the first
 * workflow task (its result is a marker in history). A worker lost mid-way retries the whole task
 * on another worker, and the activity is idempotent.
 */
export const local = proxyLocalActivities<SchedulerActivities>({
  startToCloseTimeout: '10s',
  retry: { initialInterval: '200ms', maximumInterval: '5s', nonRetryableErrorTypes: NON_RETRYABLE },
});

export const watcher = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '30 days',
  // A worker that dies mid-run is noticed within seconds; the retry watches the same run.
  heartbeatTimeout: '5s',
  retry: { initialInterval: '500ms', maximumInterval: '10s', nonRetryableErrorTypes: NON_RETRYABLE },
});

/**
 * The handoff's own steps: short, and a worker lost mid-step is noticed within seconds (prepare,
 * which waits for the peer's answer, heartbeats), so the protocol resumes on another worker.
 */
export const handoffActs = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '30s',
  // Above a peer call's bound (5 s to connect, 5 s per call) between two heartbeats.
  heartbeatTimeout: '12s',
  retry: { initialInterval: '200ms', maximumInterval: '5s', nonRetryableErrorTypes: NON_RETRYABLE },
});

/**
 * Messages to another region: retried until delivered (a region that is down comes back, or the
 * message stops mattering), each try bounded so an unreachable peer costs a failed attempt.
 */
export const peerward = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '10s',
  scheduleToCloseTimeout: '30 days',
  retry: { initialInterval: '1s', maximumInterval: '30s', nonRetryableErrorTypes: NON_RETRYABLE },
});

export class JobRecord {
  readonly jobId: string;
  readonly status: JobStatus;
  /** Placements delivered by the scheduler, by epoch: one for the next epoch can arrive before the requeue that starts it returns. */
  readonly deliveries = new Map<number, PlacedDelivery>();
  requeueAsked: string | undefined;
  runScope: CancellationScope | undefined;
  /** The run activity already recorded completion and released the devices. */
  finishedByRun = false;
  /** A preemption asked of this job, and the preemptor once its grace period ran out. */
  preemptFor: { preemptor: string; graceMs: number } | undefined;
  preemptedFor: string | undefined;

  // --- handoff, at home ---
  /** This home's handoff decisions, by epoch: what a copy at a peer asks for. */
  readonly decisions = new Map<number, HandoffDecision>();
  /** How the copy at the peer ended (its `handedJobEnded`), for the epoch it was handed off at. */
  peerEnded: { epoch: number; result: JobResult } | undefined;
  /** A recall agreed by the peer: the job comes back home. */
  recalled: string | undefined;
  /** Peers that refused or did not answer lately, and until when they are not asked again. */
  readonly avoid = new Map<string, number>();

  // --- handoff, as a copy at a peer ---
  /** The home's decision for this copy's epoch, once heard. */
  heard: HandoffDecision | undefined;
  /** Given back to its home (a recall): the copy ends without telling the home it ended. */
  givenBack = false;

  constructor(
    readonly spec: JobSpec,
    readonly workflowId: string,
    region: string,
    readonly origin: HandoffOrigin | undefined,
  ) {
    this.jobId = typeof spec?.jobId === 'string' ? spec.jobId : 'invalid';
    this.status = {
      jobId: this.jobId,
      phase: 'validating',
      epoch: 1,
      attempt: 0,
      tier: spec?.tier,
      priority: spec?.priority,
      cancelRequested: false,
      checkpointMs: 0,
      region,
      pinned: spec?.handoff?.enabled === false,
      ...(origin ? { origin } : {}),
    };
  }

  /** Moves to `phase`, keeping the search attributes current in one upsert (one history event). */
  enter(phase: JobState, waitingReason?: string, acceleratorType?: string, handoffPeer?: string): void {
    this.status.phase = phase;
    this.status.waitingReason = waitingReason;
    upsertSearchAttributes([
      { key: JobStateKey, value: phase },
      { key: WaitingReasonKey, value: waitingReason ? waitingReason.slice(0, 250) : null },
      ...(acceleratorType ? [{ key: AcceleratorTypeKey, value: acceleratorType }] : []),
      ...(handoffPeer ? [{ key: HandoffPeerKey, value: handoffPeer }] : []),
    ]);
    log.info('job phase', { jobId: this.jobId, event: `job.${phase}`, epoch: this.status.epoch, waitingReason });
  }

  /** Set as the job's final release starts (a requeue's release is not final: a cancel still stops it). */
  finalRelease = false;

  /** Ended, or ending: nothing more can be asked of it. */
  finished(): boolean {
    return (TERMINAL_STATES as readonly JobState[]).includes(this.status.phase) || (this.status.phase === 'releasing' && this.finalRelease);
  }

  requestCancel(reason?: string): void {
    if (this.status.cancelRequested) return;
    this.status.cancelRequested = true;
    log.info('cancel requested', {
      jobId: this.jobId,
      event: 'job.cancel-requested',
      reason: reason ?? 'none given',
      phase: this.status.phase,
    });
    this.runScope?.cancel();
  }

  /** The decision of the handoff at `epoch`: an epoch this home has moved past without committing was aborted. */
  decisionFor(epoch: number): HandoffDecision | 'undecided' {
    return this.decisions.get(epoch) ?? (epoch < this.status.epoch ? 'aborted' : 'undecided');
  }
}
