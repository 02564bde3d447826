// Opens the scheduler database, creates it when missing, and applies the migrations in db/migrations.
import { Kysely, Migrator, PostgresDialect, type Migration, type MigrationProvider } from 'kysely';
import { Client, Pool } from 'pg';
import type { Database } from './schema';
import * as m0001 from './migrations/0001_inventory';
import * as m0002 from './migrations/0002_lifecycle';
import * as m0003 from './migrations/0003_preemption';
import * as m0004 from './migrations/0004_host_resources';
import * as m0005 from './migrations/0005_statement_triggers';
import * as m0006 from './migrations/0006_global';
import * as m0007 from './migrations/0007_reliability';
import * as m0008 from './migrations/0008_queue_index';
import * as m0009 from './migrations/0009_quota_usage';
import * as m0010 from './migrations/0010_service';
import * as m0011 from './migrations/0011_providers';
import * as m0012 from './migrations/0012_capacity_by_key';

export const DEFAULT_DATABASE_URL = 'postgres://postgres@127.0.0.1:5432/scheduler';

/** Migrations are listed here (not read from disk) so bundlers and ts runners resolve them alike. */
const migrations: Record<string, Migration> = {
  '0001_inventory': m0001,
  '0002_lifecycle': m0002,
  '0003_preemption': m0003,
  '0004_host_resources': m0004,
  '0005_statement_triggers': m0005,
  '0006_global': m0006,
  '0007_reliability': m0007,
  '0008_queue_index': m0008,
  '0009_quota_usage': m0009,
  '0010_service': m0010,
  '0011_providers': m0011,
  '0012_capacity_by_key': m0012,
};
const provider: MigrationProvider = { getMigrations: async () => migrations };

export function databaseUrl(): string {
  return process.env.DATABASE_URL ?? DEFAULT_DATABASE_URL;
}

export function openDatabase(url: string = databaseUrl(), poolSize = 10): Kysely<Database> {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool: resilientPool(url, poolSize) }) });
}

/**
 * Marks a statement to run as a named prepared statement: parsed once per connection, and
 * planned once PostgreSQL finds its generic plan as cheap as a custom one. Only for statements
 * that reach every table by key (a key parameter, or the rows of an unnest of parameter arrays
 * joined by key), whose generic plan is the custom one; a statement whose best plan depends on
 * how many values it is given (`id = ANY($1)` joined to a large table, as `lockAndRead` is) is
 * better planned afresh each time.
 */
export const PREPARED = '/* prepared */ ';

/** A pg client that runs statements starting with PREPARED as named prepared statements (named by their text's hash). */
class PreparingClient extends Client {
  // pg's query() has a dozen overloads; this forwards whatever it was given, unchanged unless marked.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  override query(...args: any[]): any {
    const [text, values] = args as [unknown, unknown];
    if (typeof text === 'string' && text.startsWith(PREPARED) && (values === undefined || Array.isArray(values)))
      return super.query({ name: `p${statementHash(text)}`, text, values: values as unknown[] | undefined });
    return (super.query as (...a: unknown[]) => unknown)(...args);
  }
}

/** FNV-1a of a statement's text: one name per distinct text, as a pg connection requires. */
function statementHash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return `${h.toString(36)}_${text.length}`;
}

/**
 * Bounds on every connection, so a failover or a half-open socket fails a query (which its caller
 * retries) instead of wedging the pool: connecting gives up after 10 s; TCP keepalive finds a dead
 * peer; a statement is cancelled after 5 min and a lock wait after 1 min; a session idle inside a
 * transaction for 1 min is ended by the server.
 */
export const POOL_LIMITS = {
  connectionTimeoutMillis: 10_000,
  keepAlive: true,
  keepAliveInitialDelayMillis: 10_000,
  statement_timeout: 300_000,
  lock_timeout: 60_000,
  idle_in_transaction_session_timeout: 60_000,
} as const;

/**
 * A pool that survives lost connections (server restart, terminated backend): the query in
 * flight fails with its error and is retried by its caller, instead of an unhandled 'error'
 * event on the client or pool taking the whole process down.
 */
export function resilientPool(url: string, poolSize: number): Pool {
  const pool = new Pool({ connectionString: url, max: poolSize, Client: PreparingClient, ...POOL_LIMITS });
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

/** Creates the database named in `url` if it does not exist (connecting to `postgres` to do so). */
export async function ensureDatabase(url: string): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  if (!/^[A-Za-z0-9_]+$/.test(name)) throw new Error(`database name ${JSON.stringify(name)} must match [A-Za-z0-9_]+`);
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const pool = new Pool({ connectionString: admin.toString(), max: 1 });
  try {
    const found = await pool.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount === 0) {
      try {
        await pool.query(`CREATE DATABASE "${name}"`);
      } catch (err) {
        // Another process created it between our check and our create.
        if ((err as { code?: string }).code !== '42P04') throw err;
      }
    }
  } finally {
    await pool.end();
  }
}

export async function dropDatabase(url: string): Promise<void> {
  const admin = new URL(url);
  const name = decodeURIComponent(admin.pathname.slice(1));
  admin.pathname = '/postgres';
  const pool = new Pool({ connectionString: admin.toString(), max: 1 });
  try {
    await pool.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
  } finally {
    await pool.end();
  }
}

export async function migrateToLatest(db: Kysely<Database>): Promise<string[]> {
  // 0008 was written after 0009 was applied in places: a database that has 0009 applies 0008 too.
  const migrator = new Migrator({ db, provider, allowUnorderedMigrations: true });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw new Error(`migration failed: ${String(error)}`, { cause: error });
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}
