// Every request and response shape of the HTTP API, declared once with TypeBox: Fastify validates
// requests against them (AJV, all errors reported), serializes responses by them, and the OpenAPI
// document at /openapi.json is generated from them. Field rules the schema cannot say (tenant path
// syntax, a request's geometry) are checked after it by api/validation.ts, with the same error shape.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { JOB_STATES, TIERS, TOPOLOGIES, TYPE_PREFERENCES } from '../types';
import { LIMITS, MAX_MESSAGE_TEXT } from '../validation';

/** One of a list of strings: a single `enum` (AJV then names the allowed values in one error). */
const literals = <T extends string>(values: readonly T[], description?: string) =>
  Type.Unsafe<T>({ type: 'string', enum: [...values], ...(description ? { description } : {}) });

const Int = (min: number, max: number, description?: string) =>
  Type.Integer({ minimum: min, maximum: max, ...(description ? { description } : {}) });

export const ROLES = ['submitter', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

// --- common ----------------------------------------------------------------------------------
export const ProblemSchema = Type.Object(
  { field: Type.String({ description: 'the field, as a dotted path into the request' }), rule: Type.String() },
  {},
);
export const ErrorSchema = Type.Object(
  {
    error: Type.String({ description: 'bad-request, unauthenticated, forbidden, not-found, conflict, too-many-requests, …' }),
    message: Type.String(),
    problems: Type.Array(ProblemSchema),
  },
  { description: 'Every refusal: what was wrong, field by field.' },
);

/** The same rule as api/validation.ts applies to a spec's tenant. */
export const TENANT_PATTERN = '^[a-z0-9][a-z0-9_-]{0,62}(/[a-z0-9][a-z0-9_-]{0,62}){0,2}$';
export const TenantPath = Type.String({
  pattern: TENANT_PATTERN,
  minLength: 1,
  maxLength: 191,
  description: 'a tenant path org[/team[/project]] of lowercase names',
});
export const JobIdSchema = Type.String({ minLength: 1, maxLength: 63, pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' });
export const Reason = Type.String({
  minLength: 1,
  maxLength: MAX_MESSAGE_TEXT,
  description: 'why the action is taken; written to the audit log',
});
const Name = Type.String({ minLength: 1, maxLength: LIMITS.maxNameLength });
const Timestamp = Type.String({ description: 'ISO 8601 timestamp' });

export const ReasonBody = Type.Object({ reason: Reason }, { additionalProperties: false });
export type ReasonBody = Static<typeof ReasonBody>;
export const OptionalReasonBody = Type.Object({ reason: Type.Optional(Reason) }, { additionalProperties: false });
export type OptionalReasonBody = Static<typeof OptionalReasonBody>;

export const JobIdParams = Type.Object({ jobId: JobIdSchema });
export type JobIdParams = Static<typeof JobIdParams>;
export const IdParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 63, pattern: '^[a-z0-9][a-z0-9._-]{0,62}$' }) });
export type IdParams = Static<typeof IdParams>;

/** Paging: `limit` rows (default 50, at most 500), from `cursor` (the previous page's `nextCursor`). */
const Paging = {
  limit: Type.Optional(Type.String({ pattern: '^[0-9]{1,3}$', description: 'rows per page, 1..500 (default 50)' })),
  cursor: Type.Optional(Type.String({ maxLength: 400, description: "the previous page's nextCursor" })),
};

