// `npm run bench:autoscale`: a bursty trace (quiet → burst → quiet) of openb GPU shapes, in scaled
// time, through the whole scheduler three times: on a small owned fleet plus the simulated cloud
// with the autoscaler on, on a static fleet sized for the peak, and on one sized for the mean.
// Reports submit→placed p50/p99, device-hours provisioned, idle device-hours and cost (hours are
// scaled: one bench second stands for AUTOSCALE_TIME_SCALE real seconds), and how soon idle cloud
// nodes went back after the burst. Targets: p99 within 1.5× the peak-sized fleet's plus the
// provisioning time (request → node in the inventory, p99 measured in the run) at ≤ 60% of its
// device-hours; every cloud node released within the idle limit plus one decision period (as
// measured: the period plus the decision's own work) of becoming idle.
// Settings: AUTOSCALE_QUIET_S (20), AUTOSCALE_BURST_S (30), AUTOSCALE_TAIL_S (60), AUTOSCALE_QUIET_RATE
// (jobs/s, 0.6), AUTOSCALE_BURST_RATE (5), AUTOSCALE_MEAN_RUN_S (8), AUTOSCALE_PROVISION_MS (4000),
// AUTOSCALE_PERIOD_MS (500), AUTOSCALE_IDLE_MS (8000), AUTOSCALE_TIME_SCALE (60), AUTOSCALE_SEED (11).
import fs from 'node:fs';
import path from 'node:path';
import { sql, type Kysely } from 'kysely';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { SchedulerClient } from '../api/client';
import type { JobSpec, ResourceRequest } from '../api/types';
import { autoscalerStatusQuery, autoscalerWorkflowId, type Offering, type SimulatedProviderConfig } from '../api/autoscaler';
import type { Database } from '../db/schema';
import { createRegionWorker } from '../worker/worker';
import { OPENB_DIR, readOpenbTasks } from '../scripts/openb';
import { envNumber } from './env';
import { randomRequest, requestDevices, seeded } from './fleet';
import { freshBenchDatabase, runBench, say, seedTenants, sleep, type Cleanup } from './harness';
import { benchBundle, benchServer } from './temporal';
import { fmt, quantiles } from './stats';

const QUIET_S = envNumber('AUTOSCALE_QUIET_S', 20, { above: 0 });
const BURST_S = envNumber('AUTOSCALE_BURST_S', 30, { above: 0 });
const TAIL_S = envNumber('AUTOSCALE_TAIL_S', 60, { above: 0 });
const QUIET_RATE = envNumber('AUTOSCALE_QUIET_RATE', 0.6, { above: 0 });
const BURST_RATE = envNumber('AUTOSCALE_BURST_RATE', 5, { above: 0 });
const MEAN_RUN_S = envNumber('AUTOSCALE_MEAN_RUN_S', 8, { above: 0 });
const PROVISION_MS = envNumber('AUTOSCALE_PROVISION_MS', 4000, { integer: true, min: 0 });
const PERIOD_MS = envNumber('AUTOSCALE_PERIOD_MS', 500, { integer: true, min: 100 });
const IDLE_MS = envNumber('AUTOSCALE_IDLE_MS', 8000, { integer: true, min: 0 });
const TIME_SCALE = envNumber('AUTOSCALE_TIME_SCALE', 60, { above: 0 });
const SEED = envNumber('AUTOSCALE_SEED', 11, { integer: true, min: 0 });

const NAMESPACE = 'sched-bench'; // the namespace benchServer starts
const TYPE = 'GPU';
const DEVICES_PER_NODE = 8;
const PRICE = 3;
const SAMPLE_MS = 500;
const TENANT = 'bench/load';

interface Arrival {
  atMs: number;
  request: ResourceRequest;
  durationMs: number;
}

