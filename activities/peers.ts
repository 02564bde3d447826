// Links to peer regions: a Temporal client per peer namespace, connected on first use and kept.
// Every call to a peer carries a deadline, so an unreachable peer costs a failed activity, never a
// stalled one.
import fs from 'node:fs';
import { Client, Connection, type ConnectionOptions } from '@temporalio/client';
import { peerEndpoint, type PeerConfig } from '../api/peers';
import { temporalConnectionOptions } from '../api/temporal-connection';

/** How long one call to a peer may take before it counts as unreachable. */
export const PEER_CALL_MS = 5_000;

export class PeerLinks {
  private readonly clients = new Map<string, Promise<Client>>();
  private readonly byName: Map<string, PeerConfig>;

  constructor(
    readonly self: string,
    readonly peers: readonly PeerConfig[],
  ) {
    this.byName = new Map(peers.map((p) => [p.name, p]));
  }

  get names(): string[] {
    return this.peers.map((p) => p.name);
  }

  config(name: string): PeerConfig | undefined {
    return this.byName.get(name);
  }

  /** The peer's configuration, or a clear error for a region this one does not know. */
  require(name: string): PeerConfig {
    const peer = this.byName.get(name);
    if (!peer) throw new Error(`region ${name} is not a configured peer of ${this.self} (peers: ${this.names.join(', ') || 'none'})`);
    return peer;
  }

  /** A client in the peer's namespace (connected once, lazily; a failed connect is retried by the next call). */
  async client(name: string): Promise<Client> {
    const peer = this.require(name);
    let c = this.clients.get(name);
    if (!c) {
      c = Connection.connect(connectionOptions(peer)).then((connection) => new Client({ connection, namespace: peer.namespace }));
      this.clients.set(name, c);
      c.catch(() => this.clients.delete(name));
    }
    return c;
  }

  /** Runs `call` against the peer's namespace within PEER_CALL_MS. */
  async call<T>(name: string, call: (client: Client) => Promise<T>, ms = PEER_CALL_MS): Promise<T> {
    const client = await this.client(name);
    return client.connection.withDeadline(Date.now() + ms, () => call(client));
  }

  async close(): Promise<void> {
    const all = [...this.clients.values()];
    this.clients.clear();
    await Promise.allSettled(all.map(async (c) => (await c).connection.close()));
  }
}

/** Connection options for a peer, TLS files read now (so a renewed certificate is picked up on reconnect). */
export function connectionOptions(peer: PeerConfig): ConnectionOptions {
  return {
    ...temporalConnectionOptions(peerEndpoint(peer), fs.readFileSync, `peer ${peer.name}`),
    // A peer that does not answer must not hold a caller for long: the first connect is bounded too.
    connectTimeout: PEER_CALL_MS,
  };
}
