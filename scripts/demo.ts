// `npm run demo`: the whole scheduler on this machine. Builds the Temporal CLI if missing, finds
// or starts PostgreSQL, starts the Temporal dev server (Web UI included) and a worker, seeds the
// openb GPU fleet, submits jobs drawn from the openb trace, and prints what the scheduler did.
// With --regions N (2..5): N regions on this machine as peers (scripts/regions.ts), each its own
// Temporal dev server with its Web UI, database and worker process, each a slice of the fleet; most
// jobs go to the first region, and the progress lines show the handoffs between regions.
// Runs until Ctrl-C, or until every job has finished with --once.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import fs from 'node:fs';
import { sql } from 'kysely';
import { Connection } from '@temporalio/client';
import { NativeConnection, bundleWorkflowCode } from '@temporalio/worker';
import type { Kysely } from 'kysely';
import pino from 'pino';
import { ensureDatabase, migrateToLatest, openDatabase } from '../db/connection';
import type { Database } from '../db/schema';
import { SchedulerClient } from '../api/client';
import { TIERS, type JobSpec, type Tier } from '../api/types';
import { createRegionWorker } from '../worker/worker';
import { installTemporalLogging } from '../worker/logger';
import { jobTaskQueue, regionNamespace } from '../api/ids';
import { startDevServer, type DevServer } from './temporal-server';
import { obtainPostgres } from './postgres';
import { readOpenbNodes, readOpenbTasks, seedOpenbFleet, type OpenbNode, type OpenbTask } from './openb';
import { Regions } from './regions';

const ROOT = path.join(__dirname, '..');
const DATA = path.join(ROOT, '.data');
/** Region names for --regions N, the first taking most of the jobs. */
const REGION_NAMES = ['us-east', 'eu-west', 'ap-south', 'sa-east', 'af-south'];
/** With several regions, a job waits this long at home before it is offered to a peer (the default is 30 s). */
const DEMO_HANDOFF_AFTER_MS = 5000;
const TENANTS = ['acme/vision', 'acme/nlp', 'globex/research', 'initech/recsys'];

