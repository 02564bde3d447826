// `npm run chaos`: one region (its own Temporal dev server, database and two worker processes)
// under steady submissions of openb jobs (gangs, shares, three tiers) and operator actions
// (cancel, requeue, setPriority, drain/uncordon), while it SIGKILLs worker processes at random
// moments, SIGKILLs and restarts the Temporal server, restarts PostgreSQL, terminates job
// workflows from the Temporal CLI and sends malformed signals and updates. Then it waits for
// convergence and reports: jobs submitted, completed exactly once, cancelled, failed, lost, run
// twice, leaked allocations, stuck jobs, invariant violations, time to converge. Targets: 0 lost,
// 0 run twice, 0 leaked, 0 stuck, 0 violations, and at least CHAOS_KILLS worker kills.
// With CHAOS_KILLS=0 CHAOS_SERVER_RESTARTS=0 CHAOS_PG_RESTARTS=0 CHAOS_TERMINATE=0 and a long
// CHAOS_SECONDS it is a soak: it prints the worker's memory and submit→placed latency in the
// first and the last fifth of the run (target: neither grows by more than half).
// Settings: CHAOS_SECONDS (arrivals, default 240), CHAOS_RATE (jobs/s, 2), CHAOS_NODES (openb
// nodes, 16), CHAOS_KILLS (worker SIGKILLs spread over the run, 50), CHAOS_SERVER_RESTARTS (1),
// CHAOS_PG_RESTARTS (1; restarts the machine's PostgreSQL cluster with pg_ctlcluster: run it
// alone), CHAOS_TERMINATE (share of jobs terminated from the CLI, 0.02), CHAOS_MALFORMED
// (malformed messages sent, 40), CHAOS_CONVERGE_S (wait for convergence, 300), CHAOS_SEED.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { sql } from 'kysely';
import type { JobSpec, Tier } from '../api/types';
import { jobWorkflowId } from '../api/ids';
import type { SchedulerClient } from '../api/client';
import { checkInvariants } from '../db/invariants';
import { allocationsWithoutLiveWorkflow } from '../activities/reconcile';
import { OPENB_DIR, readOpenbNodes, readOpenbTasks, seedOpenbFleet, type OpenbNode, type OpenbTask } from '../scripts/openb';
import { Regions } from '../scripts/regions';
import { requireTemporalBinary } from '../scripts/temporal-server';
import { envNumber, envUrl } from './env';
import { runBench, say, seedTenants, sleep } from './harness';
import { seeded } from './fleet';
import { fmt, quantiles } from './stats';
import { benchBundle } from './temporal';

const run = promisify(execFile);

const SECONDS = envNumber('CHAOS_SECONDS', 240, { above: 0 });
const RATE = envNumber('CHAOS_RATE', 2, { above: 0 });
const NODES = envNumber('CHAOS_NODES', 16, { integer: true, min: 2 });
const KILLS = envNumber('CHAOS_KILLS', 50, { integer: true, min: 0 });
const SERVER_RESTARTS = envNumber('CHAOS_SERVER_RESTARTS', 1, { integer: true, min: 0 });
const PG_RESTARTS = envNumber('CHAOS_PG_RESTARTS', 1, { integer: true, min: 0 });
const TERMINATE = envNumber('CHAOS_TERMINATE', 0.02, { min: 0, max: 1 });
const MALFORMED = envNumber('CHAOS_MALFORMED', 40, { integer: true, min: 0 });
const CONVERGE_S = envNumber('CHAOS_CONVERGE_S', 300, { above: 0 });
const SEED = envNumber('CHAOS_SEED', 1, { integer: true, min: 0 });

const REGION = 'chaos';
const TENANTS = ['chaos/a', 'chaos/b'];
const TIERS: Tier[] = ['premium', 'standard', 'basic'];
const WORKERS = 2;
const TERMINAL = new Set(['completed', 'cancelled', 'failed', 'rejected']);
const PROGRESS_EVERY_MS = 15_000;

const random = seeded(SEED);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)];

/** Resident memory of a process in MiB (Linux), or NaN. */
function rssMib(pid: number | undefined): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Retries a step that may meet a server or database being restarted. */
async function persist<T>(what: string, f: () => Promise<T>, tries = 60): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await f();
    } catch (err) {
      if (i >= tries) throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
      await sleep(1000);
    }
  }
}