/** The trace: Poisson arrivals, quiet → burst → quiet, openb GPU shapes (or an openb-like mix without the trace), exponential run times. */
function trace(): Arrival[] {
  const rng = seeded(SEED);
  const file = path.join(OPENB_DIR, 'openb_pod_list_default.csv');
  const shapes: ResourceRequest[] = fs.existsSync(file)
    ? readOpenbTasks(file, [TYPE]).map((t) => ({
        acceleratorTypes: [TYPE],
        workers: 1,
        devicesPerWorker: Math.min(t.request.devicesPerWorker, DEVICES_PER_NODE),
        ...(t.request.devicesPerWorker === 0 ? { milliPerWorker: t.request.milliPerWorker } : {}),
        topology: 'any' as const,
      }))
    : Array.from({ length: 1000 }, () => ({ ...randomRequest(rng), acceleratorTypes: [TYPE] }));
  if (!fs.existsSync(file)) say(`no openb trace at ${OPENB_DIR}: an openb-like synthetic mix instead`);
  const out: Arrival[] = [];
  const phases: Array<[number, number]> = [
    [QUIET_S, QUIET_RATE],
    [BURST_S, BURST_RATE],
    [TAIL_S, QUIET_RATE],
  ];
  let start = 0;
  for (const [seconds, rate] of phases) {
    for (let t = start - Math.log(1 - rng()) / rate; t < start + seconds; t -= Math.log(1 - rng()) / rate)
      out.push({
        atMs: Math.round(t * 1000),
        request: shapes[Math.floor(rng() * shapes.length)],
        durationMs: Math.round(Math.min(6 * MEAN_RUN_S, Math.max(1, -Math.log(1 - rng()) * MEAN_RUN_S)) * 1000),
      });
    start += seconds;
  }
  return out;
}

/** Devices the trace holds over time if every job started on arrival: the peak and the mean. */
function demandCurve(arrivals: Arrival[]): { peak: number; mean: number; quietMean: number } {
  const events = arrivals.flatMap((a) => [
    [a.atMs, requestDevices(a.request)] as const,
    [a.atMs + a.durationMs, -requestDevices(a.request)] as const,
  ]);
  events.sort((x, y) => x[0] - y[0]);
  let now = 0;
  let held = 0;
  let peak = 0;
  let area = 0;
  let quietArea = 0;
  for (const [t, d] of events) {
    area += held * (t - now);
    if (t <= QUIET_S * 1000) quietArea += held * (t - now);
    now = t;
    held += d;
    peak = Math.max(peak, held);
  }
  const total = (QUIET_S + BURST_S + TAIL_S) * 1000;
  return { peak, mean: area / total, quietMean: quietArea / (QUIET_S * 1000) };
}

interface Sample {
  atMs: number;
  devices: number;
  free: number;
  cloudDevices: number;
  cloudFree: number;
}

interface Outcome {
  name: string;
  nodes: string;
  waits: number[];
  deviceSeconds: number;
  idleDeviceSeconds: number;
  cloudDeviceSeconds: number;
  cost: number;
  unfinished: number;
  provisionMs: number[];
  /** Per released cloud node: ms from the moment it became idle to its release. */
  idleToRelease: number[];
  cloudLeftAtEnd: number;
  requests: number;
  /** The time between two decisions, as measured (the period plus the decision's own work). */
  decisionEveryMs: number;
}

const hours = (deviceMs: number): number => (deviceMs / 1000) * (TIME_SCALE / 3600);