// --- jobs ------------------------------------------------------------------------------------
export const ResourceRequestSchema = Type.Object(
  {
    acceleratorTypes: Type.Array(Name, { minItems: 1, maxItems: LIMITS.maxAcceleratorTypes }),
    typePreference: Type.Optional(literals(TYPE_PREFERENCES)),
    workers: Int(1, LIMITS.maxWorkers),
    devicesPerWorker: Int(0, LIMITS.maxDevicesPerWorker),
    milliPerWorker: Type.Optional(Int(1, 999)),
    cpuMilliPerWorker: Type.Optional(Int(0, LIMITS.maxCpuMilliPerWorker)),
    memoryMibPerWorker: Type.Optional(Int(0, LIMITS.maxMemoryMibPerWorker)),
    topology: literals(TOPOLOGIES),
    nodeLabels: Type.Optional(
      Type.Record(Type.String({ minLength: 1, maxLength: LIMITS.maxNameLength }), Type.String({ maxLength: LIMITS.maxLabelValueLength }), {
        maxProperties: LIMITS.maxNodeLabels,
      }),
    ),
    antiAffinity: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const JobSpecSchema = Type.Object(
  {
    jobId: JobIdSchema,
    tenant: TenantPath,
    tier: literals(TIERS),
    priority: Int(0, LIMITS.maxPriority),
    request: ResourceRequestSchema,
    durationMs: Int(1, LIMITS.maxDurationMs),
    allowedRegions: Type.Optional(Type.Array(Type.String({ maxLength: 63 }), { minItems: 1, maxItems: LIMITS.maxAllowedRegions })),
    handoff: Type.Optional(
      Type.Object(
        { afterMs: Type.Optional(Int(0, LIMITS.maxDurationMs)), enabled: Type.Optional(Type.Boolean()) },
        { additionalProperties: false },
      ),
    ),
    checkpointable: Type.Optional(Type.Boolean()),
    maxWaitMs: Type.Optional(Int(1, LIMITS.maxDurationMs)),
    maxAttempts: Type.Optional(Int(1, LIMITS.maxAttempts)),
    minRuntimeMs: Type.Optional(Int(0, LIMITS.maxDurationMs)),
    simulatedFailures: Type.Optional(Int(0, LIMITS.maxAttempts)),
  },
  { additionalProperties: false, description: 'A job as submitted (see api/types.ts JobSpec).' },
);
export type JobSpecBody = Static<typeof JobSpecSchema>;

export const SubmitResponse = Type.Object(
  {
    jobId: Type.String(),
    tenant: Type.String(),
    workflowId: Type.String(),
    region: Type.String(),
    created: Type.Boolean({ description: 'false: this job id was submitted before with the same spec (the same answer again)' }),
  },
  {},
);
export type SubmitResponse = Static<typeof SubmitResponse>;

const PlacementSchema = Type.Object({
  jobId: Type.String(),
  epoch: Type.Integer(),
  acceleratorType: Type.String(),
  workers: Type.Array(
    Type.Object({
      workerIdx: Type.Integer(),
      nodeId: Type.Integer(),
      nodeName: Type.String(),
      deviceIdx: Type.Array(Type.Integer()),
      milli: Type.Integer(),
    }),
  ),
});

export const JobStatusSchema = Type.Object(
  {
    jobId: Type.String(),
    phase: literals(JOB_STATES),
    epoch: Type.Integer(),
    attempt: Type.Integer(),
    tier: Type.String(),
    priority: Type.Integer(),
    waitingReason: Type.Optional(Type.String()),
    placement: Type.Optional(PlacementSchema),
    cancelRequested: Type.Boolean(),
    checkpointMs: Type.Number(),
    lastRequeue: Type.Optional(Type.String()),
    region: Type.String(),
    pinned: Type.Boolean(),
    handoff: Type.Optional(
      Type.Object({ peer: Type.String(), epoch: Type.Integer(), state: Type.String(), reason: Type.Optional(Type.String()) }),
    ),
    origin: Type.Optional(Type.Object({ region: Type.String(), epoch: Type.Integer() })),
  },
  { description: "The job workflow's status query, where the job is now." },
);

export const JobSummarySchema = Type.Object(
  {
    jobId: Type.String(),
    tenant: Type.String(),
    state: Type.String(),
    tier: Type.String(),
    priority: Type.Integer(),
    region: Type.String({ description: 'the region the job is in now (the peer, for a job handed off)' }),
    acceleratorTypes: Type.Array(Type.String()),
    epoch: Type.Integer(),
    waitingReason: Type.Union([Type.String(), Type.Null()]),
    createdAt: Timestamp,
    updatedAt: Timestamp,
  },
  { description: "A job as its region's database mirrors it." },
);
export type JobSummary = Static<typeof JobSummarySchema>;

export const JobView = Type.Object(
  {
    jobId: Type.String(),
    tenant: Type.String(),
    workflowId: Type.String(),
    status: Type.Optional(JobStatusSchema),
    summary: Type.Optional(JobSummarySchema),
  },
  { description: 'status: from the job workflow (absent when its workflow cannot answer); summary: from the database' },
);

export const JobListQuery = Type.Object(
  {
    state: Type.Optional(literals(JOB_STATES)),
    tier: Type.Optional(literals(TIERS)),
    acceleratorType: Type.Optional(Name),
    region: Type.Optional(Type.String({ maxLength: 63 })),
    tenant: Type.Optional(TenantPath),
    ...Paging,
  },
  { additionalProperties: false },
);
export type JobListQuery = Static<typeof JobListQuery>;
export const JobListResponse = Type.Object({ jobs: Type.Array(JobSummarySchema), nextCursor: Type.Optional(Type.String()) });

export const WhyResponse = Type.Object({
  jobId: Type.String(),
  state: Type.String(),
  waiting: Type.Boolean({ description: 'whether the job is waiting to be placed' }),
  waitingReason: Type.Optional(Type.String()),
  blockedBy: Type.Optional(Type.String({ description: 'capacity, quota, held, reserved, handoff, admission, requeue, queue' })),
  unblock: Type.Array(Type.String(), { description: 'what would let it go on, in words' }),
});
export type WhyResponse = Static<typeof WhyResponse>;

export const PriorityBody = Type.Object(
  { priority: Int(0, LIMITS.maxPriority), reason: Type.Optional(Reason) },
  { additionalProperties: false },
);
export type PriorityBody = Static<typeof PriorityBody>;

export const LocationResponse = Type.Object({
  jobId: Type.String(),
  region: Type.String({ description: 'the region whose copy of the job is live (or ended last)' }),
  chain: Type.Array(Type.String(), { description: 'regions followed from home, home first' }),
  phase: Type.String(),
  unreachable: Type.Optional(Type.String()),
});

// --- reservations ------------------------------------------------------------------------------
export const ReservationBody = Type.Object(
  {
    id: IdParams.properties.id,
    tenant: TenantPath,
    acceleratorType: Name,
    devices: Int(1, 1_000_000),
    startsAt: Timestamp,
    endsAt: Timestamp,
    reason: Reason,
  },
  { additionalProperties: false },
);
export type ReservationBody = Static<typeof ReservationBody>;
export const ReservationSchema = Type.Object({
  id: Type.String(),
  tenant: Type.String(),
  acceleratorType: Type.String(),
  devices: Type.Integer(),
  startsAt: Timestamp,
  endsAt: Timestamp,
  state: Type.String(),
});
export type ReservationView = Static<typeof ReservationSchema>;
export const ReservationListQuery = Type.Object(
  { tenant: Type.Optional(TenantPath), state: Type.Optional(literals(['pending', 'active', 'ended', 'cancelled'] as const)) },
  { additionalProperties: false },
);
export type ReservationListQuery = Static<typeof ReservationListQuery>;

// --- admin: tenants, limits, quotas --------------------------------------------------------------
export const LimitsSchema = Type.Object(
  {
    maxQueuedJobs: Type.Optional(Type.Union([Int(0, 10_000_000), Type.Null()])),
    submitPerSecond: Type.Optional(Type.Union([Type.Number({ exclusiveMinimum: 0, maximum: 100_000 }), Type.Null()])),
    submitBurst: Type.Optional(Type.Union([Int(1, 1_000_000), Type.Null()])),
  },
  { additionalProperties: false, description: 'null: inherit (the nearest ancestor that sets it, else the default)' },
);
export type LimitsBody = Static<typeof LimitsSchema>;

export const TenantBody = Type.Object(
  {
    path: TenantPath,
    active: Type.Optional(Type.Boolean()),
    allowedTiers: Type.Optional(Type.Union([Type.Array(literals(TIERS), { maxItems: 3, uniqueItems: true }), Type.Null()])),
    allowedTypes: Type.Optional(Type.Union([Type.Array(Name, { maxItems: LIMITS.maxAcceleratorTypes, uniqueItems: true }), Type.Null()])),
    maxDevicesPerJob: Type.Optional(Type.Union([Int(1, LIMITS.maxWorkers * LIMITS.maxDevicesPerWorker), Type.Null()])),
    limits: Type.Optional(LimitsSchema),
    reason: Reason,
  },
  { additionalProperties: false },
);
export type TenantBody = Static<typeof TenantBody>;
export const TenantSchema = Type.Object({
  path: Type.String(),
  parent: Type.Union([Type.String(), Type.Null()]),
  active: Type.Boolean(),
  allowedTiers: Type.Union([Type.Array(Type.String()), Type.Null()]),
  allowedTypes: Type.Union([Type.Array(Type.String()), Type.Null()]),
  maxDevicesPerJob: Type.Union([Type.Integer(), Type.Null()]),
  limits: Type.Object({
    maxQueuedJobs: Type.Union([Type.Integer(), Type.Null()]),
    submitPerSecond: Type.Union([Type.Number(), Type.Null()]),
    submitBurst: Type.Union([Type.Integer(), Type.Null()]),
  }),
});
export type TenantView = Static<typeof TenantSchema>;

export const QuotaBody = Type.Object(
  {
    tenant: TenantPath,
    acceleratorType: Name,
    nominal: Int(0, 1_000_000),
    borrowingLimit: Type.Optional(Type.Union([Int(0, 1_000_000), Type.Null()])),
    lendingLimit: Type.Optional(Type.Union([Int(0, 1_000_000), Type.Null()])),
    reason: Reason,
  },
  { additionalProperties: false },
);
export type QuotaBody = Static<typeof QuotaBody>;
export const QuotaKeyBody = Type.Object({ tenant: TenantPath, acceleratorType: Name, reason: Reason }, { additionalProperties: false });
export type QuotaKeyBody = Static<typeof QuotaKeyBody>;
export const QuotaSchema = Type.Object({
  tenant: Type.String(),
  acceleratorType: Type.String(),
  nominal: Type.Integer(),
  borrowingLimit: Type.Union([Type.Integer(), Type.Null()]),
  lendingLimit: Type.Union([Type.Integer(), Type.Null()]),
  usedDevices: Type.Number({ description: 'devices held by the subtree now (recomputed from the jobs holding devices)' }),
});
export type QuotaView = Static<typeof QuotaSchema>;
export const TenantFilterQuery = Type.Object({ tenant: Type.Optional(TenantPath) }, { additionalProperties: false });
export type TenantFilterQuery = Static<typeof TenantFilterQuery>;

// --- nodes ---------------------------------------------------------------------------------------
export const NodeNameParams = Type.Object({ name: Type.String({ minLength: 1, maxLength: 253, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' }) });
export type NodeNameParams = Static<typeof NodeNameParams>;
export const NodeBody = Type.Object(
  {
    name: NodeNameParams.properties.name,
    cluster: Type.String({ minLength: 1, maxLength: 63, description: 'the cluster in this region (created if new)' }),
    provider: Type.Optional(Type.String({ minLength: 1, maxLength: 63, description: 'the cluster provider (default owned)' })),
    acceleratorType: Name,
    deviceCount: Int(1, 64),
    pod: Type.String({ minLength: 1, maxLength: 63 }),
    rack: Type.String({ minLength: 1, maxLength: 63 }),
    labels: Type.Optional(
      Type.Record(Type.String({ minLength: 1, maxLength: LIMITS.maxNameLength }), Type.String({ maxLength: LIMITS.maxLabelValueLength }), {
        maxProperties: LIMITS.maxNodeLabels,
      }),
    ),
    cpuMilli: Type.Optional(Int(1, LIMITS.maxCpuMilliPerWorker)),
    memoryMib: Type.Optional(Int(1, LIMITS.maxMemoryMibPerWorker)),
    reason: Reason,
  },
  { additionalProperties: false },
);
export type NodeBody = Static<typeof NodeBody>;
export const NodeSchema = Type.Object({
  name: Type.String(),
  cluster: Type.String(),
  acceleratorType: Type.String(),
  state: Type.String(),
  deviceCount: Type.Integer(),
  freeDevices: Type.Integer({ description: 'devices entirely free' }),
  pod: Type.String(),
  rack: Type.String(),
  labels: Type.Record(Type.String(), Type.String()),
});
export type NodeView = Static<typeof NodeSchema>;
export const NodeListQuery = Type.Object(
  {
    state: Type.Optional(literals(['ready', 'cordoned', 'draining', 'down'] as const)),
    acceleratorType: Type.Optional(Name),
  },
  { additionalProperties: false },
);
export type NodeListQuery = Static<typeof NodeListQuery>;
export const NodeActionResultSchema = Type.Object({
  node: Type.String(),
  state: Type.String(),
  requeued: Type.Array(Type.String()),
  unanswered: Type.Optional(Type.Array(Type.String())),
});
export const AcceleratorTypeBody = Type.Object(
  {
    name: Name,
    family: literals(['gpu', 'npu'] as const),
    model: Type.String({ minLength: 1, maxLength: 120 }),
    memoryMib: Int(1, 10_000_000),
    reason: Reason,
  },
  { additionalProperties: false },
);
export type AcceleratorTypeBody = Static<typeof AcceleratorTypeBody>;

// --- identity and audit ------------------------------------------------------------------------
export const ApiKeyBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 120 }),
    tenant: Type.String({ minLength: 1, maxLength: 191, description: "a tenant path, or '*' for every tenant" }),
    role: literals(ROLES),
    reason: Reason,
  },
  { additionalProperties: false },
);
export type ApiKeyBody = Static<typeof ApiKeyBody>;
export const ApiKeySchema = Type.Object({
  id: Type.String(),
  name: Type.String(),
  tenant: Type.String(),
  role: Type.String(),
  createdBy: Type.String(),
  createdAt: Timestamp,
  revokedAt: Type.Union([Timestamp, Type.Null()]),
});
export type ApiKeyView = Static<typeof ApiKeySchema>;
export const ApiKeyCreated = Type.Object({
  ...ApiKeySchema.properties,
  key: Type.String({ description: 'the secret key, shown this once: send it as `Authorization: Bearer <key>`' }),
});

export const AuditQuery = Type.Object(
  { tenant: Type.Optional(TenantPath), action: Type.Optional(Type.String({ maxLength: 63 })), ...Paging },
  { additionalProperties: false },
);
export type AuditQuery = Static<typeof AuditQuery>;
export const AuditEntrySchema = Type.Object({
  id: Type.String(),
  at: Timestamp,
  actor: Type.String(),
  actorKind: Type.String(),
  role: Type.String(),
  action: Type.String(),
  target: Type.String(),
  tenant: Type.Union([Type.String(), Type.Null()]),
  reason: Type.String(),
  outcome: Type.String(),
  detail: Type.Union([Type.String(), Type.Null()]),
});
export type AuditEntryView = Static<typeof AuditEntrySchema>;
export const AuditListResponse = Type.Object({ entries: Type.Array(AuditEntrySchema), nextCursor: Type.Optional(Type.String()) });

export const WhoAmI = Type.Object({ subject: Type.String(), kind: Type.String(), tenant: Type.String(), role: Type.String() });

/** The refusals a route may answer, for its OpenAPI entry. */
export function refusals(...codes: number[]): Record<number, TSchema> {
  return Object.fromEntries(codes.map((c) => [c, ErrorSchema]));
}
