// The owned datacenter as a capacity provider: its nodes are the inventory as seeded, fixed;
// nothing is provisioned or released, and it reports nothing.
import type { Offering } from '../../api/autoscaler';
import { badRequest } from '../../api/errors';
import type { CapacityProvider, ProvidedNode, ProviderEvent, ProvisionTicket } from '../../scheduling/capacity';

export class OwnedProvider implements CapacityProvider {
  readonly kind = 'owned' as const;
  constructor(readonly name: string) {}

  offerings(): Offering[] {
    return [];
  }

  async provision(offering: string): Promise<ProvisionTicket> {
    throw badRequest(
      `provider ${this.name} is the owned datacenter: its capacity is fixed, there is no offering ${JSON.stringify(offering)} to provision`,
    );
  }

  async release(node: string): Promise<void> {
    throw badRequest(
      `provider ${this.name} is the owned datacenter: node ${JSON.stringify(node)} is not released, only cordoned or drained`,
    );
  }

  async poll(): Promise<ProviderEvent[]> {
    return [];
  }

  async node(): Promise<ProvidedNode | undefined> {
    return undefined;
  }
}
