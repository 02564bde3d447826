// Domain types shared by the client, the workflows and the activities. Plain data only.
export const TIERS = ['premium', 'standard', 'basic'] as const;
export type Tier = (typeof TIERS)[number];

export const TOPOLOGIES = ['any', 'node', 'rack', 'pod'] as const;
/** Where the workers of one gang must land together. */
export type Topology = (typeof TOPOLOGIES)[number];

/** `fgd`: fragmentation gradient descent, the default; the others are baselines. */
export const PLACEMENT_POLICIES = ['fgd', 'best-fit', 'first-fit', 'random-fit', 'fgd-host'] as const;
export type PlacementPolicyName = (typeof PLACEMENT_POLICIES)[number];

/**
 * How `acceleratorTypes` is read: `ordered`, a preference (the first type with room wins);
 * `none`, a set of equally acceptable types (the placement policy chooses among them).
 */
export const TYPE_PREFERENCES = ['ordered', 'none'] as const;
export type TypePreference = (typeof TYPE_PREFERENCES)[number];

/** What the allocator is asked for: `workers` × (`devicesPerWorker` whole devices, or one `milliPerWorker` share). */
export interface ResourceRequest {
  /** Acceptable accelerator types, most preferred first (unless `typePreference` is `none`). */
  acceleratorTypes: string[];
  /** `ordered` (default): the first listed type with room wins; `none`: the policy picks the best placement over all listed types. */
  typePreference?: TypePreference;
  /** Workers of a gang, placed all-or-nothing. */
  workers: number;
  /** Whole devices per worker; 0 when the worker takes a share of one device. */
  devicesPerWorker: number;
  /** Share of one device per worker in milli-devices (1..999); only when devicesPerWorker is 0. */
  milliPerWorker?: number;
  /** Host CPU each worker needs on its node, in milli-cores; absent: none. */
  cpuMilliPerWorker?: number;
  /** Host memory each worker needs on its node, in MiB; absent: none. */
  memoryMibPerWorker?: number;
  topology: Topology;
  /** Every label must be present on a node with this value. */
  nodeLabels?: Record<string, string>;
  /** Workers of the gang on distinct nodes. */
  antiAffinity?: boolean;
}

export interface JobSpec {
  jobId: string;
  /** Tenant path org/team/project. */
  tenant: string;
  tier: Tier;
  priority: number;
  request: ResourceRequest;
  /** Expected run time in milliseconds (the simulated executor runs this long). */
  durationMs: number;
  /** Regions the job may run in; absent means any. */
  allowedRegions?: string[];
  /**
   * When to look abroad: a job still waiting at home after `afterMs` is offered to a peer region
   * that has room (default 30 s); `enabled: false` keeps it at home. A job that can never run at
   * home (no node of its shape, or the home region not allowed) is offered at once.
   */
  handoff?: { afterMs?: number; enabled?: boolean };
  /** The job can save progress and resume from it after a requeue. */
  checkpointable?: boolean;
  /** Give up (outcome `failed`) after waiting this long for placement; absent means wait forever. */
  maxWaitMs?: number;
  /** Runs attempted before a failing job is given up (the retry policy); default 1. */
  maxAttempts?: number;
  /** Once placed, the job is not preempted before it has run this long (unless nothing else fits). */
  minRuntimeMs?: number;
  /** Simulated executor only: this many attempts fail halfway through. */
  simulatedFailures?: number;
}

/** One worker's devices on one node. */
export interface WorkerPlacement {
  workerIdx: number;
  nodeId: number;
  nodeName: string;
  deviceIdx: number[];
  /** Share held on each listed device, 1000 for whole devices. */
  milli: number;
}

export interface Placement {
  jobId: string;
  epoch: number;
  acceleratorType: string;
  workers: WorkerPlacement[];
}

export type AllocateResult =
  | { placed: true; placement: Placement }
  /** `blockedBy`: what stopped it — free capacity, quota, or the scheduler holding capacity for a higher-ranked job. */
  | { placed: false; reason: string; blockedBy?: 'capacity' | 'quota' | 'held' | 'reserved' };

/**
 * The one vocabulary of a job's state: the `JobState` search attribute, the status query's
 * `phase`, and (for the states a row can hold) the `jobs.state` column.
 */
export const JOB_STATES = [
  'submitted',
  'validating',
  'admitting',
  'waiting',
  /** Admitted at home but able to run only in another region: waiting for a peer with room. */
  'waiting-abroad',
  /** At home: offered to a peer, awaiting its answer; in no region's queue meanwhile. */
  'handing-off',
  /** At home: the peer took it (committed); the job lives there now. */
  'handed-off',
  /** At a peer: admitted, holding nothing, schedulable only once the home region's decision says committed. */
  'pending',
  'placed',
  'running',
  'releasing',
  'completed',
  'cancelled',
  'rejected',
  'failed',
] as const;
export type JobState = (typeof JOB_STATES)[number];

/** How a job ended. */
export type JobOutcome = Extract<JobState, 'completed' | 'cancelled' | 'rejected' | 'failed'>;
export const TERMINAL_STATES: readonly JobOutcome[] = ['completed', 'cancelled', 'rejected', 'failed'];

/**
 * The states a `jobs` row takes. `validating`, `admitting` and `releasing` are steps inside the
 * workflow that the database never records.
 */
export type StoredJobState = Exclude<JobState, 'validating' | 'admitting' | 'releasing'>;

export interface JobStatus {
  jobId: string;
  phase: JobState;
  /** Placement generation: a requeue starts a new epoch; allocations of older epochs are void. */
  epoch: number;
  /** Run attempts started so far. */
  attempt: number;
  tier: Tier;
  priority: number;
  waitingReason?: string;
  placement?: Placement;
  cancelRequested: boolean;
  /** Progress kept from earlier attempts by checkpoints, in milliseconds. */
  checkpointMs: number;
  /** Why the job went back to the queue last, if it did. */
  lastRequeue?: string;
  /** The region this copy of the job runs in. */
  region: string;
  /** Kept in its home region: no handoff (an operator's `pin`, or the spec's `handoff.enabled: false`). */
  pinned: boolean;
  /** At home: the current or last handoff of the job. */
  handoff?: HandoffRecord;
  /** At a peer: where the job came from, and the home region's epoch of the handoff. */
  origin?: { region: string; epoch: number };
}

/** A handoff as the home region records it: to whom, at which epoch, and how it stands. */
export interface HandoffRecord {
  peer: string;
  epoch: number;
  state: 'preparing' | 'committed' | 'aborted' | 'recalled';
  reason?: string;
}

export interface JobResult {
  jobId: string;
  outcome: JobOutcome;
  reason?: string;
  placement?: Placement;
  /** The region that ran (or ended) the job: the peer, for a job handed off. */
  region?: string;
  /** A copy's ending only: it gave the job back to its home (a recall); the job lives on there. */
  givenBack?: boolean;
}
