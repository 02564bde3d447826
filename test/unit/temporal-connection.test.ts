// The Temporal connection settings every process reads: what each environment gives, and every
// refusal naming the variable at fault.
import {
  TemporalConfigError,
  describeEndpoint,
  temporalConnectionOptions,
  temporalEndpointFromEnv,
  type TemporalEndpoint,
} from '../../api/temporal-connection';
import { parsePeers, peerEndpoint } from '../../api/peers';
import { configFromEnv } from '../../worker/config';

const defaults = { address: '127.0.0.1:7233', namespace: 'sched-local' };
const CERT = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const KEY = '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n';
const files: Record<string, string> = { '/pki/ca.pem': CERT, '/pki/client.pem': CERT, '/pki/client.key': KEY, '/pki/notes.txt': 'hello' };
const readFile = (path: string): Uint8Array => {
  if (!(path in files)) throw new Error(`ENOENT: no such file or directory, open '${path}'`);
  return Buffer.from(files[path]);
};

/** The problems a refused environment is reported with. */
function refusal(env: Record<string, string>): string[] {
  try {
    temporalEndpointFromEnv(env, defaults);
  } catch (err) {
    if (err instanceof TemporalConfigError) return err.problems;
    throw err;
  }
  throw new Error('the environment was accepted');
}

