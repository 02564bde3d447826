// `npm run bench:allocator`: placements/s and latency of the real PostgreSQL allocator on fleets
// of 1k, 10k and 100k devices, with 1, 4 and 16 concurrent clients, single and batched, while
// releases keep the fleet about 70% full. Also prints the candidate query's plan at 100k.
// Settings: BENCH_FLEETS (devices, comma-separated), BENCH_CLIENTS (comma-separated), BENCH_SECONDS (per cell).
import { sql, type Kysely } from 'kysely';
import { Pool } from 'pg';
import { Allocator, FGD_SAMPLE_WINDOW } from '../activities/allocator';
import type { ResourceRequest } from '../api/types';
import type { Database } from '../db/schema';
import { envNumber, envNumbers } from './env';
import { BENCH_TYPES, randomRequest, registerJobs, requestDevices, seedSyntheticFleet, seeded } from './fleet';
import { freshBenchDatabase, runBench, say } from './harness';
import { quantiles } from './stats';

const FLEETS = envNumbers('BENCH_FLEETS', [1000, 10000, 100000], { integer: true, min: 8 });
const CLIENTS = envNumbers('BENCH_CLIENTS', [1, 4, 16], { integer: true, min: 1 });
const SECONDS = envNumber('BENCH_SECONDS', 4, { above: 0 });
const BATCH = 32;
const FILL = 0.7;

interface Cell {
  devices: number;
  clients: number;
  mode: 'single' | 'batch' | 'floor';
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
): Promise<Cell> {
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
  // Release everything so the next cell starts from the same empty fleet.
  await sql`DELETE FROM allocations`.execute(db);
  await sql`DELETE FROM jobs`.execute(db);
  await sql`VACUUM ANALYZE nodes`.execute(db);
  return measured({ devices, clients, mode }, placements, elapsed, latencies);
}

/**
 * The floor under any allocator here: the least a placement and its release can do in PostgreSQL
 * on this machine. A placement locks its job, locks one fitting node (SKIP LOCKED), inserts one
 * whole-device allocation (the capacity trigger and CHECKs run), marks the job placed and
 * commits; the release deletes it in one autocommitted statement. Named prepared statements, no
 * quota, reservations or policy. Placements/s here bound what the full allocator can reach.
 */
async function floorCell(url: string, db: Kysely<Database>, devices: number, clients: number): Promise<Cell> {
  const ids = Array.from({ length: clients }, (_, c) => `floor${clients}-${c}`);
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
  return measured({ devices, clients, mode: 'floor' }, placements, elapsed, latencies);
}

runBench(async ({ cleanup }) => {
  // Left in place after the run, with the largest fleet in it; the next run drops it first.
  const { url, db } = await freshBenchDatabase(cleanup, 'sched_bench_alloc', 20, { keep: true });
  const cells: Cell[] = [];
  let plan = '';
  let fgdPlan = '';
  for (const devices of FLEETS) {
    await seedSyntheticFleet(db, devices);
    const allocator = new Allocator(db, { policy: 'best-fit' });
    for (const mode of ['single', 'batch'] as const)
      for (const clients of CLIENTS) {
        const c = await runCell(allocator, db, devices, clients, mode);
        cells.push(c);
        say(`  ${devices} devices, ${clients} clients, ${mode}: ${c.perSecond.toFixed(0)} placements/s`);
      }
    if (devices === Math.max(...FLEETS)) {
      for (const clients of CLIENTS) {
        const c = await floorCell(url, db, devices, clients);
        cells.push(c);
        say(`  ${devices} devices, ${clients} clients, floor: ${c.perSecond.toFixed(0)} placements/s`);
      }
      const rows = await sql<{ 'QUERY PLAN': string }>`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
        SELECT id, free_milli FROM nodes WHERE accelerator_type = 'A100' AND state = 'ready' AND free_whole >= 2
        ORDER BY free_whole, id LIMIT 32 FOR UPDATE SKIP LOCKED`.execute(db);
      plan = rows.rows.map((r) => r['QUERY PLAN']).join('\n');
      // The default policy's (FGD's) read: a random sample of the first FGD_SAMPLE_WINDOW fitting
      // nodes in fit-index order, so it too reads a bounded number of rows.
      const fgdRows = await sql<{ 'QUERY PLAN': string }>`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
        SELECT id, free_milli FROM nodes WHERE accelerator_type = 'A100' AND state = 'ready' AND free_whole >= 2
          AND id IN (SELECT w.id FROM (SELECT id FROM nodes WHERE accelerator_type = 'A100' AND state = 'ready' AND free_whole >= 2
            ORDER BY free_whole, id LIMIT ${sql.lit(FGD_SAMPLE_WINDOW)}) w ORDER BY random() LIMIT 32)
        FOR UPDATE SKIP LOCKED`.execute(db);
      fgdPlan = fgdRows.rows.map((r) => r['QUERY PLAN']).join('\n');
    }
  }
  console.log('\nallocator: real PostgreSQL, best-fit, fleet kept ~70% full by releases; batch = 32 requests per transaction');
  console.log(
    'floor: the least a placement and its release do in PostgreSQL here (lock job, lock one node, insert one allocation, mark placed, commit; release in one statement; prepared)',
  );
  console.log('devices  clients  mode    placements  placements/s  p50 ms  p99 ms  (p50/p99 per call: one request, or one batch)');
  for (const c of cells)
    console.log(
      `${String(c.devices).padStart(7)}  ${String(c.clients).padStart(7)}  ${c.mode.padEnd(6)}  ${String(c.placements).padStart(10)}  ${c.perSecond.toFixed(0).padStart(12)}  ${c.p50.toFixed(2).padStart(6)}  ${c.p99.toFixed(2).padStart(6)}`,
    );
  console.log(`\ncandidate query plan at ${Math.max(...FLEETS)} devices (best-fit):\n${plan}`);
  console.log(
    `\ncandidate query plan at ${Math.max(...FLEETS)} devices (fgd, the default: a random ${FGD_SAMPLE_WINDOW}-node window sample):\n${fgdPlan}`,
  );
  const cell = (d: number, c: number, m: Cell['mode']) => cells.find((x) => x.devices === d && x.clients === c && x.mode === m);
  const big = Math.max(...FLEETS);
  const small = Math.min(...FLEETS);
  const ratio = (cell(big, 1, 'single')?.meanMsPerPlacement ?? NaN) / (cell(small, 1, 'single')?.meanMsPerPlacement ?? NaN);
  const bestSingle = Math.max(...cells.filter((c) => c.devices === big && c.mode === 'single').map((c) => c.perSecond));
  const bestBatch = Math.max(...cells.filter((c) => c.devices === big && c.mode === 'batch').map((c) => c.perSecond));
  const bestFloor = Math.max(...cells.filter((c) => c.devices === big && c.mode === 'floor').map((c) => c.perSecond));
  console.log(
    `summary: at ${big} devices best single ${bestSingle.toFixed(0)} placements/s (floor ${bestFloor.toFixed(0)}), best batched ${bestBatch.toFixed(0)} placements/s, p99 single with 4 clients ${cell(big, 4, 'single')?.p99.toFixed(2)} ms (floor ${cell(big, 4, 'floor')?.p99.toFixed(2)} ms); per-placement cost ratio ${big}:${small} = ${ratio.toFixed(2)}`,
  );
});
