// The messages the scheduler's workflows answer, declared apart from the workflow code so that
// the client and the activities can name them without loading a workflow.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { JobResult, JobSpec, JobStatus, Placement } from './types';
import type { InventorySummary } from './peers';

// --- a job ---------------------------------------------------------------------------------
/** JobWorkflow's input: the spec as submitted (validated again by the workflow) and the region it was submitted to. */
export interface JobWorkflowInput {
  spec: JobSpec;
  region: string;
  /** Set on a copy started by a handoff: the home region and its epoch for this handoff. */
  origin?: HandoffOrigin;
  /** Set when a long-waiting job continued as new: where it stood (it is admitted and waiting). */
  resume?: JobResume;
}

/** A waiting job's state carried into its next run when its history grew long. */
export interface JobResume {
  status: JobStatus;
  /** Handoff decisions by epoch (what a copy at a peer may still ask). */
  decisions: Array<[number, HandoffDecision]>;
  /** Peers avoided, and until when. */
  avoid: Array<[string, number]>;
  /** A copy: it learned `committed` and tells its home how the job ends. */
  committedCopy: boolean;
  /** Waiting for a peer (it cannot run at home). */
  abroad: boolean;
  /** The maxWaitMs deadline, as an absolute time. */
  deadline?: number;
  /** Runs it continued through so far. */
  continued: number;
}

/** Where a handed-off copy came from: the home region (one of this region's peers) and the handoff's epoch there. */
export interface HandoffOrigin {
  region: string;
  epoch: number;
}

// --- handoff (docs: README, "Global scheduling") ---------------------------------------------
export type HandoffDecision = 'committed' | 'aborted';
/** Home → copy: the decision of the handoff at `epoch` (sent until delivered). */
export const handoffDecisionSignal = defineSignal<[HandoffDecisionNotice]>('handoffDecision');
export interface HandoffDecisionNotice {
  epoch: number;
  decision: HandoffDecision;
}
/** Copy → home: asks the decision of the handoff at `epoch`; `undecided` while the home has not decided. */
export const handoffDecisionQuery = defineQuery<HandoffDecision | 'undecided', [epoch: number]>('handoffDecision');
/** Copy → home: the job ended at the peer (sent until delivered); the home ends with the same outcome. */
export const handedJobEndedSignal = defineSignal<[HandedJobEnded]>('handedJobEnded');
export interface HandedJobEnded {
  epoch: number;
  result: JobResult;
}
/** On the home workflow: keep the job in its home region from now on (no handoff). */
export const pinUpdate = defineUpdate<JobStatus, [reason: string]>('pin');
/** On the home workflow: take a handed-off job back before it starts at the peer; refused once it has been placed there. */
export const recallUpdate = defineUpdate<JobStatus, [reason: string]>('recall');
/** Home → copy: give the job back (for a recall); refused once the copy has been placed. */
export const giveBackUpdate = defineUpdate<JobStatus, [reason: string]>('giveBack');

/** Kept for callers that only signal; same effect as the `cancel` update. */
export const cancelSignal = defineSignal<[reason?: string]>('cancel');
export const statusQuery = defineQuery<JobStatus>('status');
/** Stops the job wherever it is and releases what it holds. Refused for a finished job. */
export const cancelUpdate = defineUpdate<JobStatus, [reason: string]>('cancel');
/** Sends a placed or running job back to the queue, keeping its queue position. */
export const requeueUpdate = defineUpdate<JobStatus, [reason: string]>('requeue');
/** Changes the job's priority within its tier (0..1000); applies to its queue position at the next cycle. */
export const setPriorityUpdate = defineUpdate<JobStatus, [priority: number]>('setPriority');

// A job checks every signal's argument before acting on it (api/validation.ts: validatePlacedDelivery,
// validateWaitingNotice, validatePreemptRequest, validateHandoffDecision, validateHandedJobEnded,
// validateCancelReason) and ignores a malformed one, logging why.
export interface PlacedDelivery {
  epoch: number;
  placement: Placement;
}
/** From the region scheduler: the job was placed at this epoch (the run checks it against the database before launching). */
export const placedSignal = defineSignal<[PlacedDelivery]>('placed');
export interface WaitingNotice {
  epoch: number;
  reason: string;
}
/** From the region scheduler: why the job still waits. */
export const waitingSignal = defineSignal<[WaitingNotice]>('waiting');

export interface PreemptRequest {
  preemptor: string;
  graceMs: number;
}
/** From the region scheduler: release your devices for `preemptor` after `graceMs` (checkpoint first). */
export const preemptSignal = defineSignal<[PreemptRequest]>('preempt');