describe('Temporal settings from the environment', () => {
  test('nothing set means the local dev server, in plaintext, in the default namespace', () => {
    expect(temporalEndpointFromEnv({}, defaults)).toEqual({ address: '127.0.0.1:7233', namespace: 'sched-local' });
  });

  test('an mTLS cluster: address, namespace, CA, client pair and server name', () => {
    const e = temporalEndpointFromEnv(
      {
        TEMPORAL_ADDRESS: 'temporal.eu.internal:7233',
        TEMPORAL_NAMESPACE: 'sched-eu',
        TEMPORAL_TLS_CA: '/pki/ca.pem',
        TEMPORAL_TLS_CERT: '/pki/client.pem',
        TEMPORAL_TLS_KEY: '/pki/client.key',
        TEMPORAL_TLS_SERVER_NAME: 'frontend.temporal',
      },
      defaults,
    );
    expect(e).toEqual({
      address: 'temporal.eu.internal:7233',
      namespace: 'sched-eu',
      tls: { caFile: '/pki/ca.pem', certFile: '/pki/client.pem', keyFile: '/pki/client.key', serverName: 'frontend.temporal' },
    });
    expect(describeEndpoint(e)).toBe('temporal.eu.internal:7233 namespace sched-eu (mTLS)');
  });

  test('an API key turns TLS on by itself (Temporal Cloud), with the system roots', () => {
    const e = temporalEndpointFromEnv({ TEMPORAL_ADDRESS: 'eu-west-1.aws.api.temporal.io:7233', TEMPORAL_API_KEY: 'k3y.abc' }, defaults);
    expect(e).toEqual({ address: 'eu-west-1.aws.api.temporal.io:7233', namespace: 'sched-local', tls: {}, apiKey: 'k3y.abc' });
    expect(describeEndpoint(e)).toBe('eu-west-1.aws.api.temporal.io:7233 namespace sched-local (TLS, API key)');
  });

  test('TEMPORAL_TLS=on alone means TLS with the system roots; empty variables count as unset', () => {
    expect(temporalEndpointFromEnv({ TEMPORAL_TLS: 'on', TEMPORAL_TLS_CA: '', TEMPORAL_ADDRESS: '' }, defaults)).toEqual({
      ...defaults,
      tls: {},
    });
    expect(temporalEndpointFromEnv({ TEMPORAL_TLS: 'FALSE' }, defaults)).toEqual(defaults);
  });

  test('an API key over plaintext only when explicitly allowed', () => {
    expect(
      temporalEndpointFromEnv({ TEMPORAL_TLS: 'off', TEMPORAL_API_KEY: 'k', TEMPORAL_API_KEY_ALLOW_PLAINTEXT: 'on' }, defaults),
    ).toEqual({
      ...defaults,
      apiKey: 'k',
    });
  });

  test.each<[string, Record<string, string>, string[]]>([
    [
      'a client certificate without its key',
      { TEMPORAL_TLS_CERT: '/pki/client.pem' },
      ['TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together (the mTLS client certificate and its key): TEMPORAL_TLS_KEY is missing'],
    ],
    [
      'a key without its certificate',
      { TEMPORAL_TLS_KEY: '/pki/client.key' },
      ['TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together (the mTLS client certificate and its key): TEMPORAL_TLS_CERT is missing'],
    ],
    [
      'an API key with TLS turned off',
      { TEMPORAL_TLS: 'off', TEMPORAL_API_KEY: 'k' },
      [
        'TEMPORAL_API_KEY is set with TEMPORAL_TLS=off: the key would cross the network in clear text; turn TLS on, or set TEMPORAL_API_KEY_ALLOW_PLAINTEXT=on for a trusted local proxy that terminates TLS',
      ],
    ],
    [
      'TLS turned off with TLS files given',
      { TEMPORAL_TLS: 'off', TEMPORAL_TLS_CA: '/pki/ca.pem' },
      ['TEMPORAL_TLS=off contradicts TEMPORAL_TLS_CA: unset them or turn TLS on'],
    ],
    [
      'a TLS switch that is neither on nor off',
      { TEMPORAL_TLS: 'maybe' },
      ['TEMPORAL_TLS: "maybe" must be on or off (also true/false, 1/0, yes/no)'],
    ],
    ['an address without a port', { TEMPORAL_ADDRESS: 'temporal.internal' }, ['TEMPORAL_ADDRESS: "temporal.internal" must be host:port']],
    ['a port out of range', { TEMPORAL_ADDRESS: 'temporal.internal:72330' }, ['TEMPORAL_ADDRESS: port 72330 must be between 1 and 65535']],
    [
      'a namespace with spaces',
      { TEMPORAL_NAMESPACE: 'sched eu' },
      ['TEMPORAL_NAMESPACE: "sched eu" must be a namespace name without spaces'],
    ],
    [
      'an API key with a trailing newline',
      { TEMPORAL_API_KEY: 'abc\n' },
      ['TEMPORAL_API_KEY contains whitespace (a trailing newline from a file?): give the key alone'],
    ],
    [
      'a misspelt TLS variable, which would otherwise leave TLS off',
      { TEMPORAL_TLS_CERT_PATH: '/pki/client.pem' },
      ['TEMPORAL_TLS_CERT_PATH is not a setting (known: TEMPORAL_TLS_CA, TEMPORAL_TLS_CERT, TEMPORAL_TLS_KEY, TEMPORAL_TLS_SERVER_NAME)'],
    ],
    [
      'a server name that is not a DNS name',
      { TEMPORAL_TLS_SERVER_NAME: 'front end' },
      ['TEMPORAL_TLS_SERVER_NAME: "front end" must be a DNS name'],
    ],
  ])('refused: %s', (_what, env, problems) => {
    expect(refusal(env)).toEqual(problems);
  });

  test('every problem is named at once', () => {
    expect(refusal({ TEMPORAL_ADDRESS: 'x', TEMPORAL_TLS: 'off', TEMPORAL_TLS_KEY: '/k', TEMPORAL_API_KEY: 'k' })).toHaveLength(4);
  });

  test('the worker reads the same variables, with its region namespace as the default', () => {
    const c = configFromEnv({ REGION: 'eu', TEMPORAL_TLS_CA: '/pki/ca.pem' });
    expect(c.temporal).toEqual({ address: '127.0.0.1:7233', namespace: 'sched-eu', tls: { caFile: '/pki/ca.pem' } });
    expect(c.namespace).toBe('sched-eu');
    expect(() => configFromEnv({ REGION: 'eu', TEMPORAL_TLS_CERT: '/pki/client.pem' })).toThrow(/TEMPORAL_TLS_KEY is missing/);
  });
});

