// How every process reaches its Temporal frontend: the address, the namespace, TLS (server CA,
// mTLS client pair, server name) and an API key, read from the environment and checked once.
// Settings name files, never hold their contents; the files are read when a connection is made
// (by the reader the caller passes), so a renewed certificate is picked up on the next connect.
// Pure: no I/O here, so the worker, the typed client, the scripts and the peer links share one
// set of rules and one set of error messages.
import type { TLSConfig } from '@temporalio/client';

/** TLS towards a Temporal frontend: files on this host. An empty object means TLS with the system's roots. */
export interface TemporalTls {
  /** The name the server's certificate must carry, when it is not the host in the address. */
  serverName?: string;
  /** PEM file of the CA that signed the server's certificate; the system's roots when absent. */
  caFile?: string;
  /** PEM files of this client's certificate and key, for mutual TLS; both or neither. */
  certFile?: string;
  keyFile?: string;
}

/** A Temporal frontend as configured: where it is, which namespace, and how to prove who we are. */
export interface TemporalEndpoint {
  /** host:port of the frontend. */
  address: string;
  namespace: string;
  /** Absent: plaintext gRPC (a local dev server or a private network). */
  tls?: TemporalTls;
  /** Sent as `Authorization: Bearer <key>` (Temporal Cloud API keys); only over TLS unless explicitly allowed. */
  apiKey?: string;
}

/** The environment variables read by {@link temporalEndpointFromEnv}. */
export const TEMPORAL_ENV = {
  address: 'TEMPORAL_ADDRESS',
  namespace: 'TEMPORAL_NAMESPACE',
  tls: 'TEMPORAL_TLS',
  caFile: 'TEMPORAL_TLS_CA',
  certFile: 'TEMPORAL_TLS_CERT',
  keyFile: 'TEMPORAL_TLS_KEY',
  serverName: 'TEMPORAL_TLS_SERVER_NAME',
  apiKey: 'TEMPORAL_API_KEY',
  allowPlaintextApiKey: 'TEMPORAL_API_KEY_ALLOW_PLAINTEXT',
} as const;

