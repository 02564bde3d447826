// Worker settings from the environment, validated once at start.
import { PLACEMENT_POLICIES, type PlacementPolicyName } from '../api/types';
import fs from 'node:fs';
import { jobTaskQueue, regionNamespace } from '../api/ids';
import { parsePeers, type PeerConfig } from '../api/peers';
import { temporalEndpointFromEnv, type TemporalEndpoint } from '../api/temporal-connection';
import { DEFAULT_AUTOSCALER_LIMITS, applyLimits, parseProviders, type AutoscalerLimits, type ProviderConfig } from '../api/autoscaler';
import { PLACEMENT_OBJECTIVES, type PlacementObjective } from '../scheduling/capacity';

export interface WorkerConfig {
  region: string;
  temporalAddress: string;
  namespace: string;
  /** The region's own Temporal frontend: address, namespace, TLS and API key (TEMPORAL_* variables). */
  temporal: TemporalEndpoint;
  taskQueue: string;
  databaseUrl: string;
  policy: PlacementPolicyName;
  /** The region's peers: PEERS (JSON) or PEERS_FILE (a JSON file); none when neither is set. */
  peers: PeerConfig[];
  /** PUBLISH_EVERY_MS: how often the region sends its summary to its peers (default 2000). */
  publishEveryMs?: number;
  /**
   * PUBLISH_EARLY: `on` (default) publishes the summary as soon as the region's free capacity moves
   * a lot, between periods; `off` publishes on the period only (for comparing the two).
   */
  publishEarly: boolean;
  /** RECONCILE_EVERY_MS / RECONCILE_GRACE_MS: the reconciler's pace (defaults 30 s / 60 s). */
  reconcile: { everyMs?: number; graceMs?: number };
  /** METRICS_PORT (and METRICS_HOST, default 127.0.0.1): serve /metrics, /healthz, /readyz; off when unset. */
  metrics?: { port: number; host: string };
  /** Capacity providers (PROVIDERS or PROVIDERS_FILE) and the autoscaler (AUTOSCALE=on, AUTOSCALE_LIMITS). */
  autoscale: AutoscaleConfig;
  /** PLACEMENT_OBJECTIVE: `cost` (default: cheapest capacity first, owned first) or `packing` (price ignored). */
  objective: PlacementObjective;
}

export interface AutoscaleConfig {
  providers: ProviderConfig[];
  /** Start the region's AutoscalerWorkflow (off unless AUTOSCALE=on). */
  enabled: boolean;
  limits?: Partial<AutoscalerLimits>;
}

/** Reads and checks the providers and the autoscaler's limits; every problem is named before the worker starts. */
export function autoscaleFromEnv(env: NodeJS.ProcessEnv = process.env): AutoscaleConfig {
  if (env.PROVIDERS && env.PROVIDERS_FILE) throw new Error('set PROVIDERS or PROVIDERS_FILE, not both');
  const json = (name: string, text: string): unknown => {
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new Error(`${name} is not JSON: ${(err as Error).message}`, { cause: err });
    }
  };
  const text = env.PROVIDERS ?? (env.PROVIDERS_FILE ? fs.readFileSync(env.PROVIDERS_FILE, 'utf8') : undefined);
  let providers: ProviderConfig[] = [];
  if (text !== undefined) {
    const parsed = parseProviders(json(env.PROVIDERS ? 'PROVIDERS' : `PROVIDERS_FILE ${env.PROVIDERS_FILE}`, text));
    if (parsed.problems.length) throw new Error(`provider configuration refused: ${parsed.problems.join('; ')}`);
    providers = parsed.providers;
  }
  const switched = env.AUTOSCALE ?? 'off';
  if (!['on', 'off'].includes(switched)) throw new Error(`AUTOSCALE ${JSON.stringify(switched)} must be on or off`);
  let limits: Partial<AutoscalerLimits> | undefined;
  if (env.AUTOSCALE_LIMITS !== undefined) {
    const change = json('AUTOSCALE_LIMITS', env.AUTOSCALE_LIMITS);
    const checked = applyLimits(DEFAULT_AUTOSCALER_LIMITS, change, ['owned', ...providers.map((p) => p.name)]);
    if (checked.problems.length) throw new Error(`AUTOSCALE_LIMITS refused: ${checked.problems.join('; ')}`);
    limits = change as Partial<AutoscalerLimits>;
  }
  return { providers, enabled: switched === 'on', ...(limits ? { limits } : {}) };
}

