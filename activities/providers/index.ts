// The region's capacity providers, built from their configuration (api/autoscaler.ts checks it).
// There is always an owned one: the nodes of the inventory that no provider provisioned.
import type { Kysely } from 'kysely';
import type { Offering, ProviderConfig } from '../../api/autoscaler';
import type { Database } from '../../db/schema';
import type { CapacityProvider } from '../../scheduling/capacity';
import { OwnedProvider } from './owned';
import { SimulatedCloud } from './simulated';

export { OwnedProvider } from './owned';
export { SimulatedCloud } from './simulated';

/** The provider name of nodes nobody provisioned. */
export const OWNED = 'owned';

export class Providers {
  readonly byName: ReadonlyMap<string, CapacityProvider>;

  constructor(db: Kysely<Database>, configs: readonly ProviderConfig[], clock?: () => number) {
    const all = new Map<string, CapacityProvider>();
    if (!configs.some((c) => c.name === OWNED)) all.set(OWNED, new OwnedProvider(OWNED));
    for (const c of configs) all.set(c.name, c.kind === 'owned' ? new OwnedProvider(c.name) : new SimulatedCloud(db, c, clock));
    this.byName = all;
  }

  get names(): string[] {
    return [...this.byName.keys()];
  }

  /** Providers whose nodes are fixed (never released by scaling in). */
  get owned(): Set<string> {
    return new Set([...this.byName.values()].filter((p) => p.kind === 'owned').map((p) => p.name));
  }

  /** Offerings of every provider in `region`. */
  offerings(region: string): Offering[] {
    return [...this.byName.values()].flatMap((p) => p.offerings()).filter((o) => o.region === region);
  }

  get(name: string): CapacityProvider | undefined {
    return this.byName.get(name);
  }
}