async function scenario(
  cleanup: Cleanup,
  bundlePath: string,
  server: { address: string },
  arrivals: Arrival[],
  o: { name: string; ownedNodes: number; autoscale: boolean },
): Promise<Outcome> {
  const region = `as-${o.name}`;
  const taskQueue = `jobs-${region}`;
  const { db } = await freshBenchDatabase(cleanup, `sched_bench_autoscale_${o.name}`, 10);
  await seedFleet(db, o.ownedNodes);
  await seedTenants(db, [TENANT]);
  const offering: Offering = {
    name: 'gpu8',
    provider: 'cloud',
    acceleratorType: TYPE,
    devicesPerNode: DEVICES_PER_NODE,
    nodesPerRack: 8,
    region,
    pricePerDeviceHour: PRICE,
    spot: false,
    provisioningMs: PROVISION_MS,
    quota: 40,
  };
  const cloud: SimulatedProviderConfig = {
    name: 'cloud',
    kind: 'simulated',
    seed: SEED,
    offerings: [offering],
    failureRate: 0,
    partialRate: 0,
    spotReclaimRate: 0,
    spotLifetimeMs: 3_600_000,
    spotNoticeMs: 30_000,
    apiLatencyMs: 0,
  };
  const workerConnection = await NativeConnection.connect({ address: server.address });
  cleanup.add(`close ${o.name}'s worker connection`, () => workerConnection.close());
  const connection = await Connection.connect({ address: server.address });
  cleanup.add(`close ${o.name}'s client connection`, () => connection.close());
  const worker = await createRegionWorker({
    connection: workerConnection,
    namespace: NAMESPACE,
    taskQueue,
    db,
    region,
    workflowBundlePath: bundlePath,
    client: new Client({ connection, namespace: NAMESPACE }),
    autoscale: {
      providers: [cloud],
      enabled: o.autoscale,
      limits: { periodMs: PERIOD_MS, cooldownMs: 0, idleLimitMs: IDLE_MS, budgetPerHour: 10_000, maxNodesPerDecision: 40 },
    },
  });
  const running = worker.run();
  cleanup.add(`shut ${o.name}'s worker down`, async () => {
    if (worker.getState() === 'RUNNING') worker.shutdown();
    await running;
  });
  const client = new SchedulerClient({ connection, namespace: NAMESPACE, taskQueue, region });

  const samples: Sample[] = [];
  const idleSince = new Map<string, number>();
  const t0 = Date.now();
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const rows = await db
        .selectFrom('nodes')
        .select(['name', 'provider', 'device_count', 'free_milli', 'idle_since'])
        .where('state', '=', 'ready')
        .execute();
      const s: Sample = { atMs: Date.now() - t0, devices: 0, free: 0, cloudDevices: 0, cloudFree: 0 };
      for (const n of rows) {
        const free = n.free_milli.reduce((a, b) => a + b, 0) / 1000;
        s.devices += n.device_count;
        s.free += free;
        if (n.provider !== 'owned') {
          s.cloudDevices += n.device_count;
          s.cloudFree += free;
          // When it last became idle, to the millisecond (kept by the database as its last allocation goes).
          if (n.idle_since) idleSince.set(n.name, n.idle_since.getTime());
        }
      }
      samples.push(s);
      await sleep(SAMPLE_MS);
    }
  })();

  const submits: Array<Promise<unknown>> = [];
  for (const [i, a] of arrivals.entries()) {
    const wait = t0 + a.atMs - Date.now();
    if (wait > 0) await sleep(wait);
    const spec: JobSpec = {
      jobId: `${o.name}-${i}`,
      tenant: TENANT,
      tier: 'standard',
      priority: 0,
      request: a.request,
      durationMs: a.durationMs,
      handoff: { enabled: false },
    };
    submits.push(client.submit(spec).catch((err: unknown) => say(`${o.name}: submit ${spec.jobId} failed: ${String(err)}`)));
  }
  await Promise.all(submits);
  say(`${o.name}: all ${arrivals.length} jobs submitted; waiting for them to finish`);
  const deadline = Date.now() + 120_000;
  let left = arrivals.length;
  while (Date.now() < deadline) {
    const r = await sql<{
      n: number;
    }>`SELECT count(*)::int AS n FROM jobs WHERE state NOT IN ('completed', 'failed', 'cancelled', 'rejected')`.execute(db);
    left = r.rows[0].n;
    if (left === 0) break;
    await sleep(1000);
  }
  if (o.autoscale) {
    // Until the cloud nodes have gone back (or the idle limit and two periods have passed twice over).
    const until = Date.now() + 2 * (IDLE_MS + 2 * PERIOD_MS) + 2000;
    while (Date.now() < until) {
      const n = await db.selectFrom('nodes').select('id').where('provider', '<>', 'owned').execute();
      if (!n.length) break;
      await sleep(500);
    }
  }
  sampling = false;
  await sampler;
  const endMs = Date.now() - t0;

  const jobs = await db.selectFrom('jobs').select(['created_at', 'placed_at', 'state']).execute();
  const waits = jobs
    .filter((j) => j.placed_at || j.state === 'completed')
    .map((j) => (j.placed_at ?? j.created_at).getTime() - j.created_at.getTime());
  let deviceMs = 0;
  let idleMs = 0;
  let cloudMs = 0;
  for (let i = 1; i < samples.length; i++) {
    const dt = samples[i].atMs - samples[i - 1].atMs;
    deviceMs += samples[i - 1].devices * dt;
    idleMs += samples[i - 1].free * dt;
    cloudMs += samples[i - 1].cloudDevices * dt;
  }
  const requests = await db.selectFrom('provision_requests').selectAll().execute();
  const events = await db.selectFrom('provider_events').select(['request_id', 'handled_at']).where('kind', '=', 'node-ready').execute();
  const requestedAt = new Map(requests.map((r) => [r.request_id, r.requested_at.getTime()]));
  const provisionMs = events.flatMap((e) =>
    e.handled_at && e.request_id ? [e.handled_at.getTime() - requestedAt.get(e.request_id)!] : [],
  );
  const released = await db.selectFrom('provider_nodes').select(['name', 'ended_at']).where('state', '=', 'released').execute();
  const idleToRelease = released.flatMap((n) => {
    const since = idleSince.get(n.name);
    return since !== undefined && n.ended_at ? [n.ended_at.getTime() - since] : [];
  });
  const decisions = o.autoscale
    ? (await client.temporal.workflow.getHandle(autoscalerWorkflowId(region)).query(autoscalerStatusQuery)).decisions
    : 0;
  const cloudLeft = await db.selectFrom('nodes').select('id').where('provider', '<>', 'owned').execute();
  const extraNodes = o.autoscale ? 0 : Math.max(0, o.ownedNodes - OWNED_NODES);
  return {
    name: o.name,
    nodes: o.autoscale ? `${o.ownedNodes} + cloud` : String(o.ownedNodes),
    waits,
    deviceSeconds: deviceMs,
    idleDeviceSeconds: idleMs,
    cloudDeviceSeconds: cloudMs,
    // Static fleets: what is beyond the small owned fleet, as if rented on demand for the whole run.
    cost: o.autoscale ? hours(cloudMs) * PRICE : hours(extraNodes * DEVICES_PER_NODE * endMs) * PRICE,
    unfinished: left,
    provisionMs,
    idleToRelease,
    cloudLeftAtEnd: cloudLeft.length,
    requests: requests.length,
    decisionEveryMs: decisions ? endMs / decisions : NaN,
  };
}

