// The autoscaler's contract: capacity providers and their offerings (as configured), the limits an
// operator sets, the status query and the pause / resume / setLimits messages of
// `autoscaler/<region>`. Configuration is checked here, so a worker refuses a bad provider list
// at start and the workflow refuses bad limits, each problem naming the field and the rule.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import { isRegionName } from './peers';

/** The autoscaler of a region: `autoscaler/<region>`, on the region's scheduler task queue. */
export function autoscalerWorkflowId(region: string): string {
  return `autoscaler/${region}`;
}

/** A kind of node a provider can add: its hardware, topology, region, price and terms. */
export interface Offering {
  /** Unique within its provider. */
  name: string;
  /** The provider offering it (filled in from the provider entry). */
  provider: string;
  acceleratorType: string;
  devicesPerNode: number;
  /** Host CPU per node in milli-cores; absent: not tracked. */
  cpuMilli?: number;
  /** Host memory per node in MiB; absent: not tracked. */
  memoryMib?: number;
  /** Topology: the nodes of one request land in racks of this many (a gang needing one rack fits only within it); one pod per request. */
  nodesPerRack: number;
  region: string;
  /** Price of one device for one hour (any currency unit, the same for all providers). */
  pricePerDeviceHour: number;
  /** Spot capacity: cheaper, reclaimed by the provider with a short notice. Premium work never runs on it. */
  spot: boolean;
  /** Typical time from request to node ready. */
  provisioningMs: number;
  /** At most this many nodes of the offering at once (running and being provisioned). */
  quota: number;
}

/** The owned datacenter: fixed capacity, nothing to provision. */
export interface OwnedProviderConfig {
  name: string;
  kind: 'owned';
}

/**
 * A simulated public cloud that behaves like one: requests take their offering's provisioning time
 * (±20%), fail with `failureRate`, come back short with `partialRate`, are refused beyond quota,
 * and spot nodes are reclaimed (with `spotNoticeMs` of notice) with `spotReclaimRate` each, some
 * time within `spotLifetimeMs` of being ready. Every draw is seeded by `seed` and the request id,
 * so a run is repeatable. `apiLatencyMs`: how long a provision call takes to answer.
 */
export interface SimulatedProviderConfig {
  name: string;
  kind: 'simulated';
  seed: number;
  offerings: Offering[];
  failureRate: number;
  partialRate: number;
  spotReclaimRate: number;
  spotLifetimeMs: number;
  spotNoticeMs: number;
  apiLatencyMs: number;
}

export type ProviderConfig = OwnedProviderConfig | SimulatedProviderConfig;

/** What a provider reports about its nodes and requests. */
export type ProviderEventKind = 'node-ready' | 'provisioning-failed' | 'node-lost' | 'spot-reclaim-notice';
export const PROVIDER_EVENT_KINDS: readonly ProviderEventKind[] = ['node-ready', 'provisioning-failed', 'node-lost', 'spot-reclaim-notice'];

/** Limits an operator sets on a region's autoscaler (at start, or with `setAutoscalerLimits` while it runs). */
export interface AutoscalerLimits {
  /** Time between decisions. */
  periodMs: number;
  /** After a scale-up, no other scale-up for this long (requests in flight are counted meanwhile). */
  cooldownMs: number;
  /** A provisioned node with nothing on it for this long is released (cordon, drain, release). */
  idleLimitMs: number;
  /** Most the region may spend per hour on provider capacity (running and being provisioned). */
  budgetPerHour: number;
  /** Most nodes each provider may hold in the region at once; a provider absent here is capped by its quotas only. */
  providers: Record<string, { maxNodes: number }>;
  /** Most nodes requested in one decision. */
  maxNodesPerDecision: number;
}

export const DEFAULT_AUTOSCALER_LIMITS: AutoscalerLimits = {
  periodMs: 10_000,
  cooldownMs: 30_000,
  idleLimitMs: 300_000,
  budgetPerHour: 0,
  providers: {},
  maxNodesPerDecision: 16,
};

/** Demand the autoscaler acted on: waiting jobs of one shape, blocked for capacity. */
export interface DemandLine {
  /** e.g. `2×8 of A100/H100 in one node (premium)`. */
  shape: string;
  jobs: number;
  devices: number;
}