/** Reads and checks the peer list; a problem stops the worker with every entry and field named. */
export function peersFromEnv(region: string, env: NodeJS.ProcessEnv = process.env): PeerConfig[] {
  if (env.PEERS && env.PEERS_FILE) throw new Error('set PEERS or PEERS_FILE, not both');
  const text = env.PEERS ?? (env.PEERS_FILE ? fs.readFileSync(env.PEERS_FILE, 'utf8') : undefined);
  if (text === undefined) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`${env.PEERS ? 'PEERS' : `PEERS_FILE ${env.PEERS_FILE}`} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const { peers, problems } = parsePeers(parsed, region);
  if (problems.length) throw new Error(`peer configuration refused: ${problems.join('; ')}`);
  return peers;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const region = env.REGION ?? 'local';
  if (!/^[a-z0-9-]+$/.test(region)) throw new Error(`REGION ${JSON.stringify(region)} must be lowercase letters, digits or '-'`);
  const policy = (env.PLACEMENT_POLICY ?? 'fgd-host') as PlacementPolicyName;
  if (!PLACEMENT_POLICIES.includes(policy))
    throw new Error(`PLACEMENT_POLICY ${JSON.stringify(policy)} must be one of ${PLACEMENT_POLICIES.join(', ')}`);
  const temporal = temporalEndpointFromEnv(env, { address: '127.0.0.1:7233', namespace: regionNamespace(region) });
  return {
    region,
    temporalAddress: temporal.address,
    namespace: temporal.namespace,
    temporal,
    taskQueue: env.TASK_QUEUE ?? jobTaskQueue(region),
    databaseUrl: env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/scheduler',
    policy,
    peers: peersFromEnv(region, env),
    ...(env.PUBLISH_EVERY_MS !== undefined ? { publishEveryMs: positiveInt('PUBLISH_EVERY_MS', env.PUBLISH_EVERY_MS) } : {}),
    publishEarly: onOff('PUBLISH_EARLY', env.PUBLISH_EARLY, true),
    reconcile: {
      ...(env.RECONCILE_EVERY_MS !== undefined ? { everyMs: positiveInt('RECONCILE_EVERY_MS', env.RECONCILE_EVERY_MS) } : {}),
      ...(env.RECONCILE_GRACE_MS !== undefined ? { graceMs: positiveInt('RECONCILE_GRACE_MS', env.RECONCILE_GRACE_MS) } : {}),
    },
    ...(env.METRICS_PORT !== undefined
      ? { metrics: { port: tcpPort('METRICS_PORT', env.METRICS_PORT), host: env.METRICS_HOST ?? '127.0.0.1' } }
      : {}),
    autoscale: autoscaleFromEnv(env),
    objective: placementObjective(env.PLACEMENT_OBJECTIVE),
  };
}

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} ${JSON.stringify(value)} must be a positive whole number of milliseconds`);
  return n;
}

function onOff(name: string, value: string | undefined, otherwise: boolean): boolean {
  if (value === undefined || value === '') return otherwise;
  if (value === 'on' || value === 'off') return value === 'on';
  throw new Error(`${name} ${JSON.stringify(value)} must be on or off`);
}

function tcpPort(name: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || n > 65535) throw new Error(`${name} ${JSON.stringify(value)} must be a TCP port, 1..65535`);
  return n;
}

function placementObjective(value: string | undefined): PlacementObjective {
  const v = (value ?? 'cost') as PlacementObjective;
  if (!PLACEMENT_OBJECTIVES.includes(v))
    throw new Error(`PLACEMENT_OBJECTIVE ${JSON.stringify(value)} must be one of ${PLACEMENT_OBJECTIVES.join(', ')}`);
  return v;
}
