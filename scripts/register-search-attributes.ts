// Registers the scheduler's custom search attributes (api/search-attributes.ts) in a namespace of
// a real Temporal cluster, through the operator service: `npm run temporal:search-attributes`
// (the TEMPORAL_* connection variables; `--namespace NS` may repeat, default TEMPORAL_NAMESPACE).
// Idempotent: attributes already present with the right type are left alone; one present with
// another type is a clash that stops the run before anything is added. (Temporal Cloud refuses
// the operator call: there, add them with `tcld namespace search-attributes add`.)
import fs from 'node:fs';
import { Connection } from '@temporalio/client';
import { TypedSearchAttributes, type SearchAttributeType } from '@temporalio/common';
import { SEARCH_ATTRIBUTES } from '../api/search-attributes';
import { describeEndpoint, temporalConnectionOptions, temporalEndpointFromEnv } from '../api/temporal-connection';

/** The server's IndexedValueType numbers (temporal.api.enums.v1), by the SDK's attribute type. */
const INDEXED_VALUE_TYPE: Record<SearchAttributeType, number> = {
  TEXT: 1,
  KEYWORD: 2,
  INT: 3,
  DOUBLE: 4,
  BOOL: 5,
  DATETIME: 6,
  KEYWORD_LIST: 7,
};
const TYPE_NAME = new Map(
  Object.entries(INDEXED_VALUE_TYPE).map(([k, v]) => [v, TypedSearchAttributes.toMetadataType(k as SearchAttributeType)]),
);

export interface Registration {
  namespace: string;
  added: string[];
  present: string[];
}

/** Adds the missing attributes of `wanted` to `namespace`; refuses, adding nothing, on any type clash. */
export async function registerSearchAttributes(
  connection: Connection,
  namespace: string,
  wanted: ReadonlyArray<{ name: string; type: SearchAttributeType }> = SEARCH_ATTRIBUTES,
): Promise<Registration> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const custom = existing.customAttributes ?? {};
  const system = existing.systemAttributes ?? {};
  const clashes: string[] = [];
  const missing: Record<string, number> = {};
  const present: string[] = [];
  for (const key of wanted) {
    const want = INDEXED_VALUE_TYPE[key.type];
    const have = custom[key.name] ?? system[key.name];
    const kind = key.name in system ? 'a system attribute' : 'a custom attribute';
    if (have === undefined || have === null) missing[key.name] = want;
    else if (Number(have) === want) present.push(key.name);
    else
      clashes.push(
        `${key.name} is ${kind} of type ${TYPE_NAME.get(Number(have)) ?? String(have)} in ${namespace}, the scheduler needs ${TYPE_NAME.get(want)}`,
      );
  }
  if (clashes.length)
    throw new Error(
      `search attributes not registered (nothing was added): ${clashes.join('; ')}. ` +
        `An attribute's type cannot change in place: remove the old one (temporal operator search-attribute remove) or use another namespace.`,
    );
  const added = Object.keys(missing);
  if (added.length) await connection.operatorService.addSearchAttributes({ namespace, searchAttributes: missing });
  return { namespace, added, present };
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const namespaces: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--namespace' && args[i + 1]) namespaces.push(args[++i]);
    else throw new Error(`unknown argument ${args[i]}: usage: register-search-attributes [--namespace NS]...`);
  }
  const endpoint = temporalEndpointFromEnv(process.env, { address: '127.0.0.1:7233', namespace: 'sched-local' });
  if (!namespaces.length) namespaces.push(endpoint.namespace);
  const connection = await Connection.connect({ ...temporalConnectionOptions(endpoint, fs.readFileSync), connectTimeout: 10_000 });
  try {
    console.log(
      `registering ${SEARCH_ATTRIBUTES.length} search attributes at ${describeEndpoint({ ...endpoint, namespace: namespaces.join(', ') })}`,
    );
    for (const ns of namespaces) {
      const r = await registerSearchAttributes(connection, ns);
      console.log(
        `${ns}: added ${r.added.length ? r.added.join(', ') : 'none'}; already present ${r.present.length ? r.present.join(', ') : 'none'}`,
      );
    }
  } finally {
    await connection.close();
  }
}

if (require.main === module)
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