/** One provisioning request: its deterministic id, what was asked and what it costs per hour. */
export interface ProvisionRecord {
  requestId: string;
  provider: string;
  offering: string;
  count: number;
  costPerHour: number;
  /** The jobs (first few) whose gangs the request was sized for. */
  forJobs: string[];
  state?: 'provisioning' | 'fulfilled' | 'partial' | 'failed';
  granted?: number;
  error?: string;
}

/** One decision: what it saw, what it did, and why. */
export interface ScaleDecision {
  at: number;
  demand: DemandLine[];
  provisioned: ProvisionRecord[];
  /** Nodes released as idle past the limit. */
  released: string[];
  /** Demand left unserved, with the reason (budget, quota, no offering fits). */
  unmet: string[];
  /** In words: why it scaled or did not. */
  reason: string;
}

export interface AutoscalerStatus {
  region: string;
  paused: boolean;
  pausedReason?: string;
  limits: AutoscalerLimits;
  decisions: number;
  /** Spend per hour on provider capacity now (running and being provisioned). */
  costPerHour: number;
  /** Requests still being provisioned. */
  inFlight: ProvisionRecord[];
  /** The last decision that did something, and the last decision. */
  lastAction?: ScaleDecision;
  last?: ScaleDecision;
  requested: number;
  releasedNodes: number;
  lastError?: string;
}

export interface AutoscalerInput {
  region: string;
  /** Limits to start with (defaults for what is absent); checked like setAutoscalerLimits. */
  limits?: Partial<AutoscalerLimits>;
  /** Kept across continue-as-new. */
  carry?: AutoscalerCarry;
}

/** What a run hands the next one. */
export interface AutoscalerCarry {
  /** Names the request ids of this chain of runs (request ids are `<region>-<chain>-<seq>`). */
  chain: string;
  seq: number;
  status: AutoscalerStatus;
  lastScaleUpAt: number;
}

export const autoscalerStatusQuery = defineQuery<AutoscalerStatus>('autoscalerStatus');
/** Stops scaling (in and out) until resumed; the reason is shown in the status. */
export const pauseAutoscalerSignal = defineSignal<[string]>('pauseAutoscaler');
export const resumeAutoscalerSignal = defineSignal<[]>('resumeAutoscaler');
/** Changes limits without a restart; refused (nothing changes) with every problem named. Returns the limits now in force. */
export const setAutoscalerLimitsUpdate = defineUpdate<AutoscalerLimits, [Partial<AutoscalerLimits>]>('setAutoscalerLimits');

const show = (v: unknown): string => (JSON.stringify(v) ?? String(v)).slice(0, 120);
const NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const whole = (v: unknown, min: number, max: number): boolean => Number.isInteger(v) && (v as number) >= min && (v as number) <= max;
const finite = (v: unknown, min: number, max: number): boolean => typeof v === 'number' && Number.isFinite(v) && v >= min && v <= max;

/**
 * Limits with `change` applied over `base`, or every problem with it. Unknown fields, wrong types
 * and values out of range are refused; `providers` must name configured providers.
 */
export function applyLimits(
  base: AutoscalerLimits,
  change: unknown,
  providers: readonly string[],
): { limits: AutoscalerLimits; problems: [] } | { problems: string[] } {
  if (!isObject(change)) return { problems: [`limits: ${show(change)} must be an object`] };
  const problems: string[] = [];
  const known = Object.keys(DEFAULT_AUTOSCALER_LIMITS);
  const extra = Object.keys(change).filter((k) => !known.includes(k));
  if (extra.length) problems.push(`limits: unknown field ${extra.join(', ')} (known: ${known.join(', ')})`);
  const ms = (k: 'periodMs' | 'cooldownMs' | 'idleLimitMs', min: number) => {
    if (change[k] !== undefined && !whole(change[k], min, 7 * 86_400_000))
      problems.push(`limits.${k}: ${show(change[k])} must be a whole number of milliseconds from ${min} to 7 days`);
  };
  ms('periodMs', 100);
  ms('cooldownMs', 0);
  ms('idleLimitMs', 0);
  if (change.budgetPerHour !== undefined && !finite(change.budgetPerHour, 0, 1e9))
    problems.push(`limits.budgetPerHour: ${show(change.budgetPerHour)} must be a number from 0 to 1e9`);
  if (change.maxNodesPerDecision !== undefined && !whole(change.maxNodesPerDecision, 1, 1000))
    problems.push(`limits.maxNodesPerDecision: ${show(change.maxNodesPerDecision)} must be a whole number from 1 to 1000`);
  if (change.providers !== undefined) {
    if (!isObject(change.providers))
      problems.push(`limits.providers: ${show(change.providers)} must be an object of { maxNodes } by provider`);
    else
      for (const [name, p] of Object.entries(change.providers)) {
        if (!providers.includes(name))
          problems.push(`limits.providers.${name}: no such provider (configured: ${providers.join(', ') || 'none'})`);
        else if (!isObject(p) || Object.keys(p).some((k) => k !== 'maxNodes') || !whole(p.maxNodes, 0, 100_000))
          problems.push(`limits.providers.${name}: ${show(p)} must be { maxNodes } with maxNodes a whole number from 0 to 100000`);
      }
  }
  if (problems.length) return { problems };
  return {
    limits: {
      ...base,
      ...(change as Partial<AutoscalerLimits>),
      providers: { ...base.providers, ...((change.providers as AutoscalerLimits['providers'] | undefined) ?? {}) },
    },
    problems: [],
  };
}

