// `npm run bench:allocator`: placements/s and latency of the real PostgreSQL allocator on fleets
// of 1k, 10k and 100k devices, with 1, 4 and 16 concurrent clients, single and batched, while
// releases keep the fleet about 70% full. Also prints the candidate query's plan at 100k.
// Settings: BENCH_FLEETS (devices, comma-separated), BENCH_CLIENTS (comma-separated), BENCH_SECONDS (per cell);
// BENCH_SAVE=<file> writes the run's cells as JSON, BENCH_COMPARE=<file> prints this run beside a
// saved one (e.g. the same bench run on an earlier commit), as ratios to each run's own floor.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { sql, type Kysely } from 'kysely';
import { Pool } from 'pg';
import { Allocator, FGD_SAMPLE_WINDOW } from '../activities/allocator';
import { candidatePagesQuery } from '../activities/allocator/candidates';
import type { ResourceRequest } from '../api/types';
import type { Database } from '../db/schema';
import { envNumber, envNumbers, SettingError } from './env';
import { BENCH_TYPES, randomRequest, registerJobs, requestDevices, seedSyntheticFleet, seeded } from './fleet';
import { freshBenchDatabase, runBench, say } from './harness';
import { quantiles } from './stats';

const FLEETS = envNumbers('BENCH_FLEETS', [1000, 10000, 100000], { integer: true, min: 8 });
const CLIENTS = envNumbers('BENCH_CLIENTS', [1, 4, 16], { integer: true, min: 1 });
const SECONDS = envNumber('BENCH_SECONDS', 4, { above: 0 });
const BATCH = 32;
const FILL = 0.7;
const SAVE = process.env.BENCH_SAVE;
const COMPARE = process.env.BENCH_COMPARE;
if (COMPARE !== undefined && !existsSync(COMPARE)) throw new SettingError(`BENCH_COMPARE: no file ${COMPARE} (write one with BENCH_SAVE)`);
// The targets (issue 16), as ratios to the floor measured in the same run.
const SINGLE_MIN = 0.7;
const P99_MAX = 1.5;
const BATCH_MIN = 2;

interface Cell {
  devices: number;
  clients: number;
  mode: 'single' | 'batch' | 'floor';
  /** For a floor cell: the allocator cell it was measured right after, on the same fleet (the machine's load drifts; ratios use it). */
  beside?: 'single' | 'batch';
  placements: number;
  perSecond: number;
  p50: number;
  p99: number;
  meanMsPerPlacement: number;
}

/** A cell's row from what its clients did in `elapsed` seconds (latencies in ms, one per call). */
function measured(at: Pick<Cell, 'devices' | 'clients' | 'mode'>, placements: number, elapsed: number, latencies: number[]): Cell {
  const { p50, p99 } = quantiles(latencies);
  return {
    ...at,
    placements,
    perSecond: placements / elapsed,
    p50,
    p99,
    meanMsPerPlacement: (elapsed * 1000 * at.clients) / Math.max(1, placements),
  };
}

let jobSeq = 0;

