// Worker process entry point: `npm run worker`. Stops gracefully on SIGTERM/SIGINT (the SDK
// finishes in-flight tasks within the shutdown grace time).
import fs from 'node:fs';
import { NativeConnection } from '@temporalio/worker';
import { Client, Connection } from '@temporalio/client';
import { configFromEnv } from './config';
import { describeEndpoint, temporalConnectionOptions } from '../api/temporal-connection';
import { createLogger, installTemporalLogging } from './logger';
import { createRegionWorker } from './worker';
import { openDatabase } from '../db/connection';

async function main(): Promise<void> {
  const config = configFromEnv();
  const log = createLogger(config.region);
  installTemporalLogging(log);
  const db = openDatabase(config.databaseUrl);
  // TLS files are read here, once per connection, so a restarted worker picks up renewed certificates.
  const connection = await NativeConnection.connect(temporalConnectionOptions(config.temporal, fs.readFileSync));
  const clientConnection = await Connection.connect(temporalConnectionOptions(config.temporal, fs.readFileSync));
  const client = new Client({ connection: clientConnection, namespace: config.namespace });
  const worker = await createRegionWorker({
    connection,
    client,
    namespace: config.namespace,
    taskQueue: config.taskQueue,
    db,
    region: config.region,
    policy: config.policy,
    workflowBundlePath: process.env.WORKFLOW_BUNDLE,
    peers: config.peers,
    publishEveryMs: config.publishEveryMs,
    publishEarly: config.publishEarly,
    reconcile: config.reconcile,
    metrics: config.metrics,
    autoscale: config.autoscale,
    objective: config.objective,
    identity: `${config.region}-worker-${process.pid}`,
  });
  log.info(
    {
      event: 'worker.start',
      taskQueue: config.taskQueue,
      namespace: config.namespace,
      temporal: describeEndpoint(config.temporal),
      pid: process.pid,
    },
    'worker started',
  );
  if (worker.metrics) log.info({ event: 'worker.metrics', url: worker.metrics.url }, 'metrics, /healthz and /readyz served');
  if (config.peers.length)
    log.info({ event: 'worker.peers', peers: config.peers.map((p) => `${p.name}@${p.temporalAddress}`) }, 'peers configured');
  try {
    await worker.run(); // resolves after SIGTERM/SIGINT, which the SDK handles by shutting down
  } finally {
    await connection.close();
    await clientConnection.close();
    await db.destroy();
    log.info({ event: 'worker.stop' }, 'worker stopped');
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