/** A Temporal connection setting that cannot be used; `problems` names every variable at fault. */
export class TemporalConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Temporal connection settings refused: ${problems.join('; ')}`);
    this.name = 'TemporalConfigError';
  }
}

const ADDRESS = /^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):\d{1,5}$/;
const ON = ['on', 'true', '1', 'yes'];
const OFF = ['off', 'false', '0', 'no'];
const show = (v: string): string => JSON.stringify(v.length > 120 ? `${v.slice(0, 120)}…` : v);

/** Problems with a host:port address; `at` names the setting. */
export function addressProblems(address: string, at: string): string[] {
  if (!ADDRESS.test(address)) return [`${at}: ${show(address)} must be host:port`];
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  return port >= 1 && port <= 65535 ? [] : [`${at}: port ${port} must be between 1 and 65535`];
}

/**
 * Problems with TLS settings, whatever their source; `names` says what each field is called
 * there (an environment variable, or a peer entry's field), so the messages point at it.
 */
export function tlsProblems(tls: TemporalTls, names: Record<keyof TemporalTls, string>): string[] {
  const problems: string[] = [];
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined))
    problems.push(
      `${names.certFile} and ${names.keyFile} go together (the mTLS client certificate and its key): ` +
        `${tls.certFile === undefined ? names.certFile : names.keyFile} is missing`,
    );
  if (tls.serverName !== undefined && !/^[A-Za-z0-9*]([A-Za-z0-9.*-]{0,252})$/.test(tls.serverName))
    problems.push(`${names.serverName}: ${show(tls.serverName)} must be a DNS name`);
  return problems;
}

/**
 * Reads a Temporal endpoint from the environment. `defaults` give the address and namespace when
 * TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE are unset (each process knows its own: a region's worker
 * defaults to `sched-<region>`). TLS is on when TEMPORAL_TLS says so, or, when it is unset, as soon
 * as any TLS file, server name or API key is given. An empty variable counts as unset. Throws a
 * {@link TemporalConfigError} naming every problem at once.
 */
export function temporalEndpointFromEnv(
  env: Record<string, string | undefined>,
  defaults: { address: string; namespace: string },
): TemporalEndpoint {
  const get = (name: string): string | undefined => (env[name] === undefined || env[name] === '' ? undefined : env[name]);
  const problems: string[] = [];
  const E = TEMPORAL_ENV;

  // A misspelt TLS variable would otherwise leave TLS silently off.
  const known: string[] = Object.values(E);
  for (const family of ['TEMPORAL_TLS_', 'TEMPORAL_API_KEY_'])
    for (const name of Object.keys(env))
      if (name.startsWith(family) && !known.includes(name))
        problems.push(`${name} is not a setting (known: ${known.filter((k) => k.startsWith(family)).join(', ')})`);

  const address = get(E.address) ?? defaults.address;
  problems.push(...addressProblems(address, get(E.address) !== undefined ? E.address : `the default address`));
  const namespace = get(E.namespace) ?? defaults.namespace;
  if (!namespace.trim() || /\s/.test(namespace))
    problems.push(`${E.namespace}: ${show(namespace)} must be a namespace name without spaces`);

  const files: TemporalTls = {};
  for (const k of ['serverName', 'caFile', 'certFile', 'keyFile'] as const) {
    const v = get(E[k]);
    if (v !== undefined) files[k] = v;
  }
  problems.push(...tlsProblems(files, { serverName: E.serverName, caFile: E.caFile, certFile: E.certFile, keyFile: E.keyFile }));

  const switchValue = get(E.tls)?.toLowerCase();
  let tlsOn: boolean | undefined;
  if (switchValue !== undefined) {
    if (ON.includes(switchValue)) tlsOn = true;
    else if (OFF.includes(switchValue)) tlsOn = false;
    else problems.push(`${E.tls}: ${show(get(E.tls) as string)} must be on or off (also true/false, 1/0, yes/no)`);
  }
  const fileNames = (Object.keys(files) as Array<keyof TemporalTls>).map((k) => E[k]);
  if (tlsOn === false && fileNames.length) problems.push(`${E.tls}=off contradicts ${fileNames.join(', ')}: unset them or turn TLS on`);

  const apiKey = get(E.apiKey);
  if (apiKey !== undefined && /\s/.test(apiKey))
    problems.push(`${E.apiKey} contains whitespace (a trailing newline from a file?): give the key alone`);
  const allow = get(E.allowPlaintextApiKey)?.toLowerCase();
  if (allow !== undefined && !ON.includes(allow) && !OFF.includes(allow))
    problems.push(`${E.allowPlaintextApiKey}: ${show(get(E.allowPlaintextApiKey) as string)} must be on or off`);
  if (apiKey !== undefined && tlsOn === false && !(allow !== undefined && ON.includes(allow)))
    problems.push(
      `${E.apiKey} is set with ${E.tls}=off: the key would cross the network in clear text; ` +
        `turn TLS on, or set ${E.allowPlaintextApiKey}=on for a trusted local proxy that terminates TLS`,
    );

  if (problems.length) throw new TemporalConfigError(problems);
  const useTls = tlsOn ?? (fileNames.length > 0 || apiKey !== undefined);
  return { address, namespace, ...(useTls ? { tls: files } : {}), ...(apiKey !== undefined ? { apiKey } : {}) };
}

/** Reads a file's bytes (`fs.readFileSync` in a process; anything that returns bytes in a test). */
export type ReadFile = (path: string) => Uint8Array;

/** What both `Connection.connect` (client) and `NativeConnection.connect` (worker) accept. */
export interface TemporalConnectionOptions {
  address: string;
  /** `false` is explicit: the SDK would otherwise turn TLS on by itself when an API key is given. */
  tls: TLSConfig | false;
  apiKey?: string;
}

const PEM_KINDS = {
  caFile: { label: 'CA certificate', marker: /-----BEGIN CERTIFICATE-----/, expected: 'BEGIN CERTIFICATE' },
  certFile: { label: 'client certificate', marker: /-----BEGIN CERTIFICATE-----/, expected: 'BEGIN CERTIFICATE' },
  keyFile: { label: 'client private key', marker: /-----BEGIN (RSA |EC )?PRIVATE KEY-----/, expected: 'BEGIN PRIVATE KEY' },
} as const;

/**
 * Turns an endpoint into connection options, reading its TLS files with `readFile`. A file that
 * cannot be read, or that is not the PEM it should be, is a {@link TemporalConfigError} naming
 * the file and what it was meant to hold; `source` says where the setting came from (e.g.
 * `TEMPORAL_TLS_*` or `peer eu-west`).
 */
export function temporalConnectionOptions(
  endpoint: TemporalEndpoint,
  readFile: ReadFile,
  source = 'TEMPORAL_TLS_*',
): TemporalConnectionOptions {
  const problems: string[] = [];
  const read = (k: keyof typeof PEM_KINDS): Uint8Array | undefined => {
    const file = endpoint.tls?.[k];
    if (file === undefined) return undefined;
    const { label, marker, expected } = PEM_KINDS[k];
    let bytes: Uint8Array;
    try {
      bytes = readFile(file);
    } catch (err) {
      problems.push(`${source}: the ${label} file ${file} cannot be read: ${(err as Error).message}`);
      return undefined;
    }
    const text = Buffer.from(bytes).toString('utf8');
    if (!marker.test(text)) {
      const encrypted = k === 'keyFile' && /Proc-Type: 4,ENCRYPTED|BEGIN ENCRYPTED PRIVATE KEY/.test(text);
      problems.push(
        encrypted
          ? `${source}: the ${label} file ${file} is encrypted with a passphrase; give an unencrypted key`
          : `${source}: the ${label} file ${file} is not PEM (no "-----${expected}-----" line)`,
      );
      return undefined;
    }
    return bytes;
  };
  let tls: TLSConfig | false = false;
  if (endpoint.tls) {
    const ca = read('caFile');
    const crt = read('certFile');
    const key = read('keyFile');
    tls = {
      ...(endpoint.tls.serverName ? { serverNameOverride: endpoint.tls.serverName } : {}),
      ...(ca ? { serverRootCACertificate: ca } : {}),
      ...(crt && key ? { clientCertPair: { crt, key } } : {}),
    };
  }
  if (problems.length) throw new TemporalConfigError(problems);
  return { address: endpoint.address, tls, ...(endpoint.apiKey !== undefined ? { apiKey: endpoint.apiKey } : {}) };
}

/** One line for logs: where and how a process connects, without secrets. */
export function describeEndpoint(e: TemporalEndpoint): string {
  const how = !e.tls ? 'plaintext' : e.tls.certFile ? 'mTLS' : 'TLS';
  return `${e.address} namespace ${e.namespace} (${how}${e.apiKey !== undefined ? ', API key' : ''})`;
}