async function runCell(
  allocator: Allocator,
  db: Kysely<Database>,
  devices: number,
  clients: number,
  mode: 'single' | 'batch',
  /** Set: measure the floor right after (the largest fleet). */
  url?: string,
): Promise<Cell[]> {
  let held = 0; // devices held, as all clients see it
  const live: Array<{ id: string; devices: number }> = [];
  const rng = seeded(devices + clients * 7 + (mode === 'batch' ? 1 : 0));
  // Pre-register enough job rows for the cell.
  // Enough job rows for the fill (at most one per device) and the measured phase.
  const ids = Array.from({ length: Math.ceil(devices * FILL) + (mode === 'batch' ? 60000 : 20000) }, () => `j${++jobSeq}`);
  await registerJobs(db, ids);
  let next = 0;
  const take = () => {
    if (next >= ids.length) throw new Error(`bench ran out of registered job ids (${ids.length})`);
    return ids[next++];
  };
  // Fill to ~70% (not measured).
  while (held < FILL * devices) {
    const reqs = Array.from({ length: 64 }, () => randomRequest(rng));
    const items = reqs.map((request) => ({ jobId: take(), epoch: 1, request }));
    const res = await allocator.allocateBatch(items);
    if (!res.some((r) => r.result?.placed))
      throw new Error(
        `fill stalled at ${held} of ${devices} devices: ${res[0].error ?? (res[0].result?.placed === false ? res[0].result.reason : '')}`,
      );
    res.forEach((r, i) => {
      if (r.result?.placed) {
        held += requestDevices(reqs[i]);
        live.push({ id: items[i].jobId, devices: requestDevices(reqs[i]) });
      }
    });
  }
  const latencies: number[] = [];
  let placements = 0;
  const end = Date.now() + SECONDS * 1000;
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (Date.now() < end) {
        if (held > FILL * devices && live.length) {
          const victim = live.splice(Math.floor(rng() * live.length), 1)[0];
          held -= victim.devices;
          await allocator.release(victim.id, 1);
          continue;
        }
        const reqs: ResourceRequest[] = Array.from({ length: mode === 'batch' ? BATCH : 1 }, () => randomRequest(rng));
        const items = reqs.map((request) => ({ jobId: take(), epoch: 1, request }));
        const t0 = process.hrtime.bigint();
        const results =
          mode === 'batch' ? (await allocator.allocateBatch(items)).map((r) => r.result) : [await allocator.allocate(items[0])];
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        results.forEach((r, i) => {
          if (r?.placed) {
            placements++;
            held += requestDevices(reqs[i]);
            live.push({ id: items[i].jobId, devices: requestDevices(reqs[i]) });
          }
        });
      }
    }),
  );
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  const cell = measured({ devices, clients, mode }, placements, elapsed, latencies);
  // The floor with the same clients, at once and on the same ~70% full fleet, so that load the
  // machine's other work puts on it changes little between a cell and the floor it is compared to.
  const floor = url === undefined ? undefined : await floorCell(url, db, devices, clients, mode);
  // Release everything so the next cell starts from the same empty fleet.
  await sql`DELETE FROM allocations`.execute(db);
  await sql`DELETE FROM jobs`.execute(db);
  await sql`VACUUM ANALYZE nodes`.execute(db);
  return floor ? [cell, floor] : [cell];
}

/**
 * The floor under any allocator here: the least a placement and its release can do in PostgreSQL
 * on this machine. A placement locks its job, locks one fitting node (SKIP LOCKED), inserts one
 * whole-device allocation (the capacity trigger and CHECKs run), marks the job placed and
 * commits; the release deletes it in one autocommitted statement. Named prepared statements, no
 * quota, reservations or policy. Placements/s here bound what the full allocator can reach.
 */
async function floorCell(url: string, db: Kysely<Database>, devices: number, clients: number, beside: 'single' | 'batch'): Promise<Cell> {
  const ids = Array.from({ length: clients }, (_, c) => `floor-${beside}${clients}-${c}`);
  await registerJobs(db, ids);
  const pool = new Pool({ connectionString: url, max: clients });
  const latencies: number[] = [];
  let placements = 0;
  const end = Date.now() + SECONDS * 1000;
  const started = process.hrtime.bigint();
  await Promise.all(
    ids.map(async (job, c) => {
      const client = await pool.connect();
      try {
        while (Date.now() < end) {
          const t0 = process.hrtime.bigint();
          await client.query('BEGIN');
          await client.query({ name: 'floor-job', text: 'SELECT epoch FROM jobs WHERE id = $1 FOR UPDATE', values: [job] });
          const node = await client.query<{ id: number; free_milli: number[] }>({
            name: 'floor-node',
            text: `SELECT id, free_milli FROM nodes WHERE accelerator_type = $1 AND state = 'ready' AND free_whole >= 1
                   ORDER BY free_whole, id LIMIT 1 FOR UPDATE SKIP LOCKED`,
            values: [BENCH_TYPES[c % BENCH_TYPES.length]],
          });
          const n = node.rows[0];
          if (!n) throw new Error('floor: no free device');
          await client.query({
            name: 'floor-insert',
            text: 'INSERT INTO allocations (job_id, epoch, node_id, device_idx, milli, worker_idx) VALUES ($1, 1, $2, $3, 1000, 0)',
            values: [job, n.id, n.free_milli.indexOf(1000)],
          });
          await client.query({
            name: 'floor-placed',
            text: "UPDATE jobs SET state = 'placed', updated_at = now() WHERE id = $1",
            values: [job],
          });
          await client.query('COMMIT');
          latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
          placements++;
          await client.query({
            name: 'floor-release',
            text: "WITH d AS (DELETE FROM allocations WHERE job_id = $1 RETURNING 1) UPDATE jobs SET state = 'waiting', updated_at = now() WHERE id = $1",
            values: [job],
          });
        }
      } finally {
        client.release();
      }
    }),
  );
  const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
  await pool.end();
  return { ...measured({ devices, clients, mode: 'floor' }, placements, elapsed, latencies), beside };
}

