// mTLS to a real Temporal server: the production-shaped server (built by `npm run
// temporal:cluster`, PostgreSQL persistence) started with a throwaway CA, a server certificate
// and client certificates made here with openssl. A worker and a client configured through the
// TEMPORAL_TLS_* variables run a job; a client without its certificate, with one from another
// CA, or in plaintext is refused; a client that does not trust the server's CA refuses the server.
// Skipped (with a note) when the server binary has not been built: CI runs on the dev server.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { connectSchedulerClient, type SchedulerClient } from '../../api/client';
import { temporalConnectionOptions, temporalEndpointFromEnv, type TemporalConnectionOptions } from '../../api/temporal-connection';
import {
  LOCAL_DYNAMIC_CONFIG,
  clusterBinariesBuilt,
  dropDatabases,
  ensureNamespace,
  freePortBlock,
  pgSettingsFromEnv,
  prepareDatabases,
  spawnClusterServer,
  waitForFrontend,
  type ClusterServer,
  type PgSettings,
} from '../../scripts/temporal-cluster';
import { registerSearchAttributes } from '../../scripts/register-search-attributes';
import { createRegionWorker, type RegionWorker } from '../../worker/worker';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { REGION } from '../helpers/temporal';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';

const NS = 'sched-tls';
const built = clusterBinariesBuilt();
if (!built) console.warn('temporal-tls.test.ts skipped: the Temporal server is not built (npm run temporal:cluster builds it once)');
const describeBuilt = built ? describe : describe.skip;

