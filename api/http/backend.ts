// What the HTTP API needs from the rest of the scheduler, as one interface the app builder is
// given: everything that touches the database or Temporal. The API layer (api/) may not import
// activities/ or db/; the implementation lives in worker/api-server.ts (over activities/admin.ts
// and the typed SchedulerClient). Methods throw ApiError (api/http/errors.ts) for refusals only
// they can know (no such job, a conflicting submission, an action the job refused).
import type { JobLocation } from '../client';
import type { JobSpec, JobStatus } from '../types';
import type { NodeActionResult, ReservationInfo, ReservationRequest } from '../messages';
import type { StoredKey } from './auth';
import type { LimitRow } from './limits';
import type {
  AcceleratorTypeBody,
  ApiKeyView,
  AuditEntryView,
  JobSummary,
  NodeBody,
  NodeView,
  QuotaView,
  ReservationView,
  Role,
  TenantView,
} from './schemas';

/** A page of rows, newest first, and the cursor of the next one. */
export interface Page<T> {
  rows: T[];
  nextCursor?: string;
}

export interface JobFilter {
  /** The caller's subtree (`*`: all), and optionally a narrower tenant within it. */
  scope: string;
  tenant?: string;
  state?: string;
  tier?: string;
  acceleratorType?: string;
  region?: string;
  limit: number;
  cursor?: { createdAt: string; id: string };
}

export type SubmissionClaim = 'new' | 'same' | { other: 'spec' | 'tenant' };

export interface AuditRecord {
  actor: string;
  actorKind: 'api-key' | 'oidc' | 'bootstrap';
  role: Role;
  action: string;
  target: string;
  tenant: string | null;
  reason: string;
  outcome: 'ok' | 'refused' | 'failed';
  detail?: string;
  request: Record<string, unknown>;
}

export type NodeAction = 'cordon' | 'uncordon' | 'drain' | 'down';

export interface TenantChange {
  path: string;
  active?: boolean;
  allowedTiers?: string[] | null;
  allowedTypes?: string[] | null;
  maxDevicesPerJob?: number | null;
  limits?: { maxQueuedJobs?: number | null; submitPerSecond?: number | null; submitBurst?: number | null };
}

export interface QuotaChange {
  tenant: string;
  acceleratorType: string;
  nominal: number;
  borrowingLimit: number | null;
  lendingLimit: number | null;
}

export interface ApiBackend {
  /** The region this API serves (its home region for submissions). */
  readonly region: string;

  // --- identity and audit ---
  findApiKey(id: string): Promise<StoredKey | undefined>;
  createApiKey(k: { id: string; name: string; tenant: string; role: Role; sha256: string; createdBy: string }): Promise<ApiKeyView>;
  listApiKeys(scope: string): Promise<ApiKeyView[]>;
  /** Revokes a key; undefined when there is none of that id. */
  revokeApiKey(id: string, by: string): Promise<ApiKeyView | undefined>;
  audit(entry: AuditRecord): Promise<void>;
  listAudit(q: { scope: string; tenant?: string; action?: string; limit: number; cursor?: string }): Promise<Page<AuditEntryView>>;

  // --- submissions and their limits ---
  /** The limit rows of a tenant's chain (itself and its ancestors) that exist. */
  limitRows(tenant: string): Promise<LimitRow[]>;
  /** Jobs of a subtree not yet placed nor ended (submitted, waiting, handing off, pending). */
  queuedJobs(scope: string): Promise<number>;
  /** Records the first submission of a job id with its spec hash, or says how an earlier one differs. */
  claimSubmission(c: { jobId: string; tenant: string; sha256: string; by: string }): Promise<SubmissionClaim>;
  /** Forgets a claim whose submission was refused (so nothing of it stays written). */
  dropClaim(jobId: string, sha256: string): Promise<void>;
  /** Moves a claim to a new spec (a rejected job submitted again, corrected). */
  replaceClaim(jobId: string, sha256: string): Promise<void>;
  /** Starts the job's workflow (a no-op for a live one); ApiError conflict when the id was used by a job that ended. */
  submit(spec: JobSpec): Promise<{ workflowId: string }>;
  /** How the job ended, if it has (its workflow's outcome); undefined while it is live or unknown. */
  endedAs(tenant: string, jobId: string): Promise<string | undefined>;

  // --- jobs ---
  /** The tenant of a job id known in this region (by the API's submissions or the jobs table). */
  jobTenant(jobId: string): Promise<string | undefined>;
  jobSummary(jobId: string): Promise<JobSummary | undefined>;
  listJobs(f: JobFilter): Promise<Page<JobSummary>>;
  /** The job's status where it is now; undefined when its workflow cannot be asked. */
  jobStatus(tenant: string, jobId: string): Promise<JobStatus | undefined>;
  locate(tenant: string, jobId: string): Promise<JobLocation>;
  cancel(tenant: string, jobId: string, reason: string): Promise<JobStatus>;
  requeue(tenant: string, jobId: string, reason: string): Promise<JobStatus>;
  setPriority(tenant: string, jobId: string, priority: number): Promise<JobStatus>;

  // --- reservations ---
  reserve(r: ReservationRequest): Promise<ReservationInfo>;
  reservation(id: string): Promise<ReservationView | undefined>;
  listReservations(q: { scope: string; tenant?: string; state?: string }): Promise<ReservationView[]>;
  cancelReservation(id: string): Promise<void>;

  // --- tenants, limits, quotas ---
  listTenants(scope: string): Promise<TenantView[]>;
  tenant(path: string): Promise<TenantView | undefined>;
  /** Creates or changes a tenant (its parent must exist); returns it as stored. */
  putTenant(t: TenantChange): Promise<TenantView>;
  listQuotas(scope: string, tenant?: string): Promise<QuotaView[]>;
  /** Stores a rule after the quota validation accepts it with every other rule; usage is recomputed. */
  putQuota(q: QuotaChange): Promise<QuotaView>;
  /** Removes a rule; false when there was none. */
  removeQuota(tenant: string, acceleratorType: string): Promise<boolean>;

  // --- nodes ---
  listNodes(q: { state?: string; acceleratorType?: string }): Promise<NodeView[]>;
  node(name: string): Promise<NodeView | undefined>;
  registerNode(n: Omit<NodeBody, 'reason'>): Promise<{ node: NodeView; created: boolean }>;
  putAcceleratorType(t: Omit<AcceleratorTypeBody, 'reason'>): Promise<void>;
  /** Cordon, uncordon, drain (through the region scheduler) or mark down (the node-loss path). */
  nodeAction(name: string, action: NodeAction): Promise<NodeActionResult>;

  /** Whether the database and Temporal answer (for /readyz). */
  ready(): Promise<{ database: boolean; temporal: boolean }>;
}
