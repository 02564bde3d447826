// The largest node of each accelerator type, cached: lets a request that can never fit (no node of
// its types, or none large enough) be refused before any row is touched.
import { sql, type Kysely } from 'kysely';
import type { Database } from '../../db/schema';
import type { LargestNode } from '../../scheduling/geometry';

/** Per accelerator type, the largest amounts any node has (refreshed when a type is not found). */
export class InventoryShape {
  private largest = new Map<string, LargestNode>();
  private loadedAt = 0;
  constructor(private readonly db: Kysely<Database>) {}

  /** The largest node of each of `types` (a type absent from the map is unknown). */
  async of(types: readonly string[]): Promise<ReadonlyMap<string, LargestNode>> {
    if (types.some((t) => !this.largest.has(t)) || Date.now() - this.loadedAt > 10_000) await this.load();
    return this.largest;
  }

  private async load(): Promise<void> {
    const types = await this.db.selectFrom('accelerator_types').select('name').execute();
    const sizes = await this.db
      .selectFrom('nodes')
      .select((eb) => [
        'accelerator_type',
        eb.fn.max('device_count').as('devices'),
        eb.fn.max('cpu_milli').as('cpu'),
        eb.fn.max('memory_mib').as('memory'),
        // A node that does not track CPU or memory has room for any.
        sql<boolean>`bool_or(cpu_milli IS NULL)`.as('cpu_untracked'),
        sql<boolean>`bool_or(memory_mib IS NULL)`.as('memory_untracked'),
      ])
      .groupBy('accelerator_type')
      .execute();
    this.largest = new Map(types.map((t) => [t.name, { devices: 0, cpuMilli: 0, memoryMib: 0 }]));
    for (const s of sizes)
      this.largest.set(s.accelerator_type, {
        devices: Number(s.devices),
        cpuMilli: s.cpu_untracked ? Infinity : Number(s.cpu),
        memoryMib: s.memory_untracked ? Infinity : Number(s.memory),
      });
    this.loadedAt = Date.now();
  }
}
