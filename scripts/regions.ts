// Several complete regions on one machine, as the global tier runs them here: per region its own
// Temporal dev server (own ports, own state file so it can be killed and restarted), its own
// database, and its workers, each configured with the other regions as peers. Used by the
// integration tests, the demo and the global benchmark.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Kysely } from 'kysely';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import type { Database } from '../db/schema';
import { dropDatabase, ensureDatabase, migrateToLatest, openDatabase } from '../db/connection';
import { jobTaskQueue, regionNamespace } from '../api/ids';
import type { PeerConfig } from '../api/peers';
import { SchedulerClient } from '../api/client';
import { createRegionWorker, type RegionWorker } from '../worker/worker';
import type { CycleOptions } from '../activities/cycle';
import { freePort, startDevServer, type DevServer } from './temporal-server';

export interface RegionStack {
  name: string;
  namespace: string;
  taskQueue: string;
  port: number;
  uiPort?: number;
  address: string;
  dbUrl: string;
  db: Kysely<Database>;
  server?: DevServer;
  /** In-process workers and worker processes running for the region. */
  workers: Array<{ worker: RegionWorker; done: Promise<void>; connections: Array<{ close(): Promise<void> }> }>;
  processes: ChildProcess[];
}

export interface RegionsOptions {
  /** Names the databases and state files (several sets may run at once). */
  tag: string;
  /** Directory for server state files and logs; a fresh temporary one when absent. */
  dir?: string;
  /** Base PostgreSQL URL (its database name is replaced per region). */
  databaseUrl?: string;
  /** Give each server a Web UI port. */
  ui?: boolean;
}

/** The peer list region `self` is configured with: every other region of the set. */
export function peersOf(regions: readonly RegionStack[], self: string): PeerConfig[] {
  return regions
    .filter((r) => r.name !== self)
    .map((r) => ({ name: r.name, temporalAddress: r.address, namespace: r.namespace, taskQueue: r.taskQueue }));
}

export class Regions {
  readonly list: RegionStack[] = [];
  readonly dir: string;
  private readonly clients: Array<Connection> = [];

  private constructor(
    readonly o: RegionsOptions,
    dir: string,
  ) {
    this.dir = dir;
  }