const SIM_DEFAULTS = {
  failureRate: 0,
  partialRate: 0,
  spotReclaimRate: 0,
  spotLifetimeMs: 3_600_000,
  spotNoticeMs: 30_000,
  apiLatencyMs: 0,
};

/**
 * Reads the provider list (configuration: JSON from the environment or a file). Every problem
 * names the entry and the field; nothing is returned unless all is well.
 */
export function parseProviders(input: unknown): { providers: ProviderConfig[]; problems: string[] } {
  const problems: string[] = [];
  const providers: ProviderConfig[] = [];
  if (!Array.isArray(input))
    return { providers, problems: [`providers: ${show(input)} must be a list of { name, kind: "owned" | "simulated", ... }`] };
  const names = new Set<string>();
  input.forEach((raw: unknown, i) => {
    const at = `providers[${i}]`;
    if (!isObject(raw)) {
      problems.push(`${at}: ${show(raw)} must be an object`);
      return;
    }
    if (typeof raw.name !== 'string' || !NAME.test(raw.name))
      problems.push(`${at}.name: ${show(raw.name)} must be lowercase letters, digits or '-' (up to 63)`);
    else if (names.has(raw.name)) problems.push(`${at}.name: ${raw.name} is listed twice`);
    else names.add(raw.name);
    const name = String(raw.name);
    if (raw.kind === 'owned') {
      const extra = Object.keys(raw).filter((k) => !['name', 'kind'].includes(k));
      if (extra.length) problems.push(`${at}: unknown field ${extra.join(', ')} (an owned provider has only name and kind)`);
      providers.push({ name, kind: 'owned' });
      return;
    }
    if (raw.kind !== 'simulated') {
      problems.push(`${at}.kind: ${show(raw.kind)} must be "owned" or "simulated"`);
      return;
    }
    const fields = ['name', 'kind', 'seed', 'offerings', ...Object.keys(SIM_DEFAULTS)];
    const extra = Object.keys(raw).filter((k) => !fields.includes(k));
    if (extra.length) problems.push(`${at}: unknown field ${extra.join(', ')}`);
    if (!whole(raw.seed, 0, 2 ** 31 - 1)) problems.push(`${at}.seed: ${show(raw.seed)} must be a whole number from 0 to 2^31-1`);
    const sim = { ...SIM_DEFAULTS, ...raw } as Record<string, unknown>;
    for (const k of ['failureRate', 'partialRate', 'spotReclaimRate'] as const)
      if (!finite(sim[k], 0, 1)) problems.push(`${at}.${k}: ${show(sim[k])} must be a probability from 0 to 1`);
    for (const k of ['spotLifetimeMs', 'spotNoticeMs', 'apiLatencyMs'] as const)
      if (!whole(sim[k], 0, 7 * 86_400_000))
        problems.push(`${at}.${k}: ${show(sim[k])} must be a whole number of milliseconds up to 7 days`);
    const offerings: Offering[] = [];
    if (!Array.isArray(raw.offerings) || raw.offerings.length === 0)
      problems.push(`${at}.offerings: ${show(raw.offerings)} must be a non-empty list of offerings`);
    else {
      const seen = new Set<string>();
      raw.offerings.forEach((o: unknown, j) => {
        const parsed = parseOffering(o, `${at}.offerings[${j}]`, name, problems);
        if (!parsed) return;
        if (seen.has(parsed.name)) problems.push(`${at}.offerings[${j}].name: ${parsed.name} is listed twice`);
        seen.add(parsed.name);
        offerings.push(parsed);
      });
    }
    providers.push({ ...(sim as Omit<SimulatedProviderConfig, 'offerings'>), name, kind: 'simulated', offerings });
  });
  return problems.length ? { providers: [], problems } : { providers, problems };
}

