// `npm run demo`: the whole scheduler on this machine. Builds the Temporal CLI if missing, finds
// or starts PostgreSQL, starts the Temporal dev server (Web UI included) and a worker, seeds the
// openb GPU fleet, submits jobs drawn from the openb trace, and prints what the scheduler did.
// Runs until Ctrl-C, or until every job has finished with --once.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import fs from 'node:fs';
import { sql } from 'kysely';
import { Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import pino from 'pino';
import { ensureDatabase, migrateToLatest, openDatabase } from '../db/connection';
import { SchedulerClient } from '../api/client';
import { TIERS, type JobSpec, type Tier } from '../api/types';
import { createSchedulerWorker } from '../worker/worker';
import { installTemporalLogging } from '../worker/logger';
import { jobTaskQueue, regionNamespace } from '../api/ids';
import { startDevServer, type DevServer } from './temporal-server';
import { obtainPostgres } from './postgres';
import { readOpenbNodes, readOpenbTasks, seedOpenbFleet } from './openb';

const ROOT = path.join(__dirname, '..');
const DATA = path.join(ROOT, '.data');

interface Args {
  once: boolean;
  jobs: number;
  port: number;
  uiPort: number;
  region: string;
  nodes: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { once: false, jobs: 300, port: 7233, uiPort: 8233, region: process.env.REGION ?? 'local', nodes: 60 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = (name: string): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} takes a positive integer, got ${JSON.stringify(argv[i])}`);
      return v;
    };
    if (a === '--once') args.once = true;
    else if (a === '--jobs') args.jobs = num('--jobs');
    else if (a === '--port') args.port = num('--port');
    else if (a === '--ui-port') args.uiPort = num('--ui-port');
    else if (a === '--nodes') args.nodes = num('--nodes');
    else throw new Error(`unknown option ${a} (known: --once, --jobs N, --nodes N, --port N, --ui-port N)`);
  }
  return args;
}

function bar(done: number, total: number, width = 30): string {
  const filled = Math.round((done / total) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  fs.mkdirSync(DATA, { recursive: true });
  const say = (msg: string) => process.stdout.write(`${msg}\n`);

  say('• Temporal CLI: checking the local build (.tools/bin/temporal)');
  const built = spawnSync('bash', [path.join(ROOT, 'scripts', 'ensure-temporal.sh')], { stdio: 'inherit' });
  if (built.status !== 0) throw new Error('building the Temporal CLI failed (see above)');

  const pgHandle = await obtainPostgres(DATA);
  const dbUrl = new URL(pgHandle.adminUrl);
  dbUrl.pathname = '/sched_demo';
  say(`• PostgreSQL: ${pgHandle.source}, database sched_demo`);
  await ensureDatabase(dbUrl.toString());
  const db = openDatabase(dbUrl.toString());
  await migrateToLatest(db);
  // An even sample of the openb fleet, so that a few hundred jobs fill it and some wait.
  const fleet = readOpenbNodes();
  const step = Math.max(1, Math.floor(fleet.length / args.nodes));
  await seedOpenbFleet(db, { region: args.region, nodes: fleet.filter((_, i) => i % step === 0).slice(0, args.nodes) });
  const inv = (
    await sql<{ n: number; d: number }>`SELECT count(*)::int AS n, coalesce(sum(device_count), 0)::int AS d FROM nodes`.execute(db)
  ).rows[0];
  const devices = Number(inv.d);
  say(`• Inventory: ${inv.n} openb nodes, ${devices} GPUs (database sched_demo keeps it between runs)`);

  const namespace = regionNamespace(args.region);
  const address = `127.0.0.1:${args.port}`;
  let server: DevServer | undefined;
  const existing = await Connection.connect({ address, connectTimeout: 1000 }).catch(() => undefined);
  if (existing) {
    await existing.close();
    say(`• Temporal: a server already answers on ${address}; using it`);
  } else {
    server = await startDevServer({
      port: args.port,
      uiPort: args.uiPort,
      namespaces: [namespace],
      dbFile: path.join(DATA, 'temporal-demo.db'),
      logFile: path.join(DATA, 'temporal.log'),
    });
    say(`• Temporal dev server on ${address} (state in .data/temporal-demo.db, log in .data/temporal.log)`);
  }

  const logFile = path.join(DATA, 'worker.log');
  const log = pino({ base: { region: args.region } }, pino.destination({ dest: logFile, sync: false }));
  installTemporalLogging(log);
  const nativeConnection = await NativeConnection.connect({ address });
  const taskQueue = jobTaskQueue(args.region);
  say('• Worker: bundling workflows and starting (logs in .data/worker.log)');
  const connection = await Connection.connect({ address });
  const client = new SchedulerClient({ connection, namespace, taskQueue, region: args.region });
  const worker = await createSchedulerWorker({
    connection: nativeConnection,
    client: client.temporal,
    namespace,
    taskQueue,
    db,
    region: args.region,
  });
  const workerDone = worker.run();
  const runId = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '');
  const tasks = readOpenbTasks().slice(0, args.jobs);
  const tenants = ['acme/vision', 'acme/nlp', 'globex/research', 'initech/recsys'];
  // Admission needs registered tenants: orgs first, then their teams.
  for (const path of [...new Set(tenants.map((t) => t.split('/')[0])), ...tenants])
    await db
      .insertInto('tenants')
      .values({ path, parent: path.includes('/') ? path.split('/')[0] : null })
      .onConflict((oc) => oc.doNothing())
      .execute();
  const specs: JobSpec[] = tasks.map((task, i) => ({
    jobId: `demo-${runId}-${String(i).padStart(4, '0')}`,
    tenant: tenants[i % tenants.length],
    tier: TIERS[i % 7 === 0 ? 0 : i % 3 === 0 ? 2 : 1] as Tier,
    priority: i % 10,
    request: task.request,
    // Trace lifetimes are days; the demo runs each job for 5–60 s in proportion.
    durationMs: Math.round(Math.min(60, Math.max(5, (task.lifetimeS ?? 60) / 3600)) * 1000),
  }));
  say(`• Submitting ${specs.length} jobs from the openb trace (run ${runId})`);
  let submitted = 0;
  const queue = [...specs];
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let s = queue.shift(); s; s = queue.shift()) {
        await client.submit(s);
        submitted++;
        if (process.stdout.isTTY) process.stdout.write(`\r  ${bar(submitted, specs.length)}`);
        else if (submitted % 50 === 0 || submitted === specs.length) say(`  ${bar(submitted, specs.length)}`);
      }
    }),
  );
  if (process.stdout.isTTY) say('');

  const summary = async () => {
    const states = await db
      .selectFrom('jobs')
      .select(['state', (eb) => eb.fn.countAll<string>().as('n')])
      .where('id', 'like', `demo-${runId}-%`)
      .groupBy('state')
      .execute();
    const by = Object.fromEntries(states.map((s) => [s.state, Number(s.n)]));
    const held = Number((await sql<{ m: number }>`SELECT coalesce(sum(milli), 0)::bigint AS m FROM allocations`.execute(db)).rows[0].m);
    const share = (held / (devices * 1000)) * 100;
    const finished = (by.completed ?? 0) + (by.cancelled ?? 0) + (by.failed ?? 0) + (by.rejected ?? 0);
    return {
      line: `placed ${(by.placed ?? 0) + (by.running ?? 0)} · waiting ${by.waiting ?? 0} · finished ${finished} (completed ${by.completed ?? 0}, failed ${by.failed ?? 0}, rejected ${by.rejected ?? 0}) · GPU allocation ${share.toFixed(1)}%`,
      finished,
    };
  };

  say(`• Temporal Web UI: http://127.0.0.1:${args.uiPort}/namespaces/${namespace}/workflows`);
  say(`  e.g. filter: JobState = "waiting"   or   Tenant = "acme/vision" AND JobState = "running"`);
  let stopping = false;
  const stop = () => (stopping = true);
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    const s = await summary();
    say(`  ${new Date().toISOString().slice(11, 19)} ${s.line}`);
    if (stopping) break;
    if (args.once && (s.finished >= specs.length || Date.now() > deadline)) break;
    await new Promise((r) => setTimeout(r, args.once ? 3000 : 10_000));
  }

  say('• Shutting down');
  worker.shutdown();
  await workerDone;
  await nativeConnection.close();
  await connection.close();
  await db.destroy();
  await server?.stop();
  await pgHandle.stop();
}

main().catch((err) => {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