  /** Creates each region's database (fresh, migrated) and starts its Temporal server; no workers yet. */
  static async start(names: string[], o: RegionsOptions): Promise<Regions> {
    const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `regions-${o.tag}-`));
    const set = new Regions(o, dir);
    for (const name of names) {
      const base = new URL(o.databaseUrl ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
      base.pathname = `/sched_${o.tag}_${name.replace(/-/g, '_')}`;
      const dbUrl = base.toString();
      await dropDatabase(dbUrl);
      await ensureDatabase(dbUrl);
      const db = openDatabase(dbUrl, 10);
      await migrateToLatest(db);
      const port = await freePort();
      const region: RegionStack = {
        name,
        namespace: regionNamespace(name),
        taskQueue: jobTaskQueue(name),
        port,
        address: `127.0.0.1:${port}`,
        ...(o.ui ? { uiPort: await freePort() } : {}),
        dbUrl,
        db,
        workers: [],
        processes: [],
      };
      set.list.push(region);
      await set.startServer(name);
    }
    return set;
  }

  get(name: string): RegionStack {
    const r = this.list.find((x) => x.name === name);
    if (!r) throw new Error(`no region ${name} in this set (${this.list.map((x) => x.name).join(', ')})`);
    return r;
  }

  /** (Re)starts a region's Temporal server on its ports, with its state file: what it knew survives a kill. */
  async startServer(name: string): Promise<DevServer> {
    const r = this.get(name);
    r.server = await startDevServer({
      port: r.port,
      ...(r.uiPort ? { uiPort: r.uiPort } : {}),
      namespaces: [r.namespace],
      dbFile: path.join(this.dir, `${name}.temporal.db`),
      logFile: path.join(this.dir, `${name}.temporal.log`),
    });
    return r.server;
  }

  /** Kills a region's Temporal server with SIGKILL (no goodbye), and waits for it to be gone. */
  async killServer(name: string): Promise<void> {
    const p = this.get(name).server?.process;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((r) => p.once('exit', r));
    p.kill('SIGKILL');
    await gone;
  }

  /** A worker inside this process for the region, configured with the other regions as peers. */
  async startWorker(
    name: string,
    o: { bundlePath?: string; cycle?: CycleOptions; publishEveryMs?: number; publishEarly?: boolean } = {},
  ): Promise<RegionWorker> {
    const r = this.get(name);
    const native = await NativeConnection.connect({ address: r.address });
    const conn = await Connection.connect({ address: r.address });
    const worker = await createRegionWorker({
      connection: native,
      client: new Client({ connection: conn, namespace: r.namespace }),
      namespace: r.namespace,
      taskQueue: r.taskQueue,
      db: r.db,
      region: name,
      peers: peersOf(this.list, name),
      ...(o.bundlePath ? { workflowBundlePath: o.bundlePath } : {}),
      ...(o.cycle ? { cycle: o.cycle } : {}),
      ...(o.publishEveryMs ? { publishEveryMs: o.publishEveryMs } : {}),
      ...(o.publishEarly !== undefined ? { publishEarly: o.publishEarly } : {}),
    });
    r.workers.push({ worker, done: worker.run(), connections: [native, conn] });
    return worker;
  }

  /** Stops the region's in-process workers (gracefully) and closes their connections. */
  async stopWorkers(name: string): Promise<void> {
    const r = this.get(name);
    const ws = r.workers.splice(0);
    for (const w of ws) w.worker.shutdown();
    await Promise.allSettled(ws.map((w) => w.done));
    for (const w of ws) for (const c of w.connections) await c.close().catch(() => undefined);
  }

  /** A worker process for the region (`npm run worker`'s entry point), so a test can SIGKILL it. */
  spawnWorker(
    name: string,
    o: { bundlePath?: string; env?: Record<string, string>; publishEveryMs?: number; publishEarly?: boolean } = {},
  ): ChildProcess {
    const r = this.get(name);
    const root = path.join(__dirname, '..');
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'worker', 'main.ts')], {
      cwd: root,
      env: {
        ...process.env,
        TEMPORAL_ADDRESS: r.address,
        TEMPORAL_NAMESPACE: r.namespace,
        TASK_QUEUE: r.taskQueue,
        DATABASE_URL: r.dbUrl,
        REGION: name,
        PEERS: JSON.stringify(peersOf(this.list, name)),
        LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
        ...(o.publishEveryMs ? { PUBLISH_EVERY_MS: String(o.publishEveryMs) } : {}),
        ...(o.publishEarly !== undefined ? { PUBLISH_EARLY: o.publishEarly ? 'on' : 'off' } : {}),
        ...(o.bundlePath ? { WORKFLOW_BUNDLE: o.bundlePath } : {}),
        ...o.env,
      },
      stdio: [
        'ignore',
        fs.openSync(path.join(this.dir, `${name}.worker.log`), 'a'),
        fs.openSync(path.join(this.dir, `${name}.worker.log`), 'a'),
      ],
    });
    r.processes.push(child);
    return child;
  }

  /** SIGKILLs the region's worker processes and waits for them to be gone. */
  async killWorkerProcesses(name: string): Promise<void> {
    const r = this.get(name);
    const live = r.processes.splice(0).filter((p) => p.exitCode === null && p.signalCode === null);
    await Promise.all(
      live.map((p) => {
        const gone = new Promise((res) => p.once('exit', res));
        p.kill('SIGKILL');
        return gone;
      }),
    );
  }

  /** A client whose home is `name` and which can follow jobs to every other region. */
  async client(name: string): Promise<SchedulerClient> {
    const r = this.get(name);
    const home = await Connection.connect({ address: r.address });
    this.clients.push(home);
    const peers: Record<string, { connection: Connection; namespace: string }> = {};
    for (const p of this.list.filter((x) => x.name !== name)) {
      const c = await Connection.connect({ address: p.address });
      this.clients.push(c);
      peers[p.name] = { connection: c, namespace: p.namespace };
    }
    return new SchedulerClient({ connection: home, namespace: r.namespace, taskQueue: r.taskQueue, region: name, peers });
  }

  /** Stops everything: workers, processes, servers; drops the databases unless `keep`. */
  async stop(o: { keep?: boolean } = {}): Promise<void> {
    for (const r of this.list) {
      await this.stopWorkers(r.name).catch(() => undefined);
      await this.killWorkerProcesses(r.name).catch(() => undefined);
    }
    for (const c of this.clients.splice(0)) await c.close().catch(() => undefined);
    for (const r of this.list) await r.server?.stop().catch(() => undefined);
    for (const r of this.list) {
      await r.db.destroy().catch(() => undefined);
      if (!o.keep) await dropDatabase(r.dbUrl).catch(() => undefined);
    }
    if (!o.keep && !this.o.dir) fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