/** A CA, and certificates it signs, made with openssl in `dir`. */
function makePki(dir: string): void {
  const ssl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const ca = (name: string): void =>
    ssl(
      'req',
      '-x509',
      ...ec,
      '-keyout',
      `${name}.key`,
      '-out',
      `${name}.pem`,
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    );
  const leaf = (name: string, signer: string, ext: string): void => {
    fs.writeFileSync(path.join(dir, `${name}.ext`), ext);
    ssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`);
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      `${signer}.pem`,
      '-CAkey',
      `${signer}.key`,
      '-CAcreateserial',
      '-out',
      `${name}.pem`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    );
  };
  ca('ca');
  ca('other-ca');
  leaf('server', 'ca', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  leaf('worker', 'ca', 'subjectAltName=DNS:sched-worker\nextendedKeyUsage=clientAuth\n');
  leaf('stranger', 'other-ca', 'subjectAltName=DNS:stranger\nextendedKeyUsage=clientAuth\n');
}

describeBuilt('Temporal over mutual TLS', () => {
  let dir: string;
  let pg: PgSettings;
  let server: ClusterServer | undefined;
  let address: string;
  let t: TestDatabase;
  let worker: RegionWorker | undefined;
  let running: Promise<void> | undefined;
  let client: SchedulerClient | undefined;
  const files = (name: string): string => path.join(dir, name);
  /** Connection settings as a process would read them from its environment. */
  const fromEnv = (vars: Record<string, string>): TemporalConnectionOptions =>
    temporalConnectionOptions(
      temporalEndpointFromEnv({ TEMPORAL_ADDRESS: address, TEMPORAL_NAMESPACE: NS, ...vars }, { address, namespace: NS }),
      fs.readFileSync,
    );
  const mtls = (): Record<string, string> => ({
    TEMPORAL_TLS_CA: files('ca.pem'),
    TEMPORAL_TLS_CERT: files('worker.pem'),
    TEMPORAL_TLS_KEY: files('worker.key'),
  });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sched-tls-'));
    makePki(dir);
    const base = pgSettingsFromEnv();
    pg = { ...base, db: `temporal_tls_${process.pid}`, visibilityDb: `temporal_tls_${process.pid}_vis` };
    await dropDatabases(pg);
    await prepareDatabases(pg, () => undefined);
    const port = await freePortBlock();
    address = `127.0.0.1:${port}`;
    const logFile = files('server.log');
    server = spawnClusterServer({
      stateDir: dir,
      basePort: port,
      shards: 2,
      pg,
      logFile,
      env: {
        TEMPORAL_CLUSTER_TLS_CERT: files('server.pem'),
        TEMPORAL_CLUSTER_TLS_KEY: files('server.key'),
        TEMPORAL_CLUSTER_TLS_CLIENT_CA: files('ca.pem'),
        TEMPORAL_CLUSTER_TLS_CA: files('ca.pem'),
        TEMPORAL_CLUSTER_TLS_WORKER_CERT: files('worker.pem'),
        TEMPORAL_CLUSTER_TLS_WORKER_KEY: files('worker.key'),
        TEMPORAL_CLUSTER_DYNAMIC_CONFIG: LOCAL_DYNAMIC_CONFIG,
      },
    });
    const admin = await waitForFrontend(fromEnv(mtls()), server.process, 120_000, logFile);
    try {
      await ensureNamespace(admin, NS, 1);
      await registerSearchAttributes(admin, NS);
    } finally {
      await admin.close();
    }
    t = await createTestDatabase('tls');
    await seedFleet(t.db, { nodes: [['A100', 8, 1]] });
    await seedTenants(t.db, ['acme/ml']);
  });

  afterAll(async () => {
    if (worker?.getState() === 'RUNNING') worker.shutdown();
    await running?.catch(() => undefined);
    await client?.temporal.connection.close();
    await server?.stop();
    await t?.drop();
    if (pg) await dropDatabases(pg);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a worker and a client configured by TEMPORAL_TLS_* connect with their certificate and run a job', async () => {
    const env = { ...mtls() };
    const connection = await NativeConnection.connect(fromEnv(env));
    client = await connectSchedulerClient({
      endpoint: temporalEndpointFromEnv({ TEMPORAL_ADDRESS: address, ...env }, { address, namespace: NS }),
      readFile: fs.readFileSync,
      taskQueue: 'jobs-tls',
      region: REGION,
    });
    worker = await createRegionWorker({
      connection,
      client: client.temporal,
      namespace: NS,
      taskQueue: 'jobs-tls',
      db: t.db,
      region: REGION,
      workflowBundlePath: WORKFLOW_BUNDLE,
    });
    running = worker.run().finally(() => connection.close());
    await client.submit({
      jobId: 'over-mtls',
      tenant: 'acme/ml',
      tier: 'standard',
      priority: 5,
      durationMs: 200,
      request: { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 2, topology: 'any' },
    });
    const result = await client.result('acme/ml', 'over-mtls');
    expect(result.outcome).toBe('completed');
    expect(result.placement?.workers[0].deviceIdx).toHaveLength(2);
  });

  /** Connects and makes one call; rejects when the server (or this client) refuses the TLS handshake. */
  const call = async (o: TemporalConnectionOptions): Promise<void> => {
    const c = await Connection.connect({ ...o, connectTimeout: 3_000 });
    try {
      await c.withDeadline(Date.now() + 3_000, () => c.workflowService.describeNamespace({ namespace: NS }));
    } finally {
      await c.close();
    }
  };

  test('the same client settings reach the namespace, so the refusals below are the certificates', async () => {
    await expect(call(fromEnv(mtls()))).resolves.toBeUndefined();
  });

  // The SDK's two transports report a refused handshake differently: the worker's (native) names
  // the TLS alert when it arrives before the server closes (with TLS 1.3 the client may instead see
  // the connection closed or its write fail); the client's (grpc-js) retries until its deadline.
  // Each case then checks the server still serves the right certificate, so a refusal is never a
  // server that went away.
  const SERVER_REFUSED = /CertificateRequired|BadCertificate|UnknownCA|connection closed|broken pipe|transport error/;
  const refused = async (vars: Record<string, string>, native: RegExp): Promise<void> => {
    await expect(NativeConnection.connect(fromEnv(vars))).rejects.toThrow(native);
    await expect(call(fromEnv(vars))).rejects.toThrow(/Failed to connect/);
    await expect(call(fromEnv(mtls()))).resolves.toBeUndefined();
  };

  test('a client without a client certificate is refused', async () => {
    await refused({ TEMPORAL_TLS_CA: files('ca.pem') }, SERVER_REFUSED);
  });

  test('a client certificate signed by another CA is refused', async () => {
    await refused(
      { TEMPORAL_TLS_CA: files('ca.pem'), TEMPORAL_TLS_CERT: files('stranger.pem'), TEMPORAL_TLS_KEY: files('stranger.key') },
      SERVER_REFUSED,
    );
  });

  test('a plaintext client is refused', async () => {
    await refused({}, SERVER_REFUSED);
  });

  test('a client that does not trust the server certificate refuses the server', async () => {
    await refused(
      { TEMPORAL_TLS_CA: files('other-ca.pem'), TEMPORAL_TLS_CERT: files('worker.pem'), TEMPORAL_TLS_KEY: files('worker.key') },
      /UnknownIssuer/,
    );
  });

  test('registering the search attributes is idempotent, and a type clash adds nothing', async () => {
    const admin = await Connection.connect(fromEnv(mtls()));
    try {
      await ensureNamespace(admin, 'sched-sa', 1);
      const first = await registerSearchAttributes(admin, 'sched-sa');
      expect(first.added).toHaveLength(8);
      const again = await registerSearchAttributes(admin, 'sched-sa');
      expect(again).toEqual({ namespace: 'sched-sa', added: [], present: first.added });

      await ensureNamespace(admin, 'sched-clash', 1);
      await admin.operatorService.addSearchAttributes({ namespace: 'sched-clash', searchAttributes: { JobId: 3 } }); // 3: Int
      await expect(registerSearchAttributes(admin, 'sched-clash')).rejects.toThrow(
        'JobId is a custom attribute of type Int in sched-clash, the scheduler needs Keyword',
      );
      const left = await admin.operatorService.listSearchAttributes({ namespace: 'sched-clash' });
      expect(Object.keys(left.customAttributes ?? {})).toEqual(['JobId']);
    } finally {
      await admin.close();
    }
  });
});
