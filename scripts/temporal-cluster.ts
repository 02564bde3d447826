// A production-shaped Temporal on this host: `npm run temporal:cluster` (`-- --stop` stops it).
// The Temporal server and its SQL schema tool are built from the Go module go.temporal.io/server
// (the version the project's CLI pins) into .tools/bin, once. PostgreSQL holds persistence and
// visibility (postgres12 plugin), with several history shards; the schema is set up and upgraded
// by the SQL tool from the schema files shipped in the module; the configuration is
// deploy/temporal/config.yaml.tmpl, rendered by the server from TEMPORAL_CLUSTER_* variables. The
// region namespaces are registered with the scheduler's search attributes, and the frontend
// address is printed. State (config copy, pid, log) lives in .data/temporal-cluster.
//
//   npm run temporal:cluster [-- --port 7350] [--shards 4] [--namespace sched-eu]... [--reset]
//   npm run temporal:cluster -- --stop
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Connection, isGrpcServiceError } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { dropDatabase, ensureDatabase } from '../db/connection';
import { Pool } from 'pg';
import { registerSearchAttributes } from './register-search-attributes';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { temporalConnectionOptions, temporalEndpointFromEnv, type TemporalConnectionOptions } from '../api/temporal-connection';

/** The go.temporal.io/server version the project's Temporal CLI (v1.5.1) is built on; its go.mod has no replace directive. */
export const TEMPORAL_SERVER_VERSION = 'v1.29.1';
const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, '.tools', 'bin');
export const SERVER_BIN = path.join(BIN, 'temporal-server');
export const SQL_TOOL_BIN = path.join(BIN, 'temporal-sql-tool');
const STAMP = path.join(BIN, 'temporal-server.version');
export const CONFIG_TEMPLATE = path.join(ROOT, 'deploy', 'temporal', 'config.yaml.tmpl');
export const LOCAL_DYNAMIC_CONFIG = path.join(ROOT, 'deploy', 'temporal', 'dynamicconfig-local.yaml');
const STATE = path.join(ROOT, '.data', 'temporal-cluster');

/** Go, from PATH or the usual install place. */
function goEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, GOFLAGS: '-buildvcs=false' };
  if (fs.existsSync('/usr/local/go/bin/go')) env.PATH = `${env.PATH ?? ''}:/usr/local/go/bin`;
  return env;
}

/** Whether the server and SQL tool of the pinned version are in .tools/bin. */
export function clusterBinariesBuilt(): boolean {
  return (
    fs.existsSync(SERVER_BIN) &&
    fs.existsSync(SQL_TOOL_BIN) &&
    fs.existsSync(STAMP) &&
    fs.readFileSync(STAMP, 'utf8').trim() === TEMPORAL_SERVER_VERSION
  );
}