// --- the region scheduler --------------------------------------------------------------------
/** RegionSchedulerWorkflow's input, carried across continue-as-new. */
export interface RegionSchedulerInput {
  region: string;
  /** Carried over continue-as-new: a kick arrived that no cycle has served yet. */
  pending?: boolean;
  cycles?: number;
  /** Jobs placed by earlier runs' cycles (carried across continue-as-new). */
  placed?: number;
  /** Wait after a kick for more kicks before running the cycle. */
  debounceMs?: number;
  /** Longest time between cycles with no kick. */
  periodMs?: number;
  /** Cycles, and kicks, per run before continuing as new (defaults below; smaller in tests). */
  cyclesPerRun?: number;
  kicksPerRun?: number;
}

/** Something changed (a submission, a release, a priority): run a cycle soon. */
export const kickSignal = defineSignal('kick');
export interface NodeActionResult {
  node: string;
  state: string;
  /** Jobs sent back to the queue by a drain. */
  requeued: string[];
  /**
   * Jobs a drain asked but that did not answer in time (their workflow is stuck or gone): the
   * node stays draining, so nothing new lands there; each requeues at its next answer, or the
   * reconciler releases it if its workflow has ended.
   */
  unanswered?: string[];
}
export const cordonUpdate = defineUpdate<NodeActionResult, [node: string]>('cordon');
export const uncordonUpdate = defineUpdate<NodeActionResult, [node: string]>('uncordon');
export const drainUpdate = defineUpdate<NodeActionResult, [node: string]>('drain');
export interface SchedulerStatus {
  region: string;
  cycles: number;
  /** Jobs its cycles placed (jobs placed on admission are not counted). */
  placed: number;
  lastCycle?: { at: number; considered: number; placed: number; waiting: number; ms: number };
}
export const schedulerStatusQuery = defineQuery<SchedulerStatus>('status');

// --- the inventory exchange ------------------------------------------------------------------
/** On a region's `peers/<region>` workflow: a peer's inventory summary, stored if newer than the one held. */
export const offerSummaryUpdate = defineUpdate<{ stored: true; version: number }, [InventorySummary]>('offerSummary');
export interface PeerExchangeStatus {
  region: string;
  /** Summaries published to each peer: sent, and the last failure (an unreachable peer). */
  published: Record<string, { sent: number; failed: number; lastError?: string; lastSentAt?: number }>;
  /** Summaries received from each peer, and refused ones with the reason. */
  received: Record<string, { version: number; at: number }>;
  refused: number;
  lastRefusal?: string;
  /** Publications made before their period ended, because free capacity moved a lot; the last reason. */
  early?: number;
  lastEarlyReason?: string;
}
export const peerExchangeStatusQuery = defineQuery<PeerExchangeStatus>('status');
/** The exchange's publication: the free devices per type it last published, and how long it may wait for a large change. */
export interface PublishWhenDue {
  /** Free and total devices per type in the last publication (none: publish at once). */
  published?: Readonly<Record<string, { free: number; total: number }>>;
  /** Until the period ends. */
  waitMs: number;
  /** However large the change, not before this (early publications are at least this far apart). */
  minWaitMs?: number;
}
export interface PublishedWhenDue {
  /** Per peer, the version taken or the error. */
  sent: Record<string, { ok: true; version: number } | { ok: false; error: string }>;
  /** Free and total devices per type in this publication. */
  free: Readonly<Record<string, { free: number; total: number }>>;
  /** Why it went out before its period ended, if it did. */
  early?: string;
}
/** PeerExchangeWorkflow's input, carried across continue-as-new. */
export interface PeerExchangeInput {
  region: string;
  /** How often the region publishes its summary to its peers. */
  publishEveryMs?: number;
  status?: PeerExchangeStatus;
}

// --- reservations ----------------------------------------------------------------------------
export interface ReservationRequest {
  id: string;
  tenant: string;
  acceleratorType: string;
  devices: number;
  /** ISO timestamps. */
  startsAt: string;
  endsAt: string;
}
export interface ReservationInfo extends ReservationRequest {
  state: 'pending' | 'active' | 'ended' | 'cancelled';
  workflowId: string;
}
/** On the region scheduler: books capacity for a tenant over a window; refused if it overbooks. */
export const reserveUpdate = defineUpdate<ReservationInfo, [ReservationRequest]>('reserve');
/** On a reservation's workflow: ends it now (or before it starts). */
export const cancelReservationSignal = defineSignal('cancel');
export const reservationStatusQuery = defineQuery<ReservationInfo>('status');
