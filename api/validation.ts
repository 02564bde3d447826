// Pure validation of job specs and of the messages a job is sent. Each problem names the field, the value and the rule broken.
import { TERMINAL_STATES, TIERS, TOPOLOGIES, TYPE_PREFERENCES, type JobSpec, type ResourceRequest } from './types';

export const LIMITS = {
  maxWorkers: 1024,
  maxDevicesPerWorker: 64,
  maxDurationMs: 30 * 24 * 3600 * 1000,
  maxAttempts: 10,
  maxPriority: 1000,
  /** 10,000 cores and 1 PiB: beyond any host, and within the database's integer columns. */
  maxCpuMilliPerWorker: 10_000_000,
  maxMemoryMibPerWorker: 1_073_741_824,
  /** Names and lists: bounded so a spec stays small in every row, history and search attribute. */
  maxNameLength: 63,
  maxAcceleratorTypes: 16,
  maxAllowedRegions: 32,
  maxNodeLabels: 32,
  maxLabelValueLength: 253,
} as const;

const REGION = /^[a-z0-9][a-z0-9-]{0,62}$/;

/** Problems with a new priority given by an operator. */
export function validatePriority(priority: unknown): string[] {
  return int(priority) && priority >= 0 && priority <= LIMITS.maxPriority
    ? []
    : [`priority: ${show(priority)} must be an integer from 0 to ${LIMITS.maxPriority}`];
}

const ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const TENANT = /^[a-z0-9][a-z0-9_-]{0,62}(\/[a-z0-9][a-z0-9_-]{0,62}){0,2}$/;

/** A value as a problem quotes it: JSON, cut at 120 characters (a bad value may be huge). */
const show = (v: unknown): string => {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
};
const int = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

export function validateSpec(input: unknown): string[] {
  const problems: string[] = [];
  if (typeof input !== 'object' || input === null) return ['spec: must be an object'];
  const spec = input as Partial<JobSpec>;

  if (typeof spec.jobId !== 'string' || !ID.test(spec.jobId))
    problems.push(`jobId: ${show(spec.jobId)} must be 1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit`);
  if (typeof spec.tenant !== 'string' || !TENANT.test(spec.tenant))
    problems.push(
      `tenant: ${show(spec.tenant)} must be a path org[/team[/project]] of lowercase names of at most ${LIMITS.maxNameLength} characters`,
    );
  if (!TIERS.includes(spec.tier as never)) problems.push(`tier: ${show(spec.tier)} must be one of ${TIERS.join(', ')}`);
  problems.push(...validatePriority(spec.priority));
  if (!int(spec.durationMs) || spec.durationMs <= 0 || spec.durationMs > LIMITS.maxDurationMs)
    problems.push(`durationMs: ${show(spec.durationMs)} must be a positive integer of at most ${LIMITS.maxDurationMs}`);

  if (
    spec.allowedRegions !== undefined &&
    (!Array.isArray(spec.allowedRegions) ||
      spec.allowedRegions.length === 0 ||
      spec.allowedRegions.length > LIMITS.maxAllowedRegions ||
      !spec.allowedRegions.every((r) => typeof r === 'string' && REGION.test(r)))
  )
    problems.push(
      `allowedRegions: ${show(spec.allowedRegions)} must be a list of 1 to ${LIMITS.maxAllowedRegions} region names (lowercase letters, digits, '-')`,
    );
  if (spec.checkpointable !== undefined && typeof spec.checkpointable !== 'boolean')
    problems.push(`checkpointable: ${show(spec.checkpointable)} must be true or false`);
  if (spec.maxWaitMs !== undefined && (!int(spec.maxWaitMs) || spec.maxWaitMs <= 0 || spec.maxWaitMs > LIMITS.maxDurationMs))
    problems.push(`maxWaitMs: ${show(spec.maxWaitMs)} must be a positive integer of at most ${LIMITS.maxDurationMs}`);
  if (spec.maxAttempts !== undefined && (!int(spec.maxAttempts) || spec.maxAttempts < 1 || spec.maxAttempts > LIMITS.maxAttempts))
    problems.push(`maxAttempts: ${show(spec.maxAttempts)} must be an integer from 1 to ${LIMITS.maxAttempts}`);
  if (spec.minRuntimeMs !== undefined && (!int(spec.minRuntimeMs) || spec.minRuntimeMs < 0 || spec.minRuntimeMs > LIMITS.maxDurationMs))
    problems.push(`minRuntimeMs: ${show(spec.minRuntimeMs)} must be an integer from 0 to ${LIMITS.maxDurationMs}`);
  if (spec.handoff !== undefined) {
    const h = spec.handoff as { afterMs?: unknown; enabled?: unknown } | null;
    if (typeof h !== 'object' || h === null || Array.isArray(h))
      problems.push(`handoff: ${show(spec.handoff)} must be an object { afterMs?, enabled? }`);
    else {
      const extra = Object.keys(h).filter((k) => k !== 'afterMs' && k !== 'enabled');
      if (extra.length)
        problems.push(`handoff: unknown field ${extra.map((k) => JSON.stringify(k)).join(', ')} (allowed: afterMs, enabled)`);
      if (h.afterMs !== undefined && (!int(h.afterMs) || h.afterMs < 0 || h.afterMs > LIMITS.maxDurationMs))
        problems.push(`handoff.afterMs: ${show(h.afterMs)} must be an integer from 0 to ${LIMITS.maxDurationMs}`);
      if (h.enabled !== undefined && typeof h.enabled !== 'boolean')
        problems.push(`handoff.enabled: ${show(h.enabled)} must be true or false`);
    }
  }
  if (
    spec.simulatedFailures !== undefined &&
    (!int(spec.simulatedFailures) || spec.simulatedFailures < 0 || spec.simulatedFailures > LIMITS.maxAttempts)
  )
    problems.push(`simulatedFailures: ${show(spec.simulatedFailures)} must be an integer from 0 to ${LIMITS.maxAttempts}`);

  problems.push(...validateRequest(spec.request));
  return problems;
}

