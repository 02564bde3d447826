// What every bench runs inside: `runBench` with one registry of cleanup steps, run in reverse
// however the bench ends (done, Ctrl-C, SIGTERM, a fatal error or a bad setting); fresh
// PostgreSQL bench databases and their tenants; progress lines on stderr. The Temporal side
// (dev servers, the workflow bundle, a region's workers) is in ./temporal.
import type { Kysely } from 'kysely';
import { dropDatabase, ensureDatabase, migrateToLatest, openDatabase } from '../db/connection';
import type { Database } from '../db/schema';
import { envUrl, SettingError } from './env';

/** Progress and cleanup notes go to stderr, so stdout holds the tables alone. */
export const say = (msg: string): void => void process.stderr.write(`${msg}\n`);
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Whether any cleanup has begun (connections may be closing under calls still in flight). */
let closing = false;

/** Named undo steps, run last-registered first, each once; a step that fails is reported and the rest still run. */
export class Cleanup {
  private readonly steps: Array<{ what: string; undo: () => unknown }> = [];

  /** `label` heads the report of a step that fails ("cleanup after the ceiling: could not …"). */
  constructor(private readonly label = 'cleanup') {}

  add(what: string, undo: () => unknown): void {
    this.steps.push({ what, undo });
  }

  async run(): Promise<void> {
    closing = true;
    for (const { what, undo } of this.steps.splice(0).reverse())
      await Promise.resolve()
        .then(undo)
        .catch((err: unknown) => say(`${this.label}: could not ${what}: ${err instanceof Error ? err.message : String(err)}`));
  }
}

export interface Bench {
  /** The bench's own steps; the harness runs them whatever way the bench ends. */
  cleanup: Cleanup;
  /** Aborted on the first Ctrl-C of a bench run with `onInterrupt: 'report'`; the bench may abort it too. */
  stop: AbortController;
}

const root = new Cleanup();
const stop = new AbortController();
let onInterrupt: 'report' | 'quit' = 'quit';
let ending: Promise<void> | undefined;

/** Runs the cleanup once, then exits with the highest code asked for (the bench may have set one). */
function end(code: number): Promise<void> {
  if (code > (Number(process.exitCode) || 0)) process.exitCode = code;
  ending ??= root.run().then(() => process.exit());
  return ending;
}

function report(err: unknown): void {
  console.error(err instanceof SettingError ? err.message : err);
}

let interrupts = 0;

function interrupted(signal: NodeJS.Signals): void {
  if (++interrupts > 1) {
    say(`${signal} again: quitting without cleaning up`);
    process.exit(130);
  }
  if (onInterrupt === 'report' && !ending) {
    stop.abort();
    say('stopping: no more submissions; printing what was measured, then cleaning up (Ctrl-C again to quit at once)');
    return;
  }
  say(`${signal}: cleaning up, then quitting (Ctrl-C again to quit at once)`);
  void end(130);
}

// Installed when a bench imports the harness, before its settings are read, so that a bad setting
// (thrown while the bench module loads) ends the run like any other fatal error.
process.on('SIGINT', interrupted);
process.on('SIGTERM', interrupted);
process.on('uncaughtException', (err) => {
  // grpc-js throws from a timer when a call retried by the Temporal client's retry interceptor
  // finds its channel closed: harmless once the bench has closed connections, fatal otherwise.
  if (closing && err instanceof Error && err.message === 'Channel has been shut down') return;
  report(err);
  void end(1);
});

/**
 * Runs a bench's `main` and ends the process: cleanup, then exit 0 (or the `process.exitCode` the
 * bench set), 1 on an error. On Ctrl-C (or SIGTERM) a bench run with `onInterrupt: 'report'` sees
 * `stop` aborted and finishes its report as usual; any other is cleaned up and quits with 130.
 */
export function runBench(main: (bench: Bench) => Promise<void>, o: { onInterrupt?: 'report' | 'quit' } = {}): void {
  onInterrupt = o.onInterrupt ?? 'quit';
  main({ cleanup: root, stop }).then(
    () => end(0),
    (err: unknown) => {
      // After a Ctrl-C the cleanup pulls connections from under the workload: its errors are noise.
      if (!ending) report(err);
      return end(1);
    },
  );
}

/**
 * An empty, migrated database `name` on the BENCH_DATABASE_URL server (local PostgreSQL by
 * default), dropped first if a run left it behind. Its pool is closed by `cleanup`, which also
 * drops the database unless `keep` leaves it to inspect.
 */
export async function freshBenchDatabase(
  cleanup: Cleanup,
  name: string,
  poolSize: number,
  o: { keep?: boolean } = {},
): Promise<{ url: string; db: Kysely<Database> }> {
  const server = envUrl('BENCH_DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/postgres');
  server.pathname = `/${name}`;
  const url = server.toString();
  await dropDatabase(url);
  await ensureDatabase(url);
  if (!o.keep) cleanup.add('drop the bench database', () => dropDatabase(url));
  const db = openDatabase(url, poolSize);
  cleanup.add('close the database pool', () => db.destroy());
  await migrateToLatest(db);
  return { url, db };
}

/** Registers the tenants admission will see, each after its parent (`bench/load` brings `bench`). */
export async function seedTenants(db: Kysely<Database>, paths: string[]): Promise<void> {
  const parentOf = new Map<string, string | null>();
  for (const path of paths) {
    const parts = path.split('/');
    for (let depth = 1; depth <= parts.length; depth++) {
      const tenant = parts.slice(0, depth).join('/');
      if (!parentOf.has(tenant)) parentOf.set(tenant, depth > 1 ? parts.slice(0, depth - 1).join('/') : null);
    }
  }
  await db
    .insertInto('tenants')
    .values([...parentOf].map(([path, parent]) => ({ path, parent })))
    .execute();
}