async function seedFleet(db: Kysely<Database>, nodes: number): Promise<void> {
  await db.insertInto('accelerator_types').values({ name: TYPE, family: 'gpu', model: TYPE, memory_mib: 32768 }).execute();
  const c = await db
    .insertInto('clusters')
    .values({ region: 'bench', provider: 'owned', name: 'owned' })
    .returning('id')
    .executeTakeFirstOrThrow();
  await db
    .insertInto('nodes')
    .values(
      Array.from({ length: nodes }, (_, i) => ({
        cluster_id: c.id,
        name: `own-${i}`,
        accelerator_type: TYPE,
        device_count: DEVICES_PER_NODE,
        rack: `r${Math.floor(i / 8)}`,
        pod: 'p0',
        labels: '{}',
      })),
    )
    .execute();
}

let OWNED_NODES = 1;

runBench(async ({ cleanup }) => {
  Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [], telemetryOptions: { logging: { forward: {} } } });
  const arrivals = trace();
  const curve = demandCurve(arrivals);
  const peakNodes = Math.ceil((curve.peak * 1.15) / DEVICES_PER_NODE);
  const meanNodes = Math.max(1, Math.ceil(curve.mean / DEVICES_PER_NODE));
  OWNED_NODES = Math.max(1, Math.ceil((curve.quietMean * 1.5) / DEVICES_PER_NODE));
  say(
    `trace: ${arrivals.length} jobs over ${QUIET_S + BURST_S + TAIL_S} s (burst ${QUIET_S}–${QUIET_S + BURST_S} s); devices held if started at once: peak ${fmt(curve.peak, 1)}, mean ${fmt(curve.mean, 1)}, quiet mean ${fmt(curve.quietMean, 1)}`,
  );
  say(
    `fleets: owned ${OWNED_NODES} node(s) + cloud (autoscaled), peak-sized ${peakNodes}, mean-sized ${meanNodes} (${DEVICES_PER_NODE} devices each)`,
  );
  const server = await benchServer(cleanup);
  const bundlePath = await benchBundle('autoscale', cleanup);
  const results: Outcome[] = [];
  for (const s of [
    { name: 'autoscaled', ownedNodes: OWNED_NODES, autoscale: true },
    { name: 'peak', ownedNodes: peakNodes, autoscale: false },
    { name: 'mean', ownedNodes: meanNodes, autoscale: false },
  ]) {
    say(`running ${s.name} …`);
    results.push(await scenario(cleanup, bundlePath, server, arrivals, s));
  }

  const sec = (ms: number) => fmt(ms / 1000, 2);
  console.log(
    `\nbursty openb trace: ${arrivals.length} jobs, quiet ${QUIET_S} s at ${QUIET_RATE}/s → burst ${BURST_S} s at ${BURST_RATE}/s → quiet ${TAIL_S} s; run ~${MEAN_RUN_S} s each; 1 s stands for ${TIME_SCALE} s`,
  );
  console.log(
    `cloud: ${DEVICES_PER_NODE}×${TYPE} nodes at ${PRICE}/device-hour, provisioning ~${PROVISION_MS} ms; autoscaler every ${PERIOD_MS} ms, idle limit ${IDLE_MS} ms\n`,
  );
  console.log('fleet        nodes        placed  p50 s   p99 s   max s   device-h  idle device-h  cloud device-h  cost    unfinished');
  for (const r of results) {
    const q = quantiles(r.waits);
    console.log(
      [
        r.name.padEnd(12),
        r.nodes.padEnd(12),
        String(q.n).padStart(6),
        sec(q.p50).padStart(6),
        sec(q.p99).padStart(7),
        sec(q.max).padStart(7),
        fmt(hours(r.deviceSeconds), 1).padStart(9),
        fmt(hours(r.idleDeviceSeconds), 1).padStart(14),
        fmt(hours(r.cloudDeviceSeconds), 1).padStart(15),
        fmt(r.cost, 1).padStart(6),
        String(r.unfinished).padStart(11),
      ].join(' '),
    );
  }
  const [auto, peak] = results;
  const prov = quantiles(r0(auto.provisionMs));
  const idle = quantiles(auto.idleToRelease);
  console.log(
    `\nautoscaled: ${auto.requests} request(s), ${auto.provisionMs.length} node(s); request → node in the inventory p50 ${sec(prov.p50)} s, p99 ${sec(prov.p99)} s; idle → released p50 ${sec(idle.p50)} s, max ${sec(idle.max)} s; a decision every ${sec(auto.decisionEveryMs)} s (period ${sec(PERIOD_MS)} s + its work); cloud nodes left at the end ${auto.cloudLeftAtEnd}`,
  );
  const autoP99 = quantiles(auto.waits).p99;
  const peakP99 = quantiles(peak.waits).p99;
  const latencyBound = 1.5 * peakP99 + prov.p99;
  const dhRatio = auto.deviceSeconds / peak.deviceSeconds;
  const idleBound = IDLE_MS + (Number.isFinite(auto.decisionEveryMs) ? auto.decisionEveryMs : PERIOD_MS);
  const ok = (b: boolean) => (b ? 'MET' : 'MISSED');
  const latencyOk = autoP99 <= latencyBound && auto.unfinished === 0;
  const dhOk = dhRatio <= 0.6;
  const idleOk = auto.cloudLeftAtEnd === 0 && (idle.n === 0 || idle.max <= idleBound);
  console.log(
    `summary: p99 submit→placed ${sec(autoP99)} s ≤ 1.5 × peak-sized ${sec(peakP99)} s + provisioning p99 ${sec(prov.p99)} s = ${sec(latencyBound)} s ${ok(latencyOk)}; device-hours ${fmt(dhRatio * 100, 0)}% of peak-sized ≤ 60% ${ok(dhOk)}; idle cloud nodes released within ${sec(idle.max)} s ≤ idle limit + one decision period ${sec(idleBound)} s, ${auto.cloudLeftAtEnd} left ${ok(idleOk)}`,
  );
  if (!(latencyOk && dhOk && idleOk)) process.exitCode = 1;
});

const r0 = (xs: number[]): number[] => xs.filter((x) => Number.isFinite(x));
