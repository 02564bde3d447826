// Worker settings from the environment, validated once at start.
import { PLACEMENT_POLICIES, type PlacementPolicyName } from '../api/types';
import { jobTaskQueue, regionNamespace } from '../api/ids';

export interface WorkerConfig {
  region: string;
  temporalAddress: string;
  namespace: string;
  taskQueue: string;
  databaseUrl: string;
  policy: PlacementPolicyName;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const region = env.REGION ?? 'local';
  if (!/^[a-z0-9-]+$/.test(region)) throw new Error(`REGION ${JSON.stringify(region)} must be lowercase letters, digits or '-'`);
  const policy = (env.PLACEMENT_POLICY ?? 'fgd') as PlacementPolicyName;
  if (!PLACEMENT_POLICIES.includes(policy))
    throw new Error(`PLACEMENT_POLICY ${JSON.stringify(policy)} must be one of ${PLACEMENT_POLICIES.join(', ')}`);
  return {
    region,
    temporalAddress: env.TEMPORAL_ADDRESS ?? '127.0.0.1:7233',
    namespace: env.TEMPORAL_NAMESPACE ?? regionNamespace(region),
    taskQueue: env.TASK_QUEUE ?? jobTaskQueue(region),
    databaseUrl: env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/scheduler',
    policy,
  };
}