interface Args {
  once: boolean;
  jobs: number;
  port: number;
  uiPort: number;
  region: string;
  /** The whole fleet with one region; per region with several (default 20 then). */
  nodes?: number;
  regions: number;
  /** --port or --ui-port given (they apply to the single-region demo only). */
  ports: boolean;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { once: false, jobs: 300, port: 7233, uiPort: 8233, region: process.env.REGION ?? 'local', regions: 1, ports: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const num = (name: string): number => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${name} takes a positive integer, got ${JSON.stringify(argv[i])}`);
      return v;
    };
    if (a === '--once') args.once = true;
    else if (a === '--jobs') args.jobs = num('--jobs');
    else if (a === '--port') [args.port, args.ports] = [num('--port'), true];
    else if (a === '--ui-port') [args.uiPort, args.ports] = [num('--ui-port'), true];
    else if (a === '--nodes') args.nodes = num('--nodes');
    else if (a === '--regions') args.regions = num('--regions');
    else throw new Error(`unknown option ${a} (known: --once, --jobs N, --nodes N, --regions N, --port N, --ui-port N)`);
  }
  if (args.regions > REGION_NAMES.length) throw new Error(`--regions takes 1 to ${REGION_NAMES.length}, got ${args.regions}`);
  if (args.regions > 1 && args.ports)
    throw new Error('--port and --ui-port apply to the single-region demo; with --regions each region gets free ports, printed at start');
  return args;
}

function bar(done: number, total: number, width = 30): string {
  const filled = Math.round((done / total) * width);
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`;
}

const say = (msg: string) => process.stdout.write(`${msg}\n`);
const clock = () => new Date().toISOString().slice(11, 19);

/** Admission needs registered tenants: orgs first, then their teams. */
async function registerTenants(db: Kysely<Database>): Promise<void> {
  for (const path of [...new Set(TENANTS.map((t) => t.split('/')[0])), ...TENANTS])
    await db
      .insertInto('tenants')
      .values({ path, parent: path.includes('/') ? path.split('/')[0] : null })
      .onConflict((oc) => oc.doNothing())
      .execute();
}

/** The demo's jobs: openb tasks with a mix of tenants, tiers and priorities. */
function demoSpecs(tasks: OpenbTask[], runId: string): JobSpec[] {
  return tasks.map((task, i) => ({
    jobId: `demo-${runId}-${String(i).padStart(4, '0')}`,
    tenant: TENANTS[i % TENANTS.length],
    tier: TIERS[i % 7 === 0 ? 0 : i % 3 === 0 ? 2 : 1] as Tier,
    priority: i % 10,
    request: task.request,
    // Trace lifetimes are days; the demo runs each job for 5–60 s in proportion.
    durationMs: Math.round(Math.min(60, Math.max(5, (task.lifetimeS ?? 60) / 3600)) * 1000),
  }));
}

/** Submits with 16 callers and a progress bar; `submit` picks the region. */
async function submitAll(specs: JobSpec[], submit: (s: JobSpec, i: number) => Promise<unknown>): Promise<void> {
  let submitted = 0;
  const queue = specs.map((s, i) => [s, i] as const);
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let next = queue.shift(); next; next = queue.shift()) {
        await submit(...next);
        submitted++;
        if (process.stdout.isTTY) process.stdout.write(`\r  ${bar(submitted, specs.length)}`);
        else if (submitted % 50 === 0 || submitted === specs.length) say(`  ${bar(submitted, specs.length)}`);
      }
    }),
  );
  if (process.stdout.isTTY) say('');
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  fs.mkdirSync(DATA, { recursive: true });

  say('• Temporal CLI: checking the local build (.tools/bin/temporal)');
  const built = spawnSync('bash', [path.join(ROOT, 'scripts', 'ensure-temporal.sh')], { stdio: 'inherit' });
  if (built.status !== 0) throw new Error('building the Temporal CLI failed (see above)');

  const pgHandle = await obtainPostgres(DATA);
  if (args.regions > 1) {
    try {
      await regionsDemo(args, pgHandle.source, pgHandle.adminUrl);
    } finally {
      await pgHandle.stop();
    }
    return;
  }
  const dbUrl = new URL(pgHandle.adminUrl);
  dbUrl.pathname = '/sched_demo';
  say(`• PostgreSQL: ${pgHandle.source}, database sched_demo`);
  await ensureDatabase(dbUrl.toString());
  const db = openDatabase(dbUrl.toString());
  await migrateToLatest(db);
  // An even sample of the openb fleet, so that a few hundred jobs fill it and some wait.
  const fleet = readOpenbNodes();
  const nodes = args.nodes ?? 60;
  const step = Math.max(1, Math.floor(fleet.length / nodes));
  await seedOpenbFleet(db, { region: args.region, nodes: fleet.filter((_, i) => i % step === 0).slice(0, nodes) });
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
  const worker = await createRegionWorker({
    connection: nativeConnection,
    client: client.temporal,
    namespace,
    taskQueue,
    db,
    region: args.region,
  });
  const workerDone = worker.run();
  const runId = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '');
  await registerTenants(db);
  const specs = demoSpecs(readOpenbTasks().slice(0, args.jobs), runId);
  say(`• Submitting ${specs.length} jobs from the openb trace (run ${runId})`);
  await submitAll(specs, (s) => client.submit(s));

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
    say(`  ${clock()} ${s.line}`);
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

/** Nodes of each model per region: `perRegion` split by the fleet's mix (largest remainder), rare models dropped. */
function modelMix(fleet: OpenbNode[], perRegion: number): Map<string, number> {
  const models = [...new Set(fleet.map((n) => n.model))];
  const exact = models.map((m) => ({ m, x: (perRegion * fleet.filter((n) => n.model === m).length) / fleet.length }));
  const mix = new Map(exact.map(({ m, x }) => [m, Math.floor(x)]));
  let left = perRegion - [...mix.values()].reduce((s, k) => s + k, 0);
  for (const { m } of [...exact].sort((a, b) => (b.x % 1) - (a.x % 1))) if (left-- > 0) mix.set(m, mix.get(m)! + 1);
  return new Map([...mix].filter(([, k]) => k > 0));
}

