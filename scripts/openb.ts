// Loads the Alibaba openb GPU trace (../shared/data/openb): the node list as an inventory (devices,
// host CPU and memory) and the pod list as job requests with their CPU and memory, in arrival order.
import fs from 'node:fs';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { Database } from '../db/schema';
import type { ResourceRequest } from '../api/types';

export const OPENB_DIR = process.env.OPENB_DIR ?? path.join(__dirname, '..', '..', 'shared', 'data', 'openb');

export interface OpenbNode {
  name: string;
  gpus: number;
  model: string;
  cpuMilli: number;
  memoryMib: number;
}

export interface OpenbTask {
  name: string;
  request: ResourceRequest;
  /** Seconds the task lived in the trace (deletion − creation), when the file has it. */
  lifetimeS?: number;
  creationS?: number;
}

function readCsv(file: string): Record<string, string>[] {
  if (!fs.existsSync(file)) throw new Error(`openb trace file not found: ${file} (set OPENB_DIR to the folder holding it)`);
  const [header, ...lines] = fs.readFileSync(file, 'utf8').trim().split('\n');
  const cols = header.split(',');
  return lines.map((line) => {
    const cells = line.split(',');
    return Object.fromEntries(cols.map((c, i) => [c, cells[i] ?? '']));
  });
}

export function readOpenbNodes(file = path.join(OPENB_DIR, 'openb_node_list_gpu_node.csv')): OpenbNode[] {
  return readCsv(file)
    .map((r) => ({ name: r.sn, gpus: Number(r.gpu), model: r.model, cpuMilli: Number(r.cpu_milli), memoryMib: Number(r.memory_mib) }))
    .filter((n) => n.gpus > 0);
}

/** GPU tasks only (CPU-only pods are not the scheduler's business), in arrival order. */
export function readOpenbTasks(file = path.join(OPENB_DIR, 'openb_pod_list_default.csv'), models?: string[]): OpenbTask[] {
  const allModels = models ?? [...new Set(readOpenbNodes().map((n) => n.model))];
  const tasks: OpenbTask[] = [];
  for (const r of readCsv(file)) {
    const gpus = Number(r.num_gpu);
    if (!(gpus > 0)) continue;
    const milli = Number(r.gpu_milli);
    // The trace sometimes lists a model twice ("V100M16|V100M32|V100M32"); keep each once, in order.
    const spec = [...new Set((r.gpu_spec ?? '').split('|').filter(Boolean))];
    const share = gpus === 1 && milli > 0 && milli < 1000;
    tasks.push({
      name: r.name,
      request: {
        acceleratorTypes: spec.length ? spec : allModels,
        // A gpu_spec lists acceptable models, not a preference order (and an empty one accepts any).
        ...(spec.length === 1 ? {} : { typePreference: 'none' as const }),
        workers: 1,
        devicesPerWorker: share ? 0 : gpus,
        ...(share ? { milliPerWorker: milli } : {}),
        cpuMilliPerWorker: Number(r.cpu_milli),
        memoryMibPerWorker: Number(r.memory_mib),
        topology: 'any',
      },
      creationS: r.creation_time ? Number(r.creation_time) : undefined,
      lifetimeS: r.deletion_time && r.creation_time ? Number(r.deletion_time) - Number(r.creation_time) : undefined,
    });
  }
  return tasks.sort((a, b) => (a.creationS ?? 0) - (b.creationS ?? 0));
}

/**
 * Seeds the openb fleet into one cluster. The trace has no topology, so nodes are grouped in
 * file order into racks of `nodesPerRack` and pods of `racksPerPod`.
 */
export async function seedOpenbFleet(
  db: Kysely<Database>,
  opts: { region: string; nodes?: OpenbNode[]; nodesPerRack?: number; racksPerPod?: number } = { region: 'local' },
): Promise<number> {
  const nodes = opts.nodes ?? readOpenbNodes();
  const perRack = opts.nodesPerRack ?? 16;
  const perPod = opts.racksPerPod ?? 8;
  // The catalogue holds every openb model, even those without a node in this sample.
  const traced = fs.existsSync(path.join(OPENB_DIR, 'openb_node_list_gpu_node.csv')) ? readOpenbNodes() : [];
  const models = new Set([...traced.map((n) => n.model), ...nodes.map((n) => n.model)]);
  await db
    .insertInto('accelerator_types')
    .values([...models].map((m) => ({ name: m, family: 'gpu' as const, model: m, memory_mib: 0 })))
    .onConflict((oc) => oc.doNothing())
    .execute();
  const cluster = await db
    .insertInto('clusters')
    .values({ region: opts.region, provider: 'alibaba-openb', name: 'openb' })
    .onConflict((oc) => oc.columns(['region', 'name']).doUpdateSet({ provider: 'alibaba-openb' }))
    .returning('id')
    .executeTakeFirstOrThrow();
  const rows = nodes.map((n, i) => {
    const rack = Math.floor(i / perRack);
    return {
      cluster_id: cluster.id,
      name: n.name,
      accelerator_type: n.model,
      device_count: n.gpus,
      rack: `rack-${rack}`,
      pod: `pod-${Math.floor(rack / perPod)}`,
      labels: JSON.stringify({ model: n.model }),
      cpu_milli: n.cpuMilli,
      memory_mib: n.memoryMib,
    };
  });
  for (let i = 0; i < rows.length; i += 500)
    await db
      .insertInto('nodes')
      .values(rows.slice(i, i + 500))
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
  return nodes.reduce((s, n) => s + n.gpus, 0);
}
