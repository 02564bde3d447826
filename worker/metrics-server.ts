// A worker process's own HTTP endpoint (node's `http`, no framework): `GET /metrics` for
// Prometheus, `GET /healthz` (the process answers) and `GET /readyz` (the database and Temporal
// answer within a bounded time) for orchestrators. Started by the worker when METRICS_PORT is set.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql, type Kysely } from 'kysely';
import type { ConnectionLike } from '@temporalio/client';
import type { Database } from '../db/schema';
import { METRICS_CONTENT_TYPE, metricsText, watchRegion, withTimeout } from '../activities/metrics';

/** A readiness check: resolves when its dependency answers. */
export type Probe = () => Promise<void>;

/** How long a readiness check may take before it counts as failed. */
export const DEFAULT_PROBE_TIMEOUT_MS = 2000;

export interface MetricsServerOptions {
  /** 0 picks a free port (tests). */
  port: number;
  /** Address to listen on: 127.0.0.1 (default) or 0.0.0.0 for a scraper on another host. */
  host?: string;
  /** The checks `/readyz` runs, by name (e.g. `database`, `temporal`); all must pass. */
  probes: Record<string, Probe>;
  probeTimeoutMs?: number;
}

export interface MetricsServer {
  readonly port: number;
  readonly host: string;
  /** e.g. `http://127.0.0.1:9464` */
  readonly url: string;
  close(): Promise<void>;
}

/** `/readyz`'s answer: each check's result, and the failures in one line. */
export interface Readiness {
  ready: boolean;
  checks: Record<string, 'ok' | string>;
  reason?: string;
}

/** Ready when the database answers a trivial statement. */
export function databaseProbe(db: Kysely<Database>): Probe {
  return async () => {
    await sql`SELECT 1`.execute(db);
  };
}

/** Ready when the Temporal frontend answers on this connection (the worker's own), within `timeoutMs`. */
export function temporalProbe(connection: ConnectionLike, timeoutMs = DEFAULT_PROBE_TIMEOUT_MS): Probe {
  return async () => {
    await connection.withDeadline(Date.now() + timeoutMs, () => connection.workflowService.getSystemInfo({}));
  };
}

/** Runs every probe at once, each bounded by `timeoutMs`. */
export async function checkReadiness(probes: Record<string, Probe>, timeoutMs = DEFAULT_PROBE_TIMEOUT_MS): Promise<Readiness> {
  const names = Object.keys(probes);
  const results = await Promise.allSettled(names.map((n) => withTimeout(probes[n](), timeoutMs, `${n} readiness check`)));
  const checks: Record<string, string> = {};
  const failed: string[] = [];
  results.forEach((r, i) => {
    if (r.status === 'fulfilled') checks[names[i]] = 'ok';
    else {
      const message = r.reason instanceof Error ? r.reason.message : String(r.reason);
      checks[names[i]] = `unreachable: ${message || 'no detail'}`;
      failed.push(`${names[i]} ${checks[names[i]]}`);
    }
  });
  return failed.length ? { ready: false, checks, reason: failed.join('; ') } : { ready: true, checks };
}

export async function startMetricsServer(o: MetricsServerOptions): Promise<MetricsServer> {
  const host = o.host ?? '127.0.0.1';
  const server = http.createServer((req, res) => {
    void answer(req, res, o).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `${(err as Error).message ?? String(err)}\n`);
      else res.destroy();
    });
  });
  // A scraper that keeps its connection open must not hold up a shutdown.
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    port,
    host,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

async function answer(req: http.IncomingMessage, res: http.ServerResponse, o: MetricsServerOptions): Promise<void> {
  const path = (req.url ?? '/').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain; charset=utf-8', 'only GET\n');
  switch (path) {
    case '/metrics':
      return send(res, 200, METRICS_CONTENT_TYPE, await metricsText());
    case '/healthz':
      return send(res, 200, 'application/json', JSON.stringify({ alive: true, pid: process.pid }));
    case '/readyz': {
      const r = await checkReadiness(o.probes, o.probeTimeoutMs);
      return send(res, r.ready ? 200 : 503, 'application/json', JSON.stringify(r));
    }
    default:
      return send(res, 404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz or /readyz\n');
  }
}

function send(res: http.ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * A region worker's endpoint: its region's state gauges read from `db`, and readiness from `db`
 * and the worker's Temporal connection. Closing it stops reading the region.
 */
export async function startWorkerMetrics(o: {
  region: string;
  db: Kysely<Database>;
  connection: ConnectionLike;
  port: number;
  host?: string;
  probeTimeoutMs?: number;
}): Promise<MetricsServer> {
  const timeoutMs = o.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS;
  const server = await startMetricsServer({
    port: o.port,
    host: o.host,
    probeTimeoutMs: timeoutMs,
    probes: { database: databaseProbe(o.db), temporal: temporalProbe(o.connection, timeoutMs) },
  });
  const unwatch = watchRegion(o.region, o.db);
  return {
    ...server,
    async close() {
      unwatch();
      await server.close();
    },
  };
}