/**
 * One slice of the openb fleet per region, each with the same models in the fleet's proportions
 * (each model's nodes sampled evenly and dealt round-robin). The same models everywhere, and jobs
 * asking only for models the slices have, let any region take any job.
 */
function fleetSlices(names: string[], perRegion: number): { slices: Map<string, OpenbNode[]>; models: Set<string> } {
  const fleet = readOpenbNodes();
  const mix = modelMix(fleet, perRegion);
  const slices = new Map<string, OpenbNode[]>(names.map((r) => [r, []]));
  for (const [model, k] of mix) {
    const nodes = fleet.filter((n) => n.model === model);
    const step = Math.max(1, Math.floor(nodes.length / (names.length * k)));
    nodes
      .filter((_, i) => i % step === 0)
      .slice(0, names.length * k)
      .forEach((n, i) => slices.get(names[i % names.length])!.push(n));
  }
  return { slices, models: new Set(mix.keys()) };
}

/** One region's counts for the progress line: jobs placed there, waiting there, its own jobs living abroad, copies it took. */
async function regionCounts(db: Kysely<Database>, runId: string) {
  const r = await sql<{ placed: number; waiting: number; out: number; in: number; finished: number; held: string; devices: number }>`
    SELECT count(*) FILTER (WHERE state IN ('placed', 'running'))::int AS placed,
      count(*) FILTER (WHERE state IN ('submitted', 'waiting', 'waiting-abroad', 'handing-off'))::int AS waiting,
      count(*) FILTER (WHERE origin_region IS NULL AND handoff_peer IS NOT NULL
        AND (state = 'handed-off' OR (state IN ('completed', 'cancelled', 'failed') AND placed_at IS NULL)))::int AS out,
      count(*) FILTER (WHERE origin_region IS NOT NULL AND (placed_at IS NOT NULL OR state NOT IN ('pending', 'cancelled')))::int AS in,
      count(*) FILTER (WHERE origin_region IS NULL AND state IN ('completed', 'cancelled', 'rejected', 'failed'))::int AS finished,
      (SELECT coalesce(sum(milli), 0) FROM allocations)::bigint AS held,
      (SELECT coalesce(sum(device_count), 0) FROM nodes)::int AS devices
    FROM jobs WHERE id LIKE ${`demo-${runId}-%`}`.execute(db);
  return { ...r.rows[0], held: Number(r.rows[0].held) };
}

/**
 * `--regions N`: N regions as peers (each its own Temporal dev server with Web UI, database and
 * worker process), a slice of the openb fleet each; 70% of the jobs go to the first region, the
 * rest shared by the others, so the first region hands work to its peers.
 */
