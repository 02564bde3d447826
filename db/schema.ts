// The typed shape of the scheduler's PostgreSQL database, one interface per table.
import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';
import type { JobSpec, StoredJobState } from '../api/types';
import type { InventorySummary } from '../api/peers';
import type { AutoscalerLimits } from '../api/autoscaler';

export type NodeState = 'ready' | 'cordoned' | 'draining' | 'down';
export type AcceleratorFamily = 'gpu' | 'npu';

export interface AcceleratorTypesTable {
  name: string;
  family: AcceleratorFamily;
  model: string;
  memory_mib: number;
}

export interface ClustersTable {
  id: Generated<number>;
  region: string;
  provider: string;
  name: string;
}

export interface NodesTable {
  id: Generated<number>;
  cluster_id: number;
  name: string;
  accelerator_type: string;
  /** Topology path: pod contains racks, a rack contains nodes. */
  pod: string;
  rack: string;
  state: Generated<NodeState>;
  labels: ColumnType<Record<string, string>, string | undefined, string>;
  device_count: number;
  /** Free share of each device in milli-devices (1000 = the whole device is free). Kept by trigger. */
  free_milli: ColumnType<number[], number[] | undefined, never>;
  /** Derived by trigger: devices entirely free. */
  free_whole: ColumnType<number, never, never>;
  /** Derived by trigger: the largest free share among partly used devices (0 when none). */
  max_partial: ColumnType<number, never, never>;
  /** Host CPU in milli-cores; NULL: not tracked (room for any CPU). */
  cpu_milli: ColumnType<number | null, number | null | undefined, number | null>;
  /** Kept by trigger: cpu_milli minus what allocations hold. */
  free_cpu_milli: ColumnType<number | null, never, never>;
  /** Host memory in MiB; NULL: not tracked (room for any memory). */
  memory_mib: ColumnType<number | null, number | null | undefined, number | null>;
  /** Kept by trigger: memory_mib minus what allocations hold. */
  free_memory_mib: ColumnType<number | null, never, never>;
  /** The provider the node belongs to (`owned` for the owned fleet), and what it was provisioned as. */
  provider: Generated<string>;
  offering: ColumnType<string | null, string | null | undefined, string | null>;
  provision_request: ColumnType<string | null, string | null | undefined, string | null>;
  /** Price of one of its devices for an hour (0: owned). */
  price_per_device_hour: Generated<number>;
  spot: Generated<boolean>;
  /** Since when it holds nothing, as the autoscaler last saw (NULL: busy, or not watched). */
  idle_since: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export interface JobsTable {
  id: string;
  tenant: string;
  tier: string;
  region: string;
  workflow_id: string;
  /** The validated spec the job was admitted with; written as JSON text, read back parsed. */
  spec: ColumnType<JobSpec, string, string>;
  state: StoredJobState;
  epoch: number;
  waiting_reason: string | null;
  priority: Generated<number>;
  /** Queue position: set at submission, kept across requeues. */
  enqueued_at: ColumnType<Date, Date | undefined, Date>;
  placed_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  attempt: Generated<number>;
  /** Quota keys (tenant|type) charged for the current allocation. */
  quota_charge: string[] | null;
  quota_milli: number | null;
  /** Jobs this one was preempted for (it may not preempt them back). */
  preempted_by: ColumnType<string[], string[] | undefined, string[]>;
  created_at: ColumnType<Date, Date | undefined, never>;
  updated_at: ColumnType<Date, Date | undefined, Date>;
  /** At home: the peer the job was offered or handed to, and the epoch of that handoff. */
  handoff_peer: ColumnType<string | null, string | null | undefined, string | null>;
  handoff_epoch: ColumnType<number | null, number | null | undefined, number | null>;
  /** On a copy at a peer: the home region and the home's epoch of the handoff. */
  origin_region: ColumnType<string | null, string | null | undefined, string | null>;
  origin_epoch: ColumnType<number | null, number | null | undefined, number | null>;
}

export interface PeerSummariesTable {
  region: string;
  version: ColumnType<string, number, number>;
  received_at: ColumnType<Date, Date | undefined, Date>;
  summary: ColumnType<InventorySummary, string, string>;
}

export interface AllocationsTable {
  id: Generated<string>;
  job_id: string;
  epoch: number;
  node_id: number;
  device_idx: number;
  /** Share of the device held, 1..1000 milli-devices. */
  milli: number;
  worker_idx: number;
  /** Host CPU the worker holds, on its first device's row (0 on the others). */
  cpu_milli: Generated<number>;
  /** Host memory the worker holds, on its first device's row (0 on the others). */
  memory_mib: Generated<number>;
  created_at: ColumnType<Date, Date | undefined, never>;
}

export interface TenantsTable {
  path: string;
  parent: string | null;
  active: Generated<boolean>;
  allowed_tiers: string[] | null;
  allowed_types: string[] | null;
  max_devices_per_job: number | null;
  updated_at: Generated<Date>;
}

export interface QuotasTable {
  tenant: string;
  accelerator_type: string;
  nominal: number;
  borrowing_limit: number | null;
  lending_limit: number | null;
  /** Milli-devices in use by the rule's subtree; kept in the allocation's transaction. */
  used_milli: ColumnType<string, string | number | undefined, string | number>;
}

export type ExecutionState = 'running' | 'succeeded' | 'failed' | 'lost' | 'stopped';

/** A run's times are bigint milliseconds (a valid run lasts up to 30 days), which pg reads as strings. */
export interface ExecutionsTable {
  job_id: string;
  epoch: number;
  state: ExecutionState;
  duration_ms: ColumnType<string, number, number>;
  progress_ms: ColumnType<string, number | undefined, number>;
  checkpoint_ms: ColumnType<string, number | undefined, number>;
  resumed_at: ColumnType<Date, Date | undefined, Date>;
  fail_at_ms: ColumnType<string | null, number | null | undefined, number | null>;
  detail: string | null;
}

export interface NominationsTable {
  preemptor: string;
  victim: string;
  node_id: number;
  created_at: ColumnType<Date, Date | undefined, never>;
  /** When the preempt signal was last delivered to the victim; NULL until one is. */
  told_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

export type ReservationState = 'pending' | 'active' | 'ended' | 'cancelled';

export interface ReservationsTable {
  id: string;
  tenant: string;
  accelerator_type: string;
  region: string;
  devices: number;
  starts_at: Date;
  ends_at: Date;
  state: Generated<ReservationState>;
  created_at: ColumnType<Date, Date | undefined, never>;
}

export type ProvisionState = 'provisioning' | 'fulfilled' | 'partial' | 'failed';

/** A provisioning request, keyed by the caller's request id (a retry finds the row). */
export interface ProvisionRequestsTable {
  request_id: string;
  provider: string;
  offering: string;
  region: string;
  count: number;
  state: ProvisionState;
  outcome_granted: number;
  outcome_error: string | null;
  granted: number | null;
  error: string | null;
  requested_at: ColumnType<Date, Date | undefined, Date>;
  ready_at: Date;
  settled_at: Date | null;
}

export type ProviderNodeState = 'running' | 'released' | 'reclaimed' | 'lost';

export interface ProviderNodesTable {
  name: string;
  provider: string;
  offering: string;
  request_id: string;
  idx: number;
  region: string;
  state: ProviderNodeState;
  ready_at: Date;
  notice_at: Date | null;
  reclaim_at: Date | null;
  noticed: Generated<boolean>;
  ended_at: Date | null;
}

export interface ProviderEventsTable {
  id: Generated<string>;
  provider: string;
  region: string;
  kind: 'node-ready' | 'provisioning-failed' | 'node-lost' | 'spot-reclaim-notice';
  request_id: string | null;
  node: string | null;
  reclaim_at: Date | null;
  detail: string | null;
  at: Generated<Date>;
  handled_at: Date | null;
}

export interface AutoscalerSettingsTable {
  region: string;
  limits: ColumnType<AutoscalerLimits, string, string>;
  paused: boolean;
  updated_at: ColumnType<Date, Date | undefined, Date>;
}

export type ApiRole = 'submitter' | 'operator' | 'admin';

/** An API key: only the sha256 of the whole key is kept; `tenant` is the subtree it acts on (`*`: every tenant). */
export interface ApiKeysTable {
  id: string;
  name: string;
  tenant: string;
  role: ApiRole;
  secret_sha256: string;
  created_by: string;
  created_at: ColumnType<Date, Date | undefined, never>;
  revoked_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  revoked_by: ColumnType<string | null, string | null | undefined, string | null>;
}

/** One operator or admin action taken through the HTTP API; append-only. */
export interface AuditLogTable {
  id: Generated<string>;
  at: ColumnType<Date, Date | undefined, never>;
  actor: string;
  actor_kind: 'api-key' | 'oidc' | 'bootstrap';
  role: ApiRole;
  action: string;
  target: string;
  tenant: string | null;
  reason: string;
  outcome: 'ok' | 'refused' | 'failed';
  detail: string | null;
  request: ColumnType<Record<string, unknown>, string | undefined, never>;
}

/** Limits on a tenant subtree's submissions; NULL: the nearest ancestor's, else the API's default. */
export interface TenantLimitsTable {
  tenant: string;
  max_queued_jobs: number | null;
  submit_per_second: number | null;
  submit_burst: number | null;
  updated_at: ColumnType<Date, Date | undefined, Date>;
}

/** The spec hash a job id was first submitted with through the HTTP API (idempotent submits). */
export interface ApiSubmissionsTable {
  job_id: string;
  tenant: string;
  spec_sha256: string;
  submitted_by: string;
  created_at: ColumnType<Date, Date | undefined, never>;
}

export interface Database {
  accelerator_types: AcceleratorTypesTable;
  clusters: ClustersTable;
  nodes: NodesTable;
  jobs: JobsTable;
  allocations: AllocationsTable;
  tenants: TenantsTable;
  api_keys: ApiKeysTable;
  audit_log: AuditLogTable;
  tenant_limits: TenantLimitsTable;
  api_submissions: ApiSubmissionsTable;
  quotas: QuotasTable;
  executions: ExecutionsTable;
  nominations: NominationsTable;
  reservations: ReservationsTable;
  peer_summaries: PeerSummariesTable;
  provision_requests: ProvisionRequestsTable;
  provider_nodes: ProviderNodesTable;
  provider_events: ProviderEventsTable;
  autoscaler_settings: AutoscalerSettingsTable;
}

export type NodeRow = Selectable<NodesTable>;
export type NewNode = Insertable<NodesTable>;
export type JobRow = Selectable<JobsTable>;
