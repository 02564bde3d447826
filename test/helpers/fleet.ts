// Small inventories for tests: a cluster with racks and pods of nodes of given types.
import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema';

export interface FleetSpec {
  /** [accelerator type, devices per node, node count] */
  nodes: Array<[string, number, number]>;
  nodesPerRack?: number;
  racksPerPod?: number;
  labels?: (index: number) => Record<string, string>;
  /** Host CPU (milli-cores) and memory (MiB) per node; absent: not tracked. */
  host?: (index: number) => { cpuMilli?: number; memoryMib?: number };
}

export async function seedFleet(db: Kysely<Database>, spec: FleetSpec): Promise<number[]> {
  const types = [...new Set(spec.nodes.map(([t]) => t))];
  await db
    .insertInto('accelerator_types')
    .values(types.map((name) => ({ name, family: name.startsWith('npu') ? 'npu' : 'gpu', model: name, memory_mib: 81920 })))
    .onConflict((oc) => oc.doNothing())
    .execute();
  const cluster = await db
    .insertInto('clusters')
    .values({ region: 'test', provider: 'sim', name: `c${Date.now()}` })
    .returning('id')
    .executeTakeFirstOrThrow();
  const perRack = spec.nodesPerRack ?? 4;
  const perPod = spec.racksPerPod ?? 2;
  const rows = [];
  let i = 0;
  for (const [type, devices, count] of spec.nodes)
    for (let k = 0; k < count; k++, i++) {
      const rack = Math.floor(i / perRack);
      rows.push({
        cluster_id: cluster.id,
        name: `n${cluster.id}-${i}`,
        accelerator_type: type,
        device_count: devices,
        rack: `r${rack}`,
        pod: `p${Math.floor(rack / perPod)}`,
        labels: JSON.stringify(spec.labels?.(i) ?? {}),
        cpu_milli: spec.host?.(i).cpuMilli ?? null,
        memory_mib: spec.host?.(i).memoryMib ?? null,
      });
    }
  const inserted = await db.insertInto('nodes').values(rows).returning('id').execute();
  return inserted.map((r) => r.id);
}

/** Registers a job row directly, as the workflow's first activity would. */
export async function registerTestJob(db: Kysely<Database>, jobId: string, epoch = 1): Promise<void> {
  await db
    .insertInto('jobs')
    .values({
      id: jobId,
      tenant: 'acme',
      tier: 'standard',
      region: 'test',
      workflow_id: `job/acme/${jobId}`,
      spec: '{}',
      state: 'waiting',
      epoch,
    })
    .execute();
}

/** Registers tenants (and their ancestors) so admission accepts them; `policy` applies to each path given. */
export async function seedTenants(
  db: Kysely<Database>,
  paths: string[],
  policy: { allowed_tiers?: string[]; allowed_types?: string[]; max_devices_per_job?: number; active?: boolean } = {},
): Promise<void> {
  const all = new Set<string>();
  for (const p of paths) {
    const parts = p.split('/');
    for (let i = 1; i <= parts.length; i++) all.add(parts.slice(0, i).join('/'));
  }
  for (const path of [...all].sort((a, b) => a.split('/').length - b.split('/').length)) {
    const own = paths.includes(path) ? policy : {};
    await db
      .insertInto('tenants')
      .values({ path, parent: path.includes('/') ? path.slice(0, path.lastIndexOf('/')) : null, ...own })
      .onConflict((oc) => (Object.keys(own).length ? oc.column('path').doUpdateSet(own) : oc.column('path').doNothing()))
      .execute();
  }
}

/** Sets a quota rule (whole devices). */
export async function setQuota(
  db: Kysely<Database>,
  tenant: string,
  type: string,
  nominal: number,
  limits: { borrowing?: number | null; lending?: number | null } = {},
): Promise<void> {
  const values = { nominal, borrowing_limit: limits.borrowing ?? null, lending_limit: limits.lending ?? null };
  await db
    .insertInto('quotas')
    .values({ tenant, accelerator_type: type, ...values })
    .onConflict((oc) => oc.columns(['tenant', 'accelerator_type']).doUpdateSet(values))
    .execute();
}
