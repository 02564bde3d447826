// HTTP API process entry point: `npm run api`. Settings from the environment: PORT (default 8080)
// and HOST (default 127.0.0.1), DATABASE_URL, REGION, the Temporal connection (TEMPORAL_ADDRESS,
// TEMPORAL_NAMESPACE, TLS and API key: api/temporal-connection.ts), TASK_QUEUE, PEERS / PEERS_FILE
// (to follow handed-off jobs), SCHED_BOOTSTRAP_ADMIN_KEY, the OIDC_* settings (api/http/auth.ts),
// and the default per-tenant limits SCHED_MAX_QUEUED_JOBS, SCHED_SUBMIT_PER_SECOND, SCHED_SUBMIT_BURST.
import fs from 'node:fs';
import { Connection } from '@temporalio/client';
import { SchedulerClient } from '../api/client';
import { describeEndpoint, temporalConnectionOptions } from '../api/temporal-connection';
import { oidcConfigFromEnv } from '../api/http/auth';
import { DEFAULT_LIMITS, type LimitDefaults } from '../api/http/limits';
import { connectionOptions } from '../activities/peers';
import { openDatabase } from '../db/connection';
import { configFromEnv } from './config';
import { createLogger } from './logger';
import { startApiServer } from './api-server';

function envNumber(name: string, fallback: number, integer: boolean): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n)))
    throw new Error(`${name} ${JSON.stringify(raw)} must be a positive ${integer ? 'whole ' : ''}number`);
  return n;
}

async function main(): Promise<void> {
  const config = configFromEnv();
  const log = createLogger(config.region);
  const port = envNumber('PORT', 8080, true);
  if (port > 65535) throw new Error(`PORT ${port} must be a TCP port, 1..65535`);
  const bootstrapKey = process.env.SCHED_BOOTSTRAP_ADMIN_KEY || undefined;
  if (bootstrapKey !== undefined && bootstrapKey.length < 32)
    throw new Error('SCHED_BOOTSTRAP_ADMIN_KEY must be at least 32 characters (e.g. `openssl rand -base64 32`)');
  const oidc = oidcConfigFromEnv(process.env, (p) => fs.readFileSync(p, 'utf8'));
  const limits: LimitDefaults = {
    maxQueuedJobs: envNumber('SCHED_MAX_QUEUED_JOBS', DEFAULT_LIMITS.maxQueuedJobs, true),
    submitPerSecond: envNumber('SCHED_SUBMIT_PER_SECOND', DEFAULT_LIMITS.submitPerSecond, false),
    submitBurst: envNumber('SCHED_SUBMIT_BURST', DEFAULT_LIMITS.submitBurst, true),
  };

  const db = openDatabase(config.databaseUrl);
  const connection = await Connection.connect(temporalConnectionOptions(config.temporal, fs.readFileSync));
  const peers = Object.fromEntries(
    config.peers.map((p) => [p.name, { connection: Connection.lazy(connectionOptions(p)), namespace: p.namespace }]),
  );
  const client = new SchedulerClient({
    connection,
    namespace: config.namespace,
    taskQueue: config.taskQueue,
    region: config.region,
    peers,
  });
  const server = await startApiServer({
    db,
    client,
    region: config.region,
    bootstrapKey,
    oidc,
    limits,
    logger: log,
    host: process.env.HOST ?? '127.0.0.1',
    port,
  });
  log.info(
    {
      event: 'api.start',
      url: server.url,
      temporal: describeEndpoint(config.temporal),
      namespace: config.namespace,
      oidc: oidc ? oidc.issuer : 'off',
      bootstrapKey: bootstrapKey ? 'set' : 'unset',
    },
    'HTTP API listening (docs at /docs)',
  );
  const stop = async (): Promise<void> => {
    log.info({ event: 'api.stop' }, 'HTTP API stopping');
    await server.close();
    await connection.close();
    await db.destroy();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