/** Problems with a resource request alone, as the allocator checks it. */
export function validateRequest(input: unknown): string[] {
  const problems: string[] = [];
  const r = input as Partial<ResourceRequest> | null | undefined;
  if (typeof r !== 'object' || r === null) {
    return ['request: must be an object'];
  }
  if (
    !Array.isArray(r.acceleratorTypes) ||
    r.acceleratorTypes.length === 0 ||
    r.acceleratorTypes.length > LIMITS.maxAcceleratorTypes ||
    !r.acceleratorTypes.every((t) => typeof t === 'string' && t.length > 0 && t.length <= LIMITS.maxNameLength)
  )
    problems.push(
      `request.acceleratorTypes: ${show(r.acceleratorTypes)} must be a list of 1 to ${LIMITS.maxAcceleratorTypes} accelerator type names of at most ${LIMITS.maxNameLength} characters`,
    );
  else if (new Set(r.acceleratorTypes).size !== r.acceleratorTypes.length)
    problems.push(`request.acceleratorTypes: ${show(r.acceleratorTypes)} must not repeat a type`);
  if (r.typePreference !== undefined && !TYPE_PREFERENCES.includes(r.typePreference as never))
    problems.push(`request.typePreference: ${show(r.typePreference)} must be one of ${TYPE_PREFERENCES.join(', ')}`);
  if (!int(r.workers) || r.workers < 1 || r.workers > LIMITS.maxWorkers)
    problems.push(`request.workers: ${show(r.workers)} must be an integer from 1 to ${LIMITS.maxWorkers}`);
  if (!int(r.devicesPerWorker) || r.devicesPerWorker < 0 || r.devicesPerWorker > LIMITS.maxDevicesPerWorker)
    problems.push(`request.devicesPerWorker: ${show(r.devicesPerWorker)} must be an integer from 0 to ${LIMITS.maxDevicesPerWorker}`);
  else if (r.devicesPerWorker === 0) {
    if (!int(r.milliPerWorker) || r.milliPerWorker < 1 || r.milliPerWorker > 999)
      problems.push(
        `request.milliPerWorker: ${show(r.milliPerWorker)} must be an integer from 1 to 999 when devicesPerWorker is 0 (a share of one device)`,
      );
  } else if (r.milliPerWorker !== undefined)
    problems.push(`request.milliPerWorker: ${show(r.milliPerWorker)} is only allowed when devicesPerWorker is 0`);
  if (
    r.cpuMilliPerWorker !== undefined &&
    (!int(r.cpuMilliPerWorker) || r.cpuMilliPerWorker < 0 || r.cpuMilliPerWorker > LIMITS.maxCpuMilliPerWorker)
  )
    problems.push(
      `request.cpuMilliPerWorker: ${show(r.cpuMilliPerWorker)} must be an integer from 0 to ${LIMITS.maxCpuMilliPerWorker} (milli-cores)`,
    );
  if (
    r.memoryMibPerWorker !== undefined &&
    (!int(r.memoryMibPerWorker) || r.memoryMibPerWorker < 0 || r.memoryMibPerWorker > LIMITS.maxMemoryMibPerWorker)
  )
    problems.push(
      `request.memoryMibPerWorker: ${show(r.memoryMibPerWorker)} must be an integer from 0 to ${LIMITS.maxMemoryMibPerWorker} (MiB)`,
    );
  if (!TOPOLOGIES.includes(r.topology as never))
    problems.push(`request.topology: ${show(r.topology)} must be one of ${TOPOLOGIES.join(', ')}`);
  if (r.topology === 'node' && r.antiAffinity && int(r.workers) && r.workers > 1)
    problems.push('request.antiAffinity: cannot keep workers on distinct nodes with topology "node"');
  if (r.nodeLabels !== undefined) {
    const ok =
      typeof r.nodeLabels === 'object' &&
      r.nodeLabels !== null &&
      !Array.isArray(r.nodeLabels) &&
      Object.keys(r.nodeLabels).length <= LIMITS.maxNodeLabels &&
      Object.entries(r.nodeLabels).every(
        ([k, v]) => k.length > 0 && k.length <= LIMITS.maxNameLength && typeof v === 'string' && v.length <= LIMITS.maxLabelValueLength,
      );
    if (!ok)
      problems.push(
        `request.nodeLabels: ${show(r.nodeLabels)} must map at most ${LIMITS.maxNodeLabels} label names (1-${LIMITS.maxNameLength} characters) to string values of at most ${LIMITS.maxLabelValueLength} characters`,
      );
  }
  return problems;
}