/** Builds the server and the SQL tool from the Go module proxy unless they are there (minutes the first time). */
export function ensureClusterBinaries(log: (line: string) => void = (l) => console.error(l)): void {
  if (clusterBinariesBuilt()) return;
  const gobin = fs.mkdtempSync(path.join(ROOT, '.tools', 'gobin-'));
  log(`temporal-cluster: building go.temporal.io/server/cmd/server and cmd/tools/sql@${TEMPORAL_SERVER_VERSION} (minutes the first time)`);
  try {
    execFileSync(
      'go',
      [
        'install',
        `go.temporal.io/server/cmd/server@${TEMPORAL_SERVER_VERSION}`,
        `go.temporal.io/server/cmd/tools/sql@${TEMPORAL_SERVER_VERSION}`,
      ],
      { env: { ...goEnv(), GOBIN: gobin }, stdio: ['ignore', 'inherit', 'inherit'] },
    );
    fs.mkdirSync(BIN, { recursive: true });
    fs.renameSync(path.join(gobin, 'server'), SERVER_BIN);
    fs.renameSync(path.join(gobin, 'sql'), SQL_TOOL_BIN);
    fs.writeFileSync(STAMP, `${TEMPORAL_SERVER_VERSION}\n`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new Error('temporal-cluster: the Go toolchain is needed to build the Temporal server (not in PATH or /usr/local/go)', {
        cause: err,
      });
    throw err;
  } finally {
    fs.rmSync(gobin, { recursive: true, force: true });
  }
}

/** The module's PostgreSQL v12 schema directory (temporal/ and visibility/ under it), from the Go module cache. */
export function postgresSchemaDir(): string {
  const out = execFileSync('go', ['mod', 'download', '-json', `go.temporal.io/server@${TEMPORAL_SERVER_VERSION}`], {
    env: goEnv(),
    encoding: 'utf8',
    cwd: ROOT,
  });
  const dir = path.join((JSON.parse(out) as { Dir: string }).Dir, 'schema', 'postgresql', 'v12');
  if (!fs.existsSync(path.join(dir, 'temporal', 'versioned'))) throw new Error(`temporal-cluster: no schema at ${dir}`);
  return dir;
}

/** Where the cluster's PostgreSQL is and what its databases are called (TEMPORAL_CLUSTER_PG_*, as the config template reads them). */
export interface PgSettings {
  host: string;
  port: number;
  user: string;
  password: string;
  db: string;
  visibilityDb: string;
}

export function pgSettingsFromEnv(env: NodeJS.ProcessEnv = process.env): PgSettings {
  return {
    host: env.TEMPORAL_CLUSTER_PG_HOST || '127.0.0.1',
    port: Number(env.TEMPORAL_CLUSTER_PG_PORT || 5432),
    user: env.TEMPORAL_CLUSTER_PG_USER || 'postgres',
    password: env.TEMPORAL_CLUSTER_PG_PASSWORD || '',
    db: env.TEMPORAL_CLUSTER_PG_DB || 'temporal_cluster',
    visibilityDb: env.TEMPORAL_CLUSTER_PG_VISIBILITY_DB || 'temporal_cluster_visibility',
  };
}

const pgUrl = (pg: PgSettings, db: string): string =>
  `postgres://${encodeURIComponent(pg.user)}${pg.password ? `:${encodeURIComponent(pg.password)}` : ''}@${pg.host}:${pg.port}/${db}`;

/**
 * Creates both databases if missing and brings their schemas to the module's latest version with
 * the SQL tool: setup-schema (version 0.0) on a fresh database, then update-schema, which applies
 * only the versions not yet applied, so it is safe to run on every start.
 */
export async function prepareDatabases(pg: PgSettings, log: (line: string) => void = (l) => console.error(l)): Promise<void> {
  const schema = postgresSchemaDir();
  for (const [db, dir] of [
    [pg.db, 'temporal'],
    [pg.visibilityDb, 'visibility'],
  ] as const) {
    await ensureDatabase(pgUrl(pg, db));
    const pool = new Pool({ connectionString: pgUrl(pg, db), max: 1 });
    let fresh: boolean;
    try {
      fresh = (await pool.query<{ t: string | null }>(`SELECT to_regclass('public.schema_version') AS t`)).rows[0].t === null;
    } finally {
      await pool.end();
    }
    const tool = (...args: string[]): void => {
      execFileSync(
        SQL_TOOL_BIN,
        ['--plugin', 'postgres12', '--ep', pg.host, '--port', String(pg.port), '--user', pg.user, '--db', db, ...args],
        { env: { ...process.env, SQL_PASSWORD: pg.password }, stdio: ['ignore', 'pipe', 'pipe'] },
      );
    };
    if (fresh) {
      log(`temporal-cluster: ${db}: setup-schema`);
      tool('setup-schema', '-v', '0.0');
    }
    tool('update-schema', '-d', path.join(schema, dir, 'versioned'));
    log(`temporal-cluster: ${db}: schema at the latest ${dir} version`);
  }
}

/** How many history shards the cluster's database holds (0 before the server's first start). */
export async function shardCount(pg: PgSettings): Promise<number> {
  const pool = new Pool({ connectionString: pgUrl(pg, pg.db), max: 1 });
  try {
    return Number((await pool.query<{ n: string }>('SELECT count(*) AS n FROM shards')).rows[0].n);
  } finally {
    await pool.end();
  }
}

export async function dropDatabases(pg: PgSettings): Promise<void> {
  await dropDatabase(pgUrl(pg, pg.db));
  await dropDatabase(pgUrl(pg, pg.visibilityDb));
}

/** The ten ports one server process needs, from a base: frontend gRPC first. */
export function clusterPorts(base: number): Record<string, string> {
  const names = [
    'FRONTEND_PORT',
    'FRONTEND_HTTP_PORT',
    'FRONTEND_MEMBERSHIP_PORT',
    'HISTORY_PORT',
    'HISTORY_MEMBERSHIP_PORT',
    'MATCHING_PORT',
    'MATCHING_MEMBERSHIP_PORT',
    'WORKER_PORT',
    'WORKER_MEMBERSHIP_PORT',
    'METRICS_PORT',
  ];
  return Object.fromEntries(names.map((n, i) => [`TEMPORAL_CLUSTER_${n}`, String(base + i)]));
}

const portFree = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });

/** A base port with the ten ports above it free (for tests that start their own server). */
export async function freePortBlock(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    // Below 32758: the server stores membership ports as a PostgreSQL smallint.
    const base = 20_000 + Math.floor(Math.random() * 12_000);
    let ok = true;
    for (let p = base; p < base + 10 && ok; p++) ok = await portFree(p);
    if (ok) return base;
  }
  throw new Error('no block of 10 free ports found');
}

export interface ClusterServerOptions {
  /** Holds the config directory the server reads; the log goes to `logFile`. */
  stateDir: string;
  basePort: number;
  shards: number;
  pg: PgSettings;
  /** More TEMPORAL_CLUSTER_* settings (TLS files, dynamic config). */
  env?: Record<string, string>;
  logFile: string;
  /** Run on after this process exits (the npm script); tests keep it attached. */
  detached?: boolean;
}

export interface ClusterServer {
  address: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** Writes the config and starts `temporal-server start` with it; resolves once it is spawned (see waitForFrontend). */
export function spawnClusterServer(o: ClusterServerOptions): ClusterServer {
  const configDir = path.join(o.stateDir, 'config');
  fs.mkdirSync(configDir, { recursive: true });
  fs.copyFileSync(CONFIG_TEMPLATE, path.join(configDir, 'cluster.yaml'));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...clusterPorts(o.basePort),
    TEMPORAL_CLUSTER_HISTORY_SHARDS: String(o.shards),
    TEMPORAL_CLUSTER_PG_HOST: o.pg.host,
    TEMPORAL_CLUSTER_PG_PORT: String(o.pg.port),
    TEMPORAL_CLUSTER_PG_USER: o.pg.user,
    TEMPORAL_CLUSTER_PG_PASSWORD: o.pg.password,
    TEMPORAL_CLUSTER_PG_DB: o.pg.db,
    TEMPORAL_CLUSTER_PG_VISIBILITY_DB: o.pg.visibilityDb,
    ...o.env,
  };
  // The rendered configuration, for reading: exactly what the server will load.
  fs.writeFileSync(
    path.join(o.stateDir, 'rendered-config.yaml'),
    execFileSync(SERVER_BIN, ['--config', 'config', '--env', 'cluster', 'render-config'], {
      env,
      cwd: o.stateDir,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  const out = fs.openSync(o.logFile, 'a');
  // Run from the state directory: the server finds its config as ./config/cluster.yaml.
  const child = spawn(SERVER_BIN, ['--config', 'config', '--env', 'cluster', '--allow-no-auth', 'start'], {
    env,
    cwd: o.stateDir,
    stdio: ['ignore', out, out],
    detached: o.detached ?? false,
  });
  fs.closeSync(out);
  if (o.detached) child.unref();
  return {
    address: `127.0.0.1:${o.basePort}`,
    process: child,
    stop: () => stopPid(child.pid as number),
  };
}

/** SIGTERM, then SIGKILL after 15 s; resolves when the process is gone. */
export async function stopPid(pid: number): Promise<void> {
  const alive = (): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (!alive()) return;
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + 15_000;
  while (alive()) {
    if (Date.now() > deadline) {
      process.kill(pid, 'SIGKILL');
      await new Promise((r) => setTimeout(r, 200));
      return;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** The last `n` lines of the server's JSON log, as level, message and error only. */
function lastLogLines(file: string, n: number): string {
  return fs
    .readFileSync(file, 'utf8')
    .trimEnd()
    .split('\n')
    .slice(-n)
    .map((line) => {
      try {
        const e = JSON.parse(line) as { level?: string; msg?: string; error?: string };
        return `${e.level}: ${e.msg}${e.error ? `: ${e.error}` : ''}`.slice(0, 400);
      } catch {
        return line.slice(0, 400);
      }
    })
    .join('\n');
}

/** Waits until the frontend answers (over the given connection options), or `child` dies, or `ms` pass. */
export async function waitForFrontend(
  options: TemporalConnectionOptions,
  child?: ChildProcess,
  ms = 120_000,
  logFile?: string,
): Promise<Connection> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (child && child.exitCode !== null) {
      const tail = logFile && fs.existsSync(logFile) ? lastLogLines(logFile, 3) : '';
      throw new Error(`temporal-server exited with code ${child.exitCode}${logFile ? `; the end of ${logFile}:\n${tail}` : ''}`);
    }
    try {
      const conn = await Connection.connect({ ...options, connectTimeout: 2_000 });
      try {
        await conn.withDeadline(Date.now() + 5_000, () => conn.workflowService.getSystemInfo({}));
        return conn;
      } catch (err) {
        await conn.close();
        throw err;
      }
    } catch (err) {
      if (Date.now() > deadline)
        throw new Error(`the Temporal frontend at ${options.address} did not answer within ${ms} ms: ${String(err)}`, { cause: err });
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** Registers `namespace` (3 days' retention) unless it exists, and waits until the frontend serves it. */
export async function ensureNamespace(conn: Connection, namespace: string, retentionDays = 3): Promise<'registered' | 'present'> {
  let outcome: 'registered' | 'present' = 'registered';
  try {
    await conn.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs(`${retentionDays * 24}h`) });
  } catch (err) {
    if (!(isGrpcServiceError(err) && err.code === 6)) throw err; // 6: ALREADY_EXISTS
    outcome = 'present';
  }
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      await conn.workflowService.describeNamespace({ namespace });
      return outcome;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 300));
    }
  }
}

/** The frontend `npm run temporal:cluster` starts by default. */
export const DEFAULT_CLUSTER_ADDRESS = '127.0.0.1:7350';

/**
 * For tests run with TEMPORAL_TARGET=cluster: a test environment on the configured cluster
 * (TEMPORAL_ADDRESS and the TLS / API key variables; default the local cluster), in `namespace`,
 * registered here with the search attributes so that test files never share one. `dropNamespace`
 * deletes it (the server removes its workflows in the background).
 */
export async function existingClusterEnvironment(
  namespace: string,
): Promise<{ env: TestWorkflowEnvironment; address: string; dropNamespace(): Promise<void> }> {
  const endpoint = temporalEndpointFromEnv(process.env, { address: DEFAULT_CLUSTER_ADDRESS, namespace });
  const options = temporalConnectionOptions(endpoint, fs.readFileSync);
  const admin = await Connection.connect({ ...options, connectTimeout: 10_000 });
  try {
    await ensureNamespace(admin, namespace, 1);
    await registerSearchAttributes(admin, namespace);
  } finally {
    await admin.close();
  }
  const env = await TestWorkflowEnvironment.createFromExistingServer({
    address: endpoint.address,
    namespace,
    connectionOptions: { tls: options.tls, ...(options.apiKey !== undefined ? { apiKey: options.apiKey } : {}) },
  });
  return {
    env,
    address: endpoint.address,
    dropNamespace: async () => {
      await env.connection.operatorService.deleteNamespace({ namespace }).catch(() => undefined);
    },
  };
}

interface ClusterState {
  pid: number;
  address: string;
  shards: number;
  pg: PgSettings;
}
const STATE_FILE = path.join(STATE, 'cluster.json');

function readState(): ClusterState | undefined {
  try {
    return JSON.parse(fs.readFileSync(STATE_FILE, 'utf8')) as ClusterState;
  } catch {
    return undefined;
  }
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

interface Args {
  stop: boolean;
  reset: boolean;
  port: number;
  shards: number;
  namespaces: string[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = { stop: false, reset: false, port: 7350, shards: 4, namespaces: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    if (flag === '--stop') a.stop = true;
    else if (flag === '--reset') a.reset = true;
    else if (flag === '--port') a.port = Number(value());
    else if (flag === '--shards') a.shards = Number(value());
    else if (flag === '--namespace') a.namespaces.push(value());
    else
      throw new Error(`unknown argument ${flag}: usage: temporal-cluster [--port N] [--shards N] [--namespace NS]... [--reset] | --stop`);
  }
  // The server stores membership ports in a PostgreSQL smallint, so the ten ports stay below 32768.
  if (!Number.isInteger(a.port) || a.port < 1024 || a.port > 32758)
    throw new Error(`--port ${a.port} must be a whole number from 1024 to 32758`);
  if (!Number.isInteger(a.shards) || a.shards < 1 || a.shards > 16384)
    throw new Error(`--shards ${a.shards} must be a whole number from 1 to 16384`);
  for (const ns of a.namespaces) if (!/^sched-[a-z0-9-]+$/.test(ns)) throw new Error(`--namespace ${ns} must be sched-<region>`);
  if (!a.namespaces.length) a.namespaces.push('sched-local');
  return a;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const state = readState();
  if (args.stop) {
    if (!state || !running(state.pid)) console.log('temporal-cluster: not running');
    else {
      await stopPid(state.pid);
      console.log(`temporal-cluster: stopped (pid ${state.pid})`);
    }
    fs.rmSync(STATE_FILE, { force: true });
    return;
  }
  if (state && running(state.pid)) {
    console.log(`temporal-cluster: already running (pid ${state.pid}); stop it first to change its settings`);
    console.log(`frontend: ${state.address}`);
    return;
  }
  ensureClusterBinaries();
  const pg = pgSettingsFromEnv();
  fs.mkdirSync(STATE, { recursive: true });
  if (args.reset) {
    console.error(`temporal-cluster: --reset: dropping ${pg.db} and ${pg.visibilityDb}`);
    await dropDatabases(pg);
  }
  await prepareDatabases(pg);
  // The server writes one row per history shard on its first start; the count is the cluster's for good.
  const existing = await shardCount(pg);
  if (existing > 0 && existing !== args.shards)
    throw new Error(
      `temporal-cluster: ${pg.db} holds ${existing} history shards; a cluster's shard count cannot change. ` +
        `Start with --shards ${existing}, or --reset to drop the databases and begin again`,
    );
  const logFile = path.join(STATE, 'server.log');
  const server = spawnClusterServer({
    stateDir: STATE,
    basePort: args.port,
    shards: args.shards,
    pg,
    env: { TEMPORAL_CLUSTER_DYNAMIC_CONFIG: LOCAL_DYNAMIC_CONFIG },
    logFile,
    detached: true,
  });
  fs.writeFileSync(STATE_FILE, JSON.stringify({ pid: server.process.pid, address: server.address, shards: args.shards, pg }, null, 2));
  console.error(`temporal-cluster: server pid ${server.process.pid}, log ${path.relative(process.cwd(), logFile)}`);
  const conn = await waitForFrontend(
    temporalConnectionOptions({ address: server.address, namespace: 'temporal-system' }, fs.readFileSync),
    server.process,
    120_000,
    logFile,
  );
  try {
    for (const ns of args.namespaces) {
      const how = await ensureNamespace(conn, ns);
      const sa = await registerSearchAttributes(conn, ns);
      console.error(`temporal-cluster: namespace ${ns} ${how}; search attributes added: ${sa.added.join(', ') || 'none'}`);
    }
  } finally {
    await conn.close();
  }
  console.log(`frontend: ${server.address}`);
  console.log(`  TEMPORAL_ADDRESS=${server.address} TEMPORAL_NAMESPACE=${args.namespaces[0]} npm run worker`);
  console.log(`  TEMPORAL_TARGET=cluster TEMPORAL_ADDRESS=${server.address} npm run test:cluster`);
  console.log(`  stop: npm run temporal:cluster -- --stop`);
}

if (require.main === module)
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
