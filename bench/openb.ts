// `npm run bench:openb`: replays the openb GPU traces (arrival order, no departures) onto the
// openb fleet through the real PostgreSQL allocator, once per placement policy, and reports the
// share of GPU capacity allocated when the first GPU task fails to fit and once all tasks have
// arrived, plus the share left fragmented. Tasks the allocator refuses outright (no node of
// their types could ever hold them) are counted as "never fit" and do not end the first-fit
// phase. The trace is cycled until arrived GPU demand reaches 130% of capacity (the traces
// alone ask for ~98% of it), as the ATC '23 evaluation resamples.
// Settings: OPENB_TRACES, OPENB_POLICIES (comma-separated), OPENB_TARGET (arrived demand over
// capacity), OPENB_CANDIDATES (the allocator's candidate limit).
import fs from 'node:fs';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { Allocator } from '../activities/allocator';
import { ErrorTypes } from '../api/errors';
import { fragmentation, RecentMix } from '../scheduling/placement';
import { PLACEMENT_POLICIES, type AllocateResult, type PlacementPolicyName } from '../api/types';
import { openDatabase } from '../db/connection';
import { OPENB_DIR, readOpenbNodes, readOpenbTasks, seedOpenbFleet, type OpenbTask } from '../scripts/openb';
import { envChoices, envNumber } from './env';
import { BENCH_REGION, clearFleet, registerJobs } from './fleet';
import { freshBenchDatabase, runBench, say } from './harness';
import { writeLinePlot, type Series } from './plot';

/** The traces in OPENB_DIR, named as in openb_pod_list_<name>.csv. */
const TRACE_FILE = /^openb_pod_list_(.+)\.csv$/;
const AVAILABLE_TRACES = fs.readdirSync(OPENB_DIR).flatMap((f) => TRACE_FILE.exec(f)?.[1] ?? []);

const POLICIES = envChoices('OPENB_POLICIES', ['fgd', 'best-fit', 'random-fit', 'first-fit'], PLACEMENT_POLICIES);
const COLORS: Record<PlacementPolicyName, [number, number, number]> = {
  fgd: [214, 39, 40],
  'best-fit': [31, 119, 180],
  'random-fit': [44, 160, 44],
  'first-fit': [148, 103, 189],
};
const TRACES = envChoices('OPENB_TRACES', ['default', 'gpuspec33', 'multigpu20', 'gpushare40'], AVAILABLE_TRACES);
const TARGET = envNumber('OPENB_TARGET', 1.3, { above: 0 });
const CANDIDATES = envNumber('OPENB_CANDIDATES', 64, { integer: true, min: 1 });
const OUT = path.join(__dirname, 'out');

interface RunResult {
  trace: string;
  policy: PlacementPolicyName;
  firstFailShare: number;
  finalShare: number;
  fragmentedShare: number;
  placed: number;
  failed: number;
  /** Tasks refused as never fitting any node of their types. */
  neverFit: number;
  series: Array<[number, number]>;
}

function demand(t: OpenbTask): number {
  return t.request.devicesPerWorker > 0 ? t.request.devicesPerWorker : (t.request.milliPerWorker ?? 1000) / 1000;
}