/** Problems with a reservation request on its own (no database needed). */
export function validateReservation(r: {
  id?: unknown;
  tenant?: unknown;
  acceleratorType?: unknown;
  devices?: unknown;
  startsAt?: unknown;
  endsAt?: unknown;
}): string[] {
  const problems: string[] = [];
  if (typeof r.id !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,62}$/.test(r.id))
    problems.push(`id: ${JSON.stringify(r.id)} must be 1-63 lowercase letters, digits, '.', '_' or '-'`);
  if (typeof r.tenant !== 'string' || !r.tenant) problems.push(`tenant: ${JSON.stringify(r.tenant)} must be a tenant path`);
  if (typeof r.acceleratorType !== 'string' || !r.acceleratorType)
    problems.push(`acceleratorType: ${JSON.stringify(r.acceleratorType)} must be an accelerator type name`);
  if (typeof r.devices !== 'number' || !Number.isInteger(r.devices) || r.devices < 1)
    problems.push(`devices: ${JSON.stringify(r.devices)} must be a positive integer`);
  const start = typeof r.startsAt === 'string' ? Date.parse(r.startsAt) : NaN;
  const end = typeof r.endsAt === 'string' ? Date.parse(r.endsAt) : NaN;
  if (Number.isNaN(start)) problems.push(`startsAt: ${JSON.stringify(r.startsAt)} must be an ISO timestamp`);
  if (Number.isNaN(end)) problems.push(`endsAt: ${JSON.stringify(r.endsAt)} must be an ISO timestamp`);
  if (!Number.isNaN(start) && !Number.isNaN(end) && end <= start) problems.push(`endsAt: ${r.endsAt} must be after startsAt ${r.startsAt}`);
  return problems;
}

// --- messages to a job -------------------------------------------------------------------------
// A job checks every message before acting on it: a handler that throws on a malformed argument
// fails its workflow task on every replay, wedging the job with whatever it holds. A message with
// problems is logged with them and ignored.

/** The longest free text a message may carry (a reason), as the status query would show it. */
export const MAX_MESSAGE_TEXT = 4096;

const object = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const positiveInt = (field: string, v: unknown): string[] => (int(v) && v > 0 ? [] : [`${field}: ${show(v)} must be a positive integer`]);
const text = (field: string, v: unknown): string[] =>
  typeof v !== 'string'
    ? [`${field}: ${show(v)} must be a string`]
    : v.length > MAX_MESSAGE_TEXT
      ? [`${field}: must be at most ${MAX_MESSAGE_TEXT} characters (got ${v.length})`]
      : [];