interface Counters {
  submitted: string[];
  submitMs: Map<string, number>;
  /** Each submitted job's workflow id: a job whose workflow never wrote its row is found by it. */
  workflowIds: Map<string, string>;
  workerKills: number;
  serverRestarts: number;
  pgRestarts: number;
  terminated: string[];
  malformedSent: number;
  malformedRefused: number;
  operator: Record<'cancel' | 'requeue' | 'setPriority' | 'drain', number>;
  submitFailures: number;
}

/**
 * The openb fleet and tasks when the trace is here (OPENB_DIR, default ../shared/data/openb);
 * otherwise an openb-like mix of the same shape (8-GPU and 4-GPU nodes of two models; shares,
 * 1/2/4/8-GPU tasks and 2×4 gangs), so the run works on a clone without the trace.
 */
function fleetAndTasks(): { fleet: OpenbNode[]; tasks: OpenbTask[] } {
  if (fs.existsSync(path.join(OPENB_DIR, 'openb_node_list_gpu_node.csv'))) return { fleet: readOpenbNodes(), tasks: readOpenbTasks() };
  say(`• no openb trace in ${OPENB_DIR}: an openb-like synthetic mix instead`);
  const fleet: OpenbNode[] = Array.from({ length: NODES }, (_, i) => ({
    name: `syn-node-${i}`,
    gpus: i % 4 === 3 ? 4 : 8,
    model: i % 2 ? 'V100' : 'T4',
    cpuMilli: 96_000,
    memoryMib: 393_216,
  }));
  const request = (workers: number, devicesPerWorker: number, milliPerWorker?: number): OpenbTask['request'] => ({
    acceleratorTypes: ['T4', 'V100'],
    workers,
    devicesPerWorker,
    ...(milliPerWorker ? { milliPerWorker } : {}),
    topology: 'any',
    cpuMilliPerWorker: 4000,
    memoryMibPerWorker: 16_384,
  });
  const tasks: OpenbTask[] = [
    ...[250, 500, 500, 750].map((m, i) => ({ name: `share-${i}`, request: request(1, 0, m) })),
    ...[1, 1, 1, 2, 2, 4, 8].map((d, i) => ({ name: `whole-${i}`, request: request(1, d) })),
    { name: 'gang', request: request(2, 4) },
  ];
  return { fleet, tasks };
}