describe('connection options from an endpoint', () => {
  const mtls: TemporalEndpoint = {
    address: 'temporal.internal:7233',
    namespace: 'sched-eu',
    tls: { caFile: '/pki/ca.pem', certFile: '/pki/client.pem', keyFile: '/pki/client.key', serverName: 'frontend.temporal' },
  };

  test('the TLS files are read into the SDK options, for the client and the worker alike', () => {
    const o = temporalConnectionOptions(mtls, readFile);
    expect(o.address).toBe('temporal.internal:7233');
    expect(o.tls).toEqual({
      serverNameOverride: 'frontend.temporal',
      serverRootCACertificate: Buffer.from(CERT),
      clientCertPair: { crt: Buffer.from(CERT), key: Buffer.from(KEY) },
    });
    expect(o.apiKey).toBeUndefined();
  });

  test('plaintext is an explicit false, so the SDK does not turn TLS on for an allowed plaintext API key', () => {
    expect(temporalConnectionOptions({ ...mtls, tls: undefined, apiKey: 'k' }, readFile)).toEqual({
      address: 'temporal.internal:7233',
      tls: false,
      apiKey: 'k',
    });
  });

  test('an unreadable file and a file that is not PEM are named, with what they should hold', () => {
    const bad: TemporalEndpoint = { ...mtls, tls: { caFile: '/pki/missing.pem', certFile: '/pki/notes.txt', keyFile: '/pki/ca.pem' } };
    expect(() => temporalConnectionOptions(bad, readFile)).toThrow(TemporalConfigError);
    try {
      temporalConnectionOptions(bad, readFile);
    } catch (err) {
      expect((err as TemporalConfigError).problems).toEqual([
        "TEMPORAL_TLS_*: the CA certificate file /pki/missing.pem cannot be read: ENOENT: no such file or directory, open '/pki/missing.pem'",
        'TEMPORAL_TLS_*: the client certificate file /pki/notes.txt is not PEM (no "-----BEGIN CERTIFICATE-----" line)',
        'TEMPORAL_TLS_*: the client private key file /pki/ca.pem is not PEM (no "-----BEGIN PRIVATE KEY-----" line)',
      ]);
    }
  });

  test('a passphrase-protected key is refused as such', () => {
    files['/pki/locked.key'] = '-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIE\n-----END ENCRYPTED PRIVATE KEY-----\n';
    expect(() =>
      temporalConnectionOptions({ ...mtls, tls: { certFile: '/pki/client.pem', keyFile: '/pki/locked.key' } }, readFile),
    ).toThrow('the client private key file /pki/locked.key is encrypted with a passphrase; give an unencrypted key');
  });

  test('a peer goes through the same rules and the same reader, its errors naming the peer', () => {
    const { peers, problems } = parsePeers(
      [
        {
          name: 'eu',
          temporalAddress: 'temporal.eu:7233',
          tls: { caFile: '/pki/ca.pem', certFile: '/pki/client.pem', keyFile: '/pki/gone.key' },
        },
      ],
      'us',
    );
    expect(problems).toEqual([]);
    expect(peerEndpoint(peers[0])).toEqual({
      address: 'temporal.eu:7233',
      namespace: 'sched-eu',
      tls: { caFile: '/pki/ca.pem', certFile: '/pki/client.pem', keyFile: '/pki/gone.key' },
    });
    expect(() => temporalConnectionOptions(peerEndpoint(peers[0]), readFile, 'peer eu')).toThrow(
      'peer eu: the client private key file /pki/gone.key cannot be read',
    );
    expect(parsePeers([{ name: 'eu', temporalAddress: 'temporal.eu:7233', tls: { serverName: 'a b' } }], 'us').problems).toEqual([
      'peers[0].tls.serverName: "a b" must be a DNS name',
    ]);
  });
});