/** Problems with a `placed` delivery to job `jobId`: the epoch, and a placement of this job at that epoch with its workers' devices. */
export function validatePlacedDelivery(input: unknown, jobId: string): string[] {
  if (!object(input)) return [`placed: ${show(input)} must be an object { epoch, placement }`];
  const problems = positiveInt('epoch', input.epoch);
  const p = input.placement;
  if (!object(p)) return [...problems, `placement: ${show(p)} must be an object { jobId, epoch, acceleratorType, workers }`];
  if (p.jobId !== jobId) problems.push(`placement.jobId: ${show(p.jobId)} must be this job's id ${show(jobId)}`);
  if (p.epoch !== input.epoch) problems.push(`placement.epoch: ${show(p.epoch)} must equal the delivery's epoch ${show(input.epoch)}`);
  if (typeof p.acceleratorType !== 'string' || !p.acceleratorType)
    problems.push(`placement.acceleratorType: ${show(p.acceleratorType)} must be an accelerator type name`);
  if (!Array.isArray(p.workers) || p.workers.length === 0 || p.workers.length > LIMITS.maxWorkers) {
    problems.push(`placement.workers: ${show(p.workers)} must be a non-empty list of at most ${LIMITS.maxWorkers} workers`);
    return problems;
  }
  (p.workers as unknown[]).forEach((w, i) => {
    const at = `placement.workers[${i}]`;
    if (!object(w)) {
      problems.push(`${at}: ${show(w)} must be an object { workerIdx, nodeId, nodeName, deviceIdx, milli }`);
      return;
    }
    if (!int(w.workerIdx) || w.workerIdx < 0) problems.push(`${at}.workerIdx: ${show(w.workerIdx)} must be an integer of at least 0`);
    problems.push(...positiveInt(`${at}.nodeId`, w.nodeId));
    if (typeof w.nodeName !== 'string' || !w.nodeName) problems.push(`${at}.nodeName: ${show(w.nodeName)} must be a node name`);
    if (
      !Array.isArray(w.deviceIdx) ||
      w.deviceIdx.length === 0 ||
      w.deviceIdx.length > LIMITS.maxDevicesPerWorker ||
      !w.deviceIdx.every((d) => int(d) && d >= 0)
    )
      problems.push(`${at}.deviceIdx: ${show(w.deviceIdx)} must be a non-empty list of device indexes (integers of at least 0)`);
    if (!int(w.milli) || w.milli < 1 || w.milli > 1000) problems.push(`${at}.milli: ${show(w.milli)} must be an integer from 1 to 1000`);
  });
  return problems;
}

/** Problems with a `waiting` notice: the epoch it is about, and why the job still waits. */
export function validateWaitingNotice(input: unknown): string[] {
  if (!object(input)) return [`waiting: ${show(input)} must be an object { epoch, reason }`];
  return [...positiveInt('epoch', input.epoch), ...text('reason', input.reason)];
}

/** Problems with a `preempt` request: the preempting job's id and a grace period in milliseconds. */
export function validatePreemptRequest(input: unknown): string[] {
  if (!object(input)) return [`preempt: ${show(input)} must be an object { preemptor, graceMs }`];
  const problems: string[] = [];
  if (typeof input.preemptor !== 'string' || !ID.test(input.preemptor))
    problems.push(`preemptor: ${show(input.preemptor)} must be a job id`);
  if (!int(input.graceMs) || input.graceMs < 0 || input.graceMs > LIMITS.maxDurationMs)
    problems.push(`graceMs: ${show(input.graceMs)} must be an integer from 0 to ${LIMITS.maxDurationMs}`);
  return problems;
}

/** Problems with a home's `handoffDecision` for a copy: the handoff's epoch and the decision. */
export function validateHandoffDecision(input: unknown): string[] {
  if (!object(input)) return [`handoffDecision: ${show(input)} must be an object { epoch, decision }`];
  const problems = positiveInt('epoch', input.epoch);
  if (input.decision !== 'committed' && input.decision !== 'aborted')
    problems.push(`decision: ${show(input.decision)} must be committed or aborted`);
  return problems;
}

/** Problems with a copy's `handedJobEnded` to its home: the handoff's epoch and how the job ended there. */
export function validateHandedJobEnded(input: unknown): string[] {
  if (!object(input)) return [`handedJobEnded: ${show(input)} must be an object { epoch, result }`];
  const problems = positiveInt('epoch', input.epoch);
  const r = input.result;
  if (!object(r)) return [...problems, `result: ${show(r)} must be a job result { jobId, outcome, reason?, region? }`];
  if (typeof r.jobId !== 'string' || !r.jobId) problems.push(`result.jobId: ${show(r.jobId)} must be a job id`);
  if (!TERMINAL_STATES.includes(r.outcome as never))
    problems.push(`result.outcome: ${show(r.outcome)} must be one of ${TERMINAL_STATES.join(', ')}`);
  if (r.reason !== undefined) problems.push(...text('result.reason', r.reason));
  if (r.region !== undefined && (typeof r.region !== 'string' || !REGION.test(r.region)))
    problems.push(`result.region: ${show(r.region)} must be a region name`);
  return problems;
}

/** Problems with a `cancel` signal's reason: none given, or a string. */
export function validateCancelReason(reason: unknown): string[] {
  return reason === undefined ? [] : text('cancel: reason', reason);
}