async function regionsDemo(args: Args, pgSource: string, adminUrl: string): Promise<void> {
  const names = REGION_NAMES.slice(0, args.regions);
  const dir = path.join(DATA, 'regions');
  // The databases are made afresh each run, so the servers' state starts afresh too (logs are kept).
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(dir)) if (/\.temporal\.db(-.*)?$/.test(f)) fs.rmSync(path.join(dir, f));
  say(`• PostgreSQL: ${pgSource}; one database per region (sched_demo_<region>), made afresh`);
  say(`• Temporal: ${names.length} dev servers with their Web UIs (state and logs in .data/regions/)`);
  const regions = await Regions.start(names, { tag: 'demo', dir, ui: true, databaseUrl: adminUrl });
  let stopped = false;
  const shutdown = async () => {
    if (stopped) return;
    stopped = true;
    say('• Shutting down (databases and server state kept for a look: .data/regions/, sched_demo_<region>)');
    await regions.stop({ keep: true });
  };
  try {
    const perRegion = args.nodes ?? 20;
    const { slices, models } = fleetSlices(names, perRegion);
    for (const r of names) {
      await seedOpenbFleet(regions.get(r).db, { region: r, nodes: slices.get(r)! });
      await registerTenants(regions.get(r).db);
    }
    const gpus = new Map(names.map((r) => [r, slices.get(r)!.reduce((s, n) => s + n.gpus, 0)]));
    say(
      `• Inventory: ${perRegion} openb nodes per region (${[...models].join(', ')}): ${names.map((r) => `${r} ${gpus.get(r)} GPUs`).join(', ')}`,
    );

    say(`• Workers: one process per region, peers configured (logs in .data/regions/<region>.worker.log)`);
    const { code } = await bundleWorkflowCode({
      workflowsPath: path.join(ROOT, 'workflows', 'index.ts'),
      logger: { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error },
    });
    const bundlePath = path.join(dir, 'workflow-bundle.js');
    fs.writeFileSync(bundlePath, code);
    for (const r of names) regions.spawnWorker(r, { bundlePath, env: { LOG_LEVEL: process.env.LOG_LEVEL ?? 'info' } });
    // Ready when every region holds a fresh summary of each of its peers.
    const ready = Date.now() + 120_000;
    for (;;) {
      const fresh = await Promise.all(
        names.map(async (r) => {
          const rows = await regions.get(r).db.selectFrom('peer_summaries').select('received_at').execute();
          return rows.filter((x) => Date.now() - x.received_at.getTime() < 10_000).length;
        }),
      );
      if (fresh.every((n) => n === names.length - 1)) break;
      if (Date.now() > ready) throw new Error('the regions did not exchange inventory summaries within 2 minutes; see .data/regions/*.log');
      await new Promise((r) => setTimeout(r, 1000));
    }
    say(`  every region has its peers' inventory summaries`);

    const clients = new Map<string, SchedulerClient>();
    for (const r of names) clients.set(r, await regions.client(r));
    const runId = new Date().toISOString().slice(0, 19).replace(/[-:T]/g, '');
    // Jobs ask only for models every region has (the trace's "any model" means any model here).
    const tasks = readOpenbTasks()
      .map((t) => ({ ...t, request: { ...t.request, acceleratorTypes: t.request.acceleratorTypes.filter((m) => models.has(m)) } }))
      .filter((t) => t.request.acceleratorTypes.length)
      .slice(0, args.jobs);
    const specs = demoSpecs(tasks, runId).map((s) => ({ ...s, handoff: { afterMs: DEMO_HANDOFF_AFTER_MS } }));
    // 70% to the first region, the rest round-robin over the others.
    const homeOf = (i: number): string => (i % 10 < 7 ? names[0] : names[1 + (i % (names.length - 1))]);
    const count = (r: string) => specs.filter((_, i) => homeOf(i) === r).length;
    say(
      `• Submitting ${specs.length} jobs from the openb trace (run ${runId}): ${names.map((r) => `${count(r)} to ${r}`).join(', ')}; ` +
        `a job still waiting after ${DEMO_HANDOFF_AFTER_MS / 1000} s is offered to a peer with room`,
    );
    await submitAll(specs, (s, i) => clients.get(homeOf(i))!.submit(s));

    say('• Temporal Web UIs (workflow ids are the same in every region: job/<tenant>/<job id>):');
    for (const r of names)
      say(`  ${r.padEnd(9)} http://127.0.0.1:${regions.get(r).uiPort}/namespaces/${regions.get(r).namespace}/workflows`);
    say(`  e.g. filter: JobState = "handed-off" (at home; HandoffPeer says where it went)   or   JobState = "running"`);
    say('  per region: placed (there now) · waiting (there now) · out (its jobs handed to a peer) · in (jobs it took from a peer)');
    let stopping = false;
    const stop = () => (stopping = true);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const deadline = Date.now() + 15 * 60_000;
    for (;;) {
      const per = await Promise.all(names.map((r) => regionCounts(regions.get(r).db, runId)));
      const finished = per.reduce((s, c) => s + c.finished, 0);
      const held = per.reduce((s, c) => s + c.held, 0);
      const devices = per.reduce((s, c) => s + c.devices, 0);
      say(
        `  ${clock()} ` +
          names.map((r, i) => `${r}: placed ${per[i].placed} waiting ${per[i].waiting} out ${per[i].out} in ${per[i].in}`).join(' │ ') +
          ` │ finished ${finished}/${specs.length} · GPU allocation ${((100 * held) / (devices * 1000)).toFixed(1)}%`,
      );
      if (stopping) break;
      if (args.once && (finished >= specs.length || Date.now() > deadline)) break;
      await new Promise((r) => setTimeout(r, args.once ? 3000 : 10_000));
    }
  } finally {
    await shutdown();
  }
}

main().catch((err) => {
  console.error(`demo failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