runBench(async ({ cleanup }) => {
  const { fleet, tasks: shapes } = fleetAndTasks();
  const step = Math.max(1, Math.floor(fleet.length / NODES));
  const nodes = fleet.filter((_, i) => i % step === 0).slice(0, NODES);
  const models = new Set(nodes.map((n) => n.model));
  const tasks = shapes
    .map((t) => ({ ...t, request: { ...t.request, acceleratorTypes: t.request.acceleratorTypes.filter((m) => models.has(m)) } }))
    .filter(
      (t) =>
        t.request.acceleratorTypes.length &&
        nodes.some(
          (n) =>
            t.request.acceleratorTypes.includes(n.model) &&
            n.gpus >= Math.max(1, t.request.devicesPerWorker) &&
            n.cpuMilli >= (t.request.cpuMilliPerWorker ?? 0) &&
            n.memoryMib >= (t.request.memoryMibPerWorker ?? 0),
        ),
    );
  const gpus = nodes.reduce((s, n) => s + n.gpus, 0);
  say(`• chaos: ${nodes.length} openb nodes (${gpus} GPUs), ${tasks.length} task shapes, ${RATE} jobs/s for ${SECONDS} s`);
  const bundlePath = await benchBundle('chaos', cleanup);
  const soak = KILLS === 0 && SERVER_RESTARTS === 0 && PG_RESTARTS === 0;
  const regions = await Regions.start([REGION], {
    // A soak and a chaos run may go side by side: each its own database and server.
    tag: soak ? 'soak' : 'chaos',
    databaseUrl: envUrl('BENCH_DATABASE_URL', 'postgres://postgres@127.0.0.1:5432/postgres').toString(),
  });
  cleanup.add('stop the region', () => regions.stop());
  const r = regions.get(REGION);
  const killAll = (): void => {
    for (const p of [r.server?.process, ...r.processes]) if (p && p.exitCode === null) p.kill('SIGKILL');
  };
  process.once('exit', killAll);
  await seedOpenbFleet(r.db, { region: REGION, nodes });
  await seedTenants(r.db, TENANTS);
  const workerEnv = { RECONCILE_EVERY_MS: '5000', RECONCILE_GRACE_MS: '15000' };
  const spawn = (): void => void regions.spawnWorker(REGION, { bundlePath, env: workerEnv });
  for (let i = 0; i < WORKERS; i++) spawn();
  const client: SchedulerClient = await regions.client(REGION);
  const temporal = requireTemporalBinary();

  const c: Counters = {
    submitted: [],
    submitMs: new Map(),
    workflowIds: new Map(),
    workerKills: 0,
    serverRestarts: 0,
    pgRestarts: 0,
    terminated: [],
    malformedSent: 0,
    malformedRefused: 0,
    operator: { cancel: 0, requeue: 0, setPriority: 0, drain: 0 },
    submitFailures: 0,
  };
  const t0 = Date.now();
  const end = t0 + SECONDS * 1000;
  const at = (share: number): number => t0 + share * SECONDS * 1000;
  const live = (): string[] => c.submitted.slice(-200);
  const memory: Array<{ at: number; mib: number }> = [];

  // --- submissions -----------------------------------------------------------------------------
  const submissions = (async () => {
    for (let i = 0; Date.now() < end; i++) {
      const due = t0 + (i * 1000) / RATE;
      if (due > Date.now()) await sleep(due - Date.now());
      const task = pick(tasks);
      const tier = pick(TIERS);
      const spec: JobSpec = {
        jobId: `c${String(i).padStart(6, '0')}`,
        tenant: pick(TENANTS),
        tier,
        priority: Math.floor(random() * 100),
        durationMs: 3000 + Math.floor(random() * 20_000),
        maxAttempts: 3,
        request: task.request,
      };
      c.submitMs.set(spec.jobId, Date.now());
      // Kept until accepted (the server may be down); a submit is idempotent under its workflow id.
      void persist(`submit ${spec.jobId}`, () => client.submit(spec), 120)
        .then((workflowId) => {
          c.workflowIds.set(spec.jobId, workflowId);
          c.submitted.push(spec.jobId);
        })
        .catch(() => c.submitFailures++);
    }
  })();

  // --- operator actions and malformed messages -----------------------------------------------------
  const operators = (async () => {
    const names = nodes.map((n) => n.name);
    let malformedLeft = MALFORMED;
    while (Date.now() < end) {
      await sleep(2000 + random() * 2000);
      const jobId = live().length ? pick(live()) : undefined;
      if (!jobId) continue;
      const tenant = (
        await r.db
          .selectFrom('jobs')
          .select('tenant')
          .where('id', '=', jobId)
          .executeTakeFirst()
          .catch(() => undefined)
      )?.tenant;
      if (!tenant) continue;
      const roll = random();
      try {
        if (roll < 0.15) {
          c.operator.cancel++;
          await client.cancel(tenant, jobId, 'chaos: cancel');
        } else if (roll < 0.3) {
          c.operator.requeue++;
          await client.requeue(tenant, jobId, 'chaos: requeue');
        } else if (roll < 0.45) {
          c.operator.setPriority++;
          await client.setPriority(tenant, jobId, Math.floor(random() * 1000));
        } else if (roll < 0.5) {
          c.operator.drain++;
          const node = pick(names);
          await client.drain(node);
          setTimeout(() => void client.uncordon(node).catch(() => undefined), 10_000);
        }
      } catch {
        // Refusals (ended, not running, ...) are answers; an unreachable server is chaos.
      }
      if (malformedLeft > 0) {
        malformedLeft--;
        c.malformedSent++;
        const h = client.temporal.workflow.getHandle(jobWorkflowId(tenant, jobId));
        const bad: Array<() => Promise<unknown>> = [
          () => h.signal('placed', { epoch: 'one', placement: 42 }),
          () => h.signal('waiting'),
          () => h.signal('preempt', { preemptor: 7 }),
          () => h.signal('handoffDecision', null),
          () => h.signal('handedJobEnded', { epoch: -1 }),
          () => h.executeUpdate('setPriority', { args: ['high'] }),
          () => h.executeUpdate('requeue', { args: [{}] }),
          () => h.executeUpdate('cancel', { args: [12] }),
        ];
        await pick(bad)().catch(() => c.malformedRefused++);
      }
    }
  })();

  // --- terminations from the CLI --------------------------------------------------------------------
  const terminations = (async () => {
    while (Date.now() < end && TERMINATE > 0) {
      await sleep(1000 / Math.max(RATE * TERMINATE, 0.01));
      const jobId = live().length ? pick(live()) : undefined;
      if (!jobId) continue;
      const row = await r.db
        .selectFrom('jobs')
        .select(['tenant', 'workflow_id'])
        .where('id', '=', jobId)
        .executeTakeFirst()
        .catch(() => undefined);
      if (!row) continue;
      await run(temporal, [
        'workflow',
        'terminate',
        '--address',
        r.address,
        '--namespace',
        r.namespace,
        '-w',
        row.workflow_id,
        '--reason',
        'chaos: terminated from the CLI',
      ])
        .then(() => c.terminated.push(jobId))
        .catch(() => undefined);
    }
  })();

  // --- kills and restarts ------------------------------------------------------------------------
  const killer = (async () => {
    const events: Array<{ at: number; what: () => Promise<void> }> = [];
    for (let k = 0; k < KILLS; k++)
      events.push({
        at: at((k + 0.5 + (random() - 0.5) * 0.8) / KILLS),
        what: async () => {
          const victims = r.processes.filter((p) => p.exitCode === null && p.signalCode === null);
          const victim = victims.length ? pick(victims) : undefined;
          if (victim) {
            const gone = new Promise((res) => victim.once('exit', res));
            victim.kill('SIGKILL');
            await gone;
            r.processes.splice(r.processes.indexOf(victim), 1);
            c.workerKills++;
          }
          spawn();
        },
      });
    for (let k = 0; k < SERVER_RESTARTS; k++)
      events.push({
        at: at((k + 1) / (SERVER_RESTARTS + 1)),
        what: async () => {
          say(`  [chaos ${Math.round((Date.now() - t0) / 1000)}s] SIGKILL the Temporal server, restart it on its state file`);
          await regions.killServer(REGION);
          await sleep(3000);
          await regions.startServer(REGION);
          c.serverRestarts++;
        },
      });
    for (let k = 0; k < PG_RESTARTS; k++)
      events.push({
        at: at((k + 0.6) / (PG_RESTARTS + 0.2)),
        what: async () => {
          const version = fs.readdirSync('/etc/postgresql')[0];
          say(`  [chaos ${Math.round((Date.now() - t0) / 1000)}s] restart PostgreSQL (${version}/main)`);
          await run('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'restart', '-m', 'immediate']);
          c.pgRestarts++;
        },
      });
    events.sort((a, b) => a.at - b.at);
    for (const e of events) {
      if (e.at > Date.now()) await sleep(e.at - Date.now());
      await e.what().catch((err: unknown) => say(`  chaos step failed: ${(err as Error).message}`));
    }
  })();

  const progress = setInterval(() => {
    const worker = r.processes.find((p) => p.exitCode === null);
    if (soak && worker) memory.push({ at: Date.now(), mib: rssMib(worker.pid) });
    say(
      `  [chaos ${Math.round((Date.now() - t0) / 1000)}s] submitted ${c.submitted.length}, worker kills ${c.workerKills}, ` +
        `server restarts ${c.serverRestarts}, PostgreSQL restarts ${c.pgRestarts}, terminated ${c.terminated.length}, malformed ${c.malformedSent}`,
    );
  }, PROGRESS_EVERY_MS);
  cleanup.add('stop the progress line', () => clearInterval(progress));
  await Promise.all([submissions, operators, terminations, killer]);
  // Let the last submissions land (a submit is retried while the server is down).
  while (c.submitted.length + c.submitFailures < c.submitMs.size) await sleep(500);
  if (!r.processes.some((p) => p.exitCode === null && p.signalCode === null)) spawn();
  const arrivalsDone = Date.now();
  say(`• arrivals done: ${c.submitted.length} submitted; waiting up to ${CONVERGE_S} s for convergence`);

  // --- convergence ---------------------------------------------------------------------------------
  const deadline = arrivalsDone + CONVERGE_S * 1000;
  let converged: number | undefined;
  for (;;) {
    const open = await persist('read the jobs', () =>
      sql<{ n: number }>`SELECT count(*)::int AS n FROM jobs WHERE state NOT IN ('completed', 'cancelled', 'failed', 'rejected')`.execute(
        r.db,
      ),
    );
    const held = await persist('read the allocations', () => sql<{ n: number }>`SELECT count(*)::int AS n FROM allocations`.execute(r.db));
    const rows = await persist('count rows', () => sql<{ n: number }>`SELECT count(*)::int AS n FROM jobs`.execute(r.db));
    if (open.rows[0].n === 0 && held.rows[0].n === 0 && rows.rows[0].n >= c.submitted.length) {
      converged = Date.now();
      break;
    }
    if (Date.now() > deadline) break;
    await sleep(2000);
  }
  clearInterval(progress);

  // --- results ---------------------------------------------------------------------------------------
  const rows = await r.db.selectFrom('jobs').select(['id', 'state', 'workflow_id', 'placed_at']).execute();
  const byId = new Map(rows.map((x) => [x.id, x]));
  const runs = await sql<{ job_id: string; succeeded: number; runs: number }>`
    SELECT job_id, count(*) FILTER (WHERE state = 'succeeded')::int AS succeeded, count(*)::int AS runs FROM executions GROUP BY job_id`.execute(
    r.db,
  );
  const succeeded = new Map(runs.rows.map((x) => [x.job_id, x.succeeded]));
  const count = (state: string) => c.submitted.filter((id) => byId.get(id)?.state === state).length;
  const completedOnce = c.submitted.filter((id) => byId.get(id)?.state === 'completed' && succeeded.get(id) === 1).length;
  const runTwice = c.submitted.filter((id) => (succeeded.get(id) ?? 0) > 1);
  const completedWithoutRun = c.submitted.filter((id) => byId.get(id)?.state === 'completed' && (succeeded.get(id) ?? 0) === 0);
  const unfinished = c.submitted.filter((id) => !TERMINAL.has(byId.get(id)?.state ?? ''));
  const stuck: string[] = [];
  const lost: string[] = [];
  /** What the server says of each unfinished job's workflow, for the list below. */
  const workflowOf = new Map<string, string>();
  for (const id of unfinished) {
    const workflowId = byId.get(id)?.workflow_id ?? c.workflowIds.get(id)!;
    const status = await client.temporal.workflow
      .getHandle(workflowId)
      .describe()
      .then((d) => d.status.name)
      .catch((err: unknown) => `not described: ${(err as Error).message}`);
    workflowOf.set(id, `workflow ${workflowId} ${status}`);
    (status === 'RUNNING' ? stuck : lost).push(id);
  }
  const leakedRows = await sql<{ n: number }>`SELECT count(DISTINCT job_id)::int AS n FROM allocations a JOIN jobs j ON j.id = a.job_id
    WHERE j.state IN ('completed', 'cancelled', 'failed', 'rejected')`.execute(r.db);
  const deadHolders = await allocationsWithoutLiveWorkflow(r.db, client.temporal);
  const violations = await checkInvariants(r.db);
  const leaked = leakedRows.rows[0].n + deadHolders.length;
  const latency = c.submitted
    .map((id) => ({ id, placed: byId.get(id)?.placed_at?.getTime(), submit: c.submitMs.get(id)! }))
    .filter((x) => x.placed !== undefined)
    .map((x) => ({ at: x.submit, ms: x.placed! - x.submit }));
  const fifth = (first: boolean) =>
    latency.filter((x) => (first ? x.at < t0 + (SECONDS * 1000) / 5 : x.at >= end - (SECONDS * 1000) / 5)).map((x) => x.ms);

  const line = (k: string, v: string | number) => console.log(`${k.padEnd(60)}${String(v).padStart(14)}`);
  console.log(
    `\nchaos: region ${REGION}, ${nodes.length} openb nodes (${gpus} GPUs), ${WORKERS} worker processes, ${RATE} jobs/s for ${SECONDS} s`,
  );
  line('jobs submitted', c.submitted.length);
  line('  submits given up (server unreachable for 2 min)', c.submitFailures);
  line('completed exactly once', completedOnce);
  line('cancelled', count('cancelled'));
  line('failed (incl. terminated, released by the reconciler)', count('failed'));
  line('rejected', count('rejected'));
  line('run twice (two succeeded runs)', runTwice.length);
  line('completed without a succeeded run', completedWithoutRun.length);
  line('lost (unfinished, no live workflow)', lost.length);
  line('stuck (unfinished, workflow still running)', stuck.length);
  line('leaked allocations (jobs)', leaked);
  line('invariant violations', violations.length);
  line('time to converge after the last arrival (s)', converged ? fmt((converged - arrivalsDone) / 1000, 1) : `> ${CONVERGE_S}`);
  line('worker processes SIGKILLed', c.workerKills);
  line('Temporal server SIGKILLed and restarted', c.serverRestarts);
  line('PostgreSQL restarted', c.pgRestarts);
  line('job workflows terminated from the CLI', c.terminated.length);
  line('malformed messages sent (refused at once)', `${c.malformedSent} (${c.malformedRefused})`);
  line('operator actions (cancel/requeue/setPriority/drain)', Object.values(c.operator).join('/'));
  const all = quantiles(latency.map((x) => x.ms));
  line('submit→placed p50 / p99 (s)', `${fmt(all.p50 / 1000, 1)} / ${fmt(all.p99 / 1000, 1)}`);
  for (const id of [...lost, ...stuck, ...runTwice].slice(0, 10))
    console.log(
      `  ${lost.includes(id) ? 'lost' : stuck.includes(id) ? 'stuck' : 'run twice'}: ${id} (${byId.get(id)?.state ?? 'no row'}` +
        `${workflowOf.has(id) ? `; ${workflowOf.get(id)}` : ''})`,
    );
  for (const v of violations.slice(0, 10)) console.log(`  violation ${v.rule}: ${v.detail}`);
  for (const d of deadHolders.slice(0, 10)) console.log(`  allocation of ${d.jobId}: workflow ${d.status}`);

  const targets: string[] = [];
  let soakMet = true;
  if (soak) {
    const early = memory.filter((m) => m.at < t0 + (SECONDS * 1000) / 5).map((m) => m.mib);
    const late = memory.filter((m) => m.at >= end - (SECONDS * 1000) / 5).map((m) => m.mib);
    const mem = [quantiles(early).p50, quantiles(late).p50];
    const lat = [quantiles(fifth(true)).p50, quantiles(fifth(false)).p50];
    line('worker RSS first / last fifth (MiB)', `${fmt(mem[0])} / ${fmt(mem[1])}`);
    line('submit→placed p50 first / last fifth (s)', `${fmt(lat[0] / 1000, 2)} / ${fmt(lat[1] / 1000, 2)}`);
    const memOk = mem[1] <= mem[0] * 1.5;
    const latOk = lat[1] <= Math.max(lat[0] * 1.5, lat[0] + 1000);
    soakMet = memOk && latOk;
    targets.push(`worker memory ${fmt(mem[0])}→${fmt(mem[1])} MiB (≤ 1.5×: ${memOk ? 'MET' : 'MISSED'})`);
    targets.push(`submit→placed p50 ${fmt(lat[0])}→${fmt(lat[1])} ms (≤ 1.5× or +1 s: ${latOk ? 'MET' : 'MISSED'})`);
  } else {
    targets.push(`worker kills ${c.workerKills} (≥ ${KILLS}: ${c.workerKills >= KILLS ? 'MET' : 'MISSED'})`);
  }
  const zero = (n: number) => (n === 0 ? 'MET' : 'MISSED');
  const clean = lost.length + runTwice.length + completedWithoutRun.length + leaked + stuck.length + violations.length;
  console.log(
    `summary: ${c.submitted.length} jobs; lost ${lost.length} (0: ${zero(lost.length)}); run twice ${runTwice.length} (0: ${zero(runTwice.length)}); ` +
      `leaked ${leaked} (0: ${zero(leaked)}); stuck ${stuck.length} (0: ${zero(stuck.length)}); violations ${violations.length} (0: ${zero(violations.length)}); ` +
      `${targets.join('; ')}; converged ${converged ? `in ${fmt((converged - arrivalsDone) / 1000, 1)} s` : `not within ${CONVERGE_S} s`}`,
  );
  if (clean > 0 || !soakMet || !converged) process.exitCode = 1;
});
