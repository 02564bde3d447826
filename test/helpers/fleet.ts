// Small inventories for tests: a cluster with racks and pods of nodes of given types.
import type { Kysely } from 'kysely';
import type { Database } from '../../db/schema';

export interface FleetSpec {
  /** [accelerator type, devices per node, node count] */
  nodes: Array<[string, number, number]>;
  nodesPerRack?: number;
  racksPerPod?: number;
  labels?: (index: number) => Record<string, string>;
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
        cluster_id: cluster.id, name: `n${cluster.id}-${i}`, accelerator_type: type, device_count: devices,
        rack: `r${rack}`, pod: `p${Math.floor(rack / perPod)}`, labels: JSON.stringify(spec.labels?.(i) ?? {}),
      });
    }
  const inserted = await db.insertInto('nodes').values(rows).returning('id').execute();
  return inserted.map((r) => r.id);
}

/** Registers a job row directly, as the workflow's first activity would. */
export async function registerTestJob(db: Kysely<Database>, jobId: string, epoch = 1): Promise<void> {
  await db
    .insertInto('jobs')
    .values({ id: jobId, tenant: 'acme', tier: 'standard', region: 'test', workflow_id: `job/acme/${jobId}`, spec: '{}', state: 'waiting', epoch })
    .execute();
}