const OFFERING_FIELDS = [
  'name',
  'provider',
  'acceleratorType',
  'devicesPerNode',
  'cpuMilli',
  'memoryMib',
  'nodesPerRack',
  'region',
  'pricePerDeviceHour',
  'spot',
  'provisioningMs',
  'quota',
];

function parseOffering(raw: unknown, at: string, provider: string, problems: string[]): Offering | undefined {
  if (!isObject(raw)) {
    problems.push(`${at}: ${show(raw)} must be an object`);
    return undefined;
  }
  const before = problems.length;
  const extra = Object.keys(raw).filter((k) => !OFFERING_FIELDS.includes(k));
  if (extra.length) problems.push(`${at}: unknown field ${extra.join(', ')}`);
  if (raw.provider !== undefined && raw.provider !== provider)
    problems.push(`${at}.provider: ${show(raw.provider)} must be absent or the provider's own name ${provider}`);
  if (typeof raw.name !== 'string' || !NAME.test(raw.name))
    problems.push(`${at}.name: ${show(raw.name)} must be lowercase letters, digits or '-'`);
  if (typeof raw.acceleratorType !== 'string' || !raw.acceleratorType.trim() || raw.acceleratorType.length > 64)
    problems.push(`${at}.acceleratorType: ${show(raw.acceleratorType)} must be a non-empty name`);
  if (!whole(raw.devicesPerNode, 1, 64))
    problems.push(`${at}.devicesPerNode: ${show(raw.devicesPerNode)} must be a whole number from 1 to 64`);
  for (const k of ['cpuMilli', 'memoryMib'] as const)
    if (raw[k] !== undefined && !whole(raw[k], 1, 2 ** 31 - 1))
      problems.push(`${at}.${k}: ${show(raw[k])} must be a positive whole number`);
  if (raw.nodesPerRack !== undefined && !whole(raw.nodesPerRack, 1, 1000))
    problems.push(`${at}.nodesPerRack: ${show(raw.nodesPerRack)} must be a whole number from 1 to 1000`);
  if (!isRegionName(raw.region)) problems.push(`${at}.region: ${show(raw.region)} must be a region name`);
  if (!finite(raw.pricePerDeviceHour, 0, 1e6))
    problems.push(`${at}.pricePerDeviceHour: ${show(raw.pricePerDeviceHour)} must be a number from 0 to 1e6`);
  if (raw.spot !== undefined && typeof raw.spot !== 'boolean') problems.push(`${at}.spot: ${show(raw.spot)} must be true or false`);
  if (!whole(raw.provisioningMs, 0, 86_400_000))
    problems.push(`${at}.provisioningMs: ${show(raw.provisioningMs)} must be a whole number of milliseconds up to a day`);
  if (!whole(raw.quota, 0, 100_000)) problems.push(`${at}.quota: ${show(raw.quota)} must be a whole number of nodes from 0 to 100000`);
  if (problems.length > before) return undefined;
  return {
    name: raw.name as string,
    provider,
    acceleratorType: raw.acceleratorType as string,
    devicesPerNode: raw.devicesPerNode as number,
    ...(raw.cpuMilli !== undefined ? { cpuMilli: raw.cpuMilli as number } : {}),
    ...(raw.memoryMib !== undefined ? { memoryMib: raw.memoryMib as number } : {}),
    nodesPerRack: (raw.nodesPerRack as number | undefined) ?? 1,
    region: raw.region as string,
    pricePerDeviceHour: raw.pricePerDeviceHour as number,
    spot: (raw.spot as boolean | undefined) ?? false,
    provisioningMs: raw.provisioningMs as number,
    quota: raw.quota as number,
  };
}
