// Domain types shared by the client, the workflows and the activities. Plain data only.
export const TIERS = ['premium', 'standard', 'basic'] as const;
export type Tier = (typeof TIERS)[number];

export const TOPOLOGIES = ['any', 'node', 'rack', 'pod'] as const;
/** Where the workers of one gang must land together. */
export type Topology = (typeof TOPOLOGIES)[number];

/** `fgd`: fragmentation gradient descent, the default; the others are baselines. */
export const PLACEMENT_POLICIES = ['fgd', 'best-fit', 'first-fit', 'random-fit'] as const;
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
}

export interface JobResult {
  jobId: string;
  outcome: JobOutcome;
  reason?: string;
  placement?: Placement;
}