async function replay(url: string, trace: string, policy: PlacementPolicyName, tasks: OpenbTask[], capacity: number): Promise<RunResult> {
  // A pool of its own per replay, so no policy starts with statements another one prepared.
  const db = openDatabase(url, 2);
  await clearFleet(db);
  await seedOpenbFleet(db, { region: BENCH_REGION });
  // Arrival stream: the trace cycled until arrived demand reaches TARGET × capacity.
  const stream: OpenbTask[] = [];
  let arrivedDemand = 0;
  for (let i = 0; arrivedDemand < TARGET * capacity; i++) {
    const t = tasks[i % tasks.length];
    stream.push({ ...t, name: `${t.name}-${Math.floor(i / tasks.length)}` });
    arrivedDemand += demand(t);
  }
  await registerJobs(
    db,
    stream.map((t) => t.name),
  );
  const allocator = new Allocator(db, { policy, candidateLimit: CANDIDATES });
  let allocated = 0;
  let arrived = 0;
  let firstFailShare = -1;
  let placed = 0;
  let failed = 0;
  let neverFit = 0;
  const series: Array<[number, number]> = [[0, 0]];
  for (const t of stream) {
    arrived += demand(t);
    let r: AllocateResult;
    try {
      r = await allocator.allocate({ jobId: t.name, epoch: 1, request: t.request });
    } catch (err) {
      if (!(err instanceof ApplicationFailure && err.type === ErrorTypes.badRequest)) throw err;
      neverFit++;
      continue;
    }
    if (r.placed) {
      placed++;
      allocated += demand(t);
    } else {
      failed++;
      if (firstFailShare < 0) firstFailShare = allocated / capacity;
    }
    if (series.length === 0 || arrived / capacity - series[series.length - 1][0] >= 0.01)
      series.push([arrived / capacity, allocated / capacity]);
  }
  // Fragmented share: free GPU capacity that the trace's own request mix could not use, counting
  // GPUs behind exhausted host CPU or memory as unusable.
  const mix = new RecentMix(tasks.length);
  for (const t of tasks) mix.add(t.request);
  const nodes = await db.selectFrom('nodes').select(['free_milli', 'free_cpu_milli', 'free_memory_mib']).execute();
  const fragmented =
    nodes.reduce(
      (s, n) =>
        s +
        fragmentation(
          { freeMilli: n.free_milli, freeCpuMilli: n.free_cpu_milli ?? undefined, freeMemoryMib: n.free_memory_mib ?? undefined },
          mix.shapes(),
        ),
      0,
    ) / 1000;
  await db.destroy();
  return {
    trace,
    policy,
    firstFailShare,
    finalShare: allocated / capacity,
    fragmentedShare: fragmented / capacity,
    placed,
    failed,
    neverFit,
    series,
  };
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

runBench(async ({ cleanup }) => {
  fs.mkdirSync(OUT, { recursive: true });
  const { url } = await freshBenchDatabase(cleanup, 'sched_bench_openb', 1);
  const capacity = readOpenbNodes().reduce((s, n) => s + n.gpus, 0);
  const results: RunResult[] = [];
  for (const trace of TRACES) {
    const tasks = readOpenbTasks(path.join(OPENB_DIR, `openb_pod_list_${trace}.csv`));
    for (const policy of POLICIES) {
      const started = Date.now();
      const r = await replay(url, trace, policy, tasks, capacity);
      results.push(r);
      say(`  ${trace} ${policy}: final ${pct(r.finalShare)} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    }
    writeLinePlot(
      path.join(OUT, `openb-${trace}.png`),
      results.filter((r) => r.trace === trace).map<Series>((r) => ({ name: r.policy, color: COLORS[r.policy], points: r.series })),
      TARGET,
      1,
    );
  }
  console.log(
    `\nopenb replay: fleet ${capacity} GPUs on ${readOpenbNodes().length} nodes; arrivals to ${TARGET * 100}% of capacity; real allocator on PostgreSQL`,
  );
  console.log('trace       policy      alloc@first-fail  alloc@all-arrived  fragmented  placed  failed  never-fit');
  for (const r of results)
    console.log(
      `${r.trace.padEnd(11)} ${r.policy.padEnd(11)} ${pct(r.firstFailShare).padStart(16)}  ${pct(r.finalShare).padStart(17)}  ${pct(r.fragmentedShare).padStart(10)}  ${String(r.placed).padStart(6)}  ${String(r.failed).padStart(6)}  ${String(r.neverFit).padStart(9)}`,
    );
  console.log(
    `plots: ${TRACES.map((t) => `bench/out/openb-${t}.png`).join(', ')} (swatches top-left, in order: ${POLICIES.map((p) => `${p}=rgb(${COLORS[p].join(',')})`).join(', ')})`,
  );
  const margins = TRACES.map((trace) => {
    const of = (p: PlacementPolicyName) => results.find((r) => r.trace === trace && r.policy === p)?.finalShare ?? NaN;
    return { trace, vsBest: of('fgd') - of('best-fit'), vsRandom: of('fgd') - of('random-fit') };
  });
  const wins = margins.every((m) => m.vsBest > 0 && m.vsRandom > 0);
  console.log(
    `summary: fgd ${wins ? 'beats' : 'does NOT beat'} best-fit and random-fit on every trace; margin at all-arrived (points) vs best-fit ${margins.map((m) => `${m.trace} ${(m.vsBest * 100).toFixed(1)}`).join(', ')}; vs random-fit ${margins.map((m) => `${m.trace} ${(m.vsRandom * 100).toFixed(1)}`).join(', ')}`,
  );
});
