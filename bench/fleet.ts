// Synthetic fleets and workloads for the benchmarks: 8 devices per node, three accelerator types,
// racks of 16; job rows for the allocator, mixed requests, and a seeded generator.
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema';
import type { ResourceRequest } from '../api/types';

export const BENCH_TYPES = ['H100', 'A100', 'L4'];

/** The region the synthetic fleet's cluster is in, and its jobs. */
export const BENCH_REGION = 'bench';

/** Empties the inventory and everything placed on it. */
export async function clearFleet(db: Kysely<Database>): Promise<void> {
  await sql`TRUNCATE allocations, jobs, nodes, clusters, accelerator_types RESTART IDENTITY CASCADE`.execute(db);
}

export async function seedSyntheticFleet(db: Kysely<Database>, devices: number): Promise<void> {
  await clearFleet(db);
  await db
    .insertInto('accelerator_types')
    .values(BENCH_TYPES.map((name) => ({ name, family: 'gpu' as const, model: name, memory_mib: 81920 })))
    .execute();
  const cluster = await db
    .insertInto('clusters')
    .values({ region: BENCH_REGION, provider: 'sim', name: 'bench' })
    .returning('id')
    .executeTakeFirstOrThrow();
  const nodes = devices / 8;
  for (let i = 0; i < nodes; i += 2000) {
    const rows = [];
    for (let k = i; k < Math.min(nodes, i + 2000); k++)
      rows.push({
        cluster_id: cluster.id,
        name: `b${k}`,
        accelerator_type: BENCH_TYPES[k % BENCH_TYPES.length],
        device_count: 8,
        rack: `r${Math.floor(k / 16)}`,
        pod: `p${Math.floor(k / 256)}`,
        labels: '{}',
      });
    await db.insertInto('nodes').values(rows).execute();
  }
  await sql`ANALYZE nodes`.execute(db);
}

/** Job rows for the allocator alone to place (no workflow behind them), waiting, epoch 1. */
export async function registerJobs(db: Kysely<Database>, ids: string[]): Promise<void> {
  for (let i = 0; i < ids.length; i += 5000)
    await db
      .insertInto('jobs')
      .values(
        ids.slice(i, i + 5000).map((id) => ({
          id,
          tenant: 'bench',
          tier: 'basic',
          region: BENCH_REGION,
          workflow_id: id,
          spec: '{}',
          state: 'waiting' as const,
          epoch: 1,
        })),
      )
      .execute();
}

/** A mixed request: mostly single devices, some 2/4/8-device workers, some shares. */
export function randomRequest(rng: () => number): ResourceRequest {
  const r = rng();
  const type = BENCH_TYPES[Math.floor(rng() * BENCH_TYPES.length)];
  const base = { acceleratorTypes: [type], workers: 1, topology: 'any' as const };
  if (r < 0.5) return { ...base, devicesPerWorker: 1 };
  if (r < 0.7) return { ...base, devicesPerWorker: 2 };
  if (r < 0.8) return { ...base, devicesPerWorker: 4 };
  if (r < 0.85) return { ...base, devicesPerWorker: 8 };
  return { ...base, devicesPerWorker: 0, milliPerWorker: [250, 500][Math.floor(rng() * 2)] };
}

export function requestDevices(r: ResourceRequest): number {
  return r.devicesPerWorker > 0 ? r.devicesPerWorker * r.workers : ((r.milliPerWorker ?? 1000) / 1000) * r.workers;
}

/** Deterministic generator so runs are comparable. */
export function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