runBench(async ({ cleanup }) => {
  // Left in place after the run, with the largest fleet in it; the next run drops it first.
  const { url, db } = await freshBenchDatabase(cleanup, 'sched_bench_alloc', 20, { keep: true });
  const cells: Cell[] = [];
  let plan = '';
  for (const devices of FLEETS) {
    await seedSyntheticFleet(db, devices);
    const allocator = new Allocator(db, { policy: 'best-fit' });
    const largest = devices === Math.max(...FLEETS);
    for (const mode of ['single', 'batch'] as const)
      for (const clients of CLIENTS)
        for (const c of await runCell(allocator, db, devices, clients, mode, largest ? url : undefined)) {
          cells.push(c);
          say(
            `  ${devices} devices, ${clients} clients, ${c.mode}${c.beside ? ` (after ${c.beside})` : ''}: ${c.perSecond.toFixed(0)} placements/s`,
          );
        }
    if (largest) {
      // The allocator's own candidate statement (as it runs inside the statement that locks the
      // jobs): a best-fit page for 2-device workers and the default policy's (FGD's) page, a
      // random sample of the first FGD_SAMPLE_WINDOW fitting nodes in fit-index order.
      const request: ResourceRequest = { acceleratorTypes: ['A100'], workers: 1, devicesPerWorker: 2, topology: 'any' };
      const explained = await db.transaction().execute((trx) =>
        sql<{ 'QUERY PLAN': string }>`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${candidatePagesQuery([
          { type: 'A100', request, policy: 'best-fit', candidateLimit: 32 },
          { type: 'A100', request, policy: 'fgd', candidateLimit: 32 },
        ])}`.execute(trx),
      );
      plan = explained.rows.map((r) => r['QUERY PLAN']).join('\n');
    }
  }
  console.log('\nallocator: real PostgreSQL, best-fit, fleet kept ~70% full by releases; batch = 32 requests per transaction');
  console.log(
    "floor: the least a placement and its release do in PostgreSQL here (lock job, lock one node, insert one allocation, mark placed, commit; release in one statement; prepared); floor/<mode>: measured right after that mode's cell, on the same fleet",
  );
  console.log('devices  clients  mode          placements  placements/s  p50 ms  p99 ms  (p50/p99 per call: one request, or one batch)');
  for (const c of cells)
    console.log(
      `${String(c.devices).padStart(7)}  ${String(c.clients).padStart(7)}  ${(c.beside ? `floor/${c.beside}` : c.mode).padEnd(12)}  ${String(c.placements).padStart(10)}  ${c.perSecond.toFixed(0).padStart(12)}  ${c.p50.toFixed(2).padStart(6)}  ${c.p99.toFixed(2).padStart(6)}`,
    );
  console.log(
    `\ncandidate read at ${Math.max(...FLEETS)} devices (the allocator's statement: a best-fit page and an fgd page, a random sample of the first ${FGD_SAMPLE_WINDOW} fitting nodes):\n${plan}`,
  );
  const big = Math.max(...FLEETS);
  const small = Math.min(...FLEETS);
  const oneClient = (d: number) => cells.find((x) => x.devices === d && x.clients === 1 && x.mode === 'single')?.meanMsPerPlacement ?? NaN;
  if (big !== small)
    console.log(
      `\nper-placement cost ratio ${big}:${small} devices (1 client, single) = ${(oneClient(big) / oneClient(small)).toFixed(2)}`,
    );
  const at = (list: Cell[], c: number, m: Cell['mode'], beside?: Cell['beside']) =>
    list.find(
      (x) =>
        x.devices === big && x.clients === c && x.mode === m && (beside === undefined || x.beside === undefined || x.beside === beside),
    );
  const clientsMeasured = CLIENTS.filter((c) => at(cells, c, 'floor'));
  /** Per client count: single and batched placements/s and single p99, each as a ratio to the floor measured beside it. */
  const ratios = (list: Cell[]) =>
    clientsMeasured.map((c) => {
      const floorS = at(list, c, 'floor', 'single');
      const floorB = at(list, c, 'floor', 'batch');
      return {
        clients: c,
        single: (at(list, c, 'single')?.perSecond ?? NaN) / (floorS?.perSecond ?? NaN),
        batch: (at(list, c, 'batch')?.perSecond ?? NaN) / (floorB?.perSecond ?? NaN),
        p99: (at(list, c, 'single')?.p99 ?? NaN) / (floorS?.p99 ?? NaN),
      };
    });
  const now = ratios(cells);
  const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
  console.log(
    `\nratios to the floor at ${big} devices, same clients (targets: single >= ${SINGLE_MIN}, batched >= ${BATCH_MIN}, single p99 <= ${P99_MAX}x)`,
  );
  const before = COMPARE ? ratios((JSON.parse(readFileSync(COMPARE, 'utf8')) as { cells: Cell[] }).cells) : undefined;
  console.log(`clients  single  batched  p99${before ? `   | ${COMPARE}: single  batched  p99` : ''}`);
  for (const r of now) {
    const b = before?.find((x) => x.clients === r.clients);
    console.log(
      `${String(r.clients).padStart(7)}  ${f2(r.single).padStart(6)}  ${f2(r.batch).padStart(7)}  ${f2(r.p99).padStart(4)}${before ? `   | ${' '.repeat(Math.max(0, COMPARE!.length - 7))}${f2(b?.single ?? NaN).padStart(7)}  ${f2(b?.batch ?? NaN).padStart(7)}  ${f2(b?.p99 ?? NaN).padStart(4)}` : ''}`,
    );
  }
  if (SAVE) {
    writeFileSync(SAVE, JSON.stringify({ at: new Date().toISOString(), seconds: SECONDS, cells }, null, 2));
    say(`cells written to ${SAVE}`);
  }
  const verdict = (ok: boolean) => (ok ? 'MET' : 'MISSED');
  const list = (key: 'single' | 'batch' | 'p99') => now.map((r) => `${r.clients}c ${f2(r[key])}`).join(', ');
  const single = now.length > 0 && now.every((r) => r.single >= SINGLE_MIN);
  const batched = now.length > 0 && now.every((r) => r.batch >= BATCH_MIN);
  const p99at4 = now.find((r) => r.clients === 4);
  const bounded = plan !== '' && !/Seq Scan on nodes/.test(plan);
  console.log(
    `summary: at ${big} devices (ratios to the floor, same clients) single placements/s >= ${SINGLE_MIN}x: ${list('single')} ${verdict(single)}; ` +
      `p99 with 4 clients <= ${P99_MAX}x: ${p99at4 ? `${f2(p99at4.p99)} ${verdict(p99at4.p99 <= P99_MAX)}` : 'not measured (BENCH_CLIENTS has no 4) MISSED'}; ` +
      `batched >= ${BATCH_MIN}x: ${list('batch')} ${verdict(batched)}; candidate reads index-bounded (no sequential scan of nodes): ${verdict(bounded)}`,
  );
});
