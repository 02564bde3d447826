// `npm run bench:soak`: 16 clients make 100k random allocate/release operations on the real
// allocator while a chaos loop kills their PostgreSQL connections mid-transaction
// (pg_terminate_backend). Clients retry the same (job, epoch), as a Temporal activity retry
// would. At the end: the invariant checker, and the database against what the clients believe.
// Settings: SOAK_CLIENTS, SOAK_OPS, SOAK_DEVICES (fleet size), SOAK_KILL_EVERY_MS (pause between kills).
import { Kysely, PostgresDialect, sql } from 'kysely';
import { Allocator } from '../activities/allocator';
import { checkInvariants } from '../db/invariants';
import { resilientPool } from '../db/connection';
import type { Database } from '../db/schema';
import { envNumber } from './env';
import { randomRequest, registerJobs, seedSyntheticFleet, seeded } from './fleet';
import { freshBenchDatabase, runBench, say, sleep } from './harness';

const CLIENTS = envNumber('SOAK_CLIENTS', 16, { integer: true, min: 1 });
const OPS = envNumber('SOAK_OPS', 100_000, { integer: true, min: 1 });
const DEVICES = envNumber('SOAK_DEVICES', 1000, { integer: true, min: 8 });
const KILL_EVERY_MS = envNumber('SOAK_KILL_EVERY_MS', 25, { min: 0 });

function isConnectionLoss(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return (
    e.code === '57P01' ||
    /Connection terminated|terminating connection|ECONNRESET|Client has encountered a connection error|not queryable/i.test(e.message ?? '')
  );
}

runBench(async ({ cleanup }) => {
  // Left in place after the run, so a NOT CLEAN one can be looked into; the next run drops it first.
  const { url, db: setup } = await freshBenchDatabase(cleanup, 'sched_bench_soak', 2, { keep: true });
  await seedSyntheticFleet(setup, DEVICES);
  const ids = Array.from({ length: OPS }, (_, i) => `s${i}`);
  await registerJobs(setup, ids);

  const u = new URL(url);
  u.searchParams.set('application_name', 'soak-alloc');
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: resilientPool(u.toString(), CLIENTS) }) });
  cleanup.add("close the allocator's pool", () => db.destroy());
  const allocator = new Allocator(db, { policy: 'best-fit' });

  let running = true;
  let killed = 0;
  const chaos = (async () => {
    while (running) {
      const r = await sql<{ n: number }>`SELECT count(*)::int AS n FROM (
          SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'soak-alloc' AND state IN ('active', 'idle in transaction')
          ORDER BY random() LIMIT 1) k`.execute(setup);
      killed += r.rows[0].n;
      await sleep(KILL_EVERY_MS);
    }
  })();

  let next = 0;
  let issued = 0;
  let done = 0;
  let allocations = 0;
  let releases = 0;
  let retries = 0;
  let unplaced = 0;
  const believedLive = new Set<string>();
  const started = Date.now();
  const retry = async <T>(op: () => Promise<T>): Promise<T> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await op();
      } catch (err) {
        if (!isConnectionLoss(err) || attempt > 50) throw err;
        retries++;
      }
    }
  };
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      const rng = seeded(1000 + c);
      const mine: string[] = [];
      while (issued < OPS) {
        issued++;
        if (mine.length && rng() < 0.45) {
          const id = mine.splice(Math.floor(rng() * mine.length), 1)[0];
          await retry(() => allocator.release(id, 1));
          believedLive.delete(id);
          releases++;
        } else {
          const id = ids[next++];
          const request = randomRequest(rng);
          const r = await retry(() => allocator.allocate({ jobId: id, epoch: 1, request }));
          if (r.placed) {
            mine.push(id);
            believedLive.add(id);
            allocations++;
          } else unplaced++;
        }
        if (++done % 10000 === 0) say(`  ${done} ops, ${killed} connections killed, ${((Date.now() - started) / 1000).toFixed(0)} s`);
      }
    }),
  );
  running = false;
  await chaos;
  const seconds = (Date.now() - started) / 1000;

  const violations = await checkInvariants(setup);
  const holding = new Set((await setup.selectFrom('allocations').select('job_id').distinct().execute()).map((r) => r.job_id));
  const lost = [...believedLive].filter((id) => !holding.has(id));
  const leaked = [...holding].filter((id) => !believedLive.has(id));
  const dupes = await sql<{
    n: number;
  }>`SELECT count(*)::int AS n FROM (SELECT job_id FROM allocations GROUP BY job_id HAVING count(DISTINCT epoch) > 1) d`.execute(setup);

  console.log(
    `\nsoak: ${CLIENTS} clients, ${DEVICES} devices, real allocator on PostgreSQL, a connection killed every ${KILL_EVERY_MS} ms`,
  );
  console.log('ops      allocated  released  no-fit  killed-conns  retries  seconds  violations  lost  leaked  double-placed');
  console.log(
    `${String(done).padEnd(8)} ${String(allocations).padStart(9)}  ${String(releases).padStart(8)}  ${String(unplaced).padStart(6)}  ${String(killed).padStart(12)}  ${String(retries).padStart(7)}  ${seconds.toFixed(0).padStart(7)}  ${String(violations.length).padStart(10)}  ${String(lost.length).padStart(4)}  ${String(leaked.length).padStart(6)}  ${String(dupes.rows[0].n).padStart(13)}`,
  );
  for (const v of violations.slice(0, 10)) console.log(`  violation ${v.rule}: ${v.detail}`);
  const clean = violations.length === 0 && lost.length === 0 && leaked.length === 0 && dupes.rows[0].n === 0;
  console.log(
    `summary: ${done} operations, ${killed} connections killed mid-flight, ${retries} retries; ${violations.length} invariant violations, ${lost.length} lost, ${leaked.length} leaked, ${dupes.rows[0].n} double-placed: ${clean ? 'CLEAN' : 'NOT CLEAN'}`,
  );
  if (!clean) process.exitCode = 1;
});
