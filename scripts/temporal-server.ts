// Starts the locally built Temporal dev server (with the Web UI) on chosen ports, with the
// region's namespace and the scheduler's search attributes registered.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { devServerSearchAttributeFlags } from '../api/search-attributes';

export const TEMPORAL_BIN = path.join(__dirname, '..', '.tools', 'bin', 'temporal');

export interface DevServerOptions {
  port: number;
  uiPort?: number;
  namespaces: string[];
  /** SQLite file for state that survives restarts; in memory when absent. */
  dbFile?: string;
  logFile?: string;
}

export interface DevServer {
  address: string;
  uiUrl?: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export function requireTemporalBinary(): string {
  if (!fs.existsSync(TEMPORAL_BIN))
    throw new Error(`Temporal CLI not found at ${TEMPORAL_BIN}: run \`bash scripts/ensure-temporal.sh\` (npm run setup does it)`);
  return TEMPORAL_BIN;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export async function startDevServer(o: DevServerOptions): Promise<DevServer> {
  const args = [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(o.port),
    '--log-level',
    'warn',
    ...devServerSearchAttributeFlags(),
    // A job's run activity is scheduled on the worker's own task queue by the workflow task that
    // placed it: the server hands it straight back in that task's reply instead of through matching.
    '--dynamic-config-value',
    'system.enableActivityEagerExecution=true',
  ];
  for (const ns of o.namespaces) args.push('--namespace', ns);
  if (o.uiPort) args.push('--ui-port', String(o.uiPort));
  else args.push('--headless');
  if (o.dbFile) {
    fs.mkdirSync(path.dirname(o.dbFile), { recursive: true });
    args.push('--db-filename', o.dbFile);
  }
  const out = o.logFile ? fs.openSync(o.logFile, 'a') : 'ignore';
  const child = spawn(requireTemporalBinary(), args, { stdio: ['ignore', out, out] });
  const address = `127.0.0.1:${o.port}`;
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) => reject(new Error(`temporal dev server exited with code ${code}${o.logFile ? `; see ${o.logFile}` : ''}`))),
  );
  exited.catch(() => undefined);
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      const conn = await Promise.race([Connection.connect({ address, connectTimeout: 1000 }), exited]);
      // The namespaces exist once the server answers for them.
      for (const ns of o.namespaces) await conn.workflowService.describeNamespace({ namespace: ns });
      await conn.close();
      break;
    } catch (err) {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        throw err;
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  return {
    address,
    uiUrl: o.uiPort ? `http://127.0.0.1:${o.uiPort}` : undefined,
    process: child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      }),
  };
}
