// Each test file gets its own freshly migrated database, so files run in parallel.
import type { Kysely } from 'kysely';
import { dropDatabase, ensureDatabase, migrateToLatest, openDatabase } from '../../db/connection';
import type { Database } from '../../db/schema';

export interface TestDatabase {
  url: string;
  db: Kysely<Database>;
  drop(): Promise<void>;
}

export async function createTestDatabase(tag: string, poolSize = 10): Promise<TestDatabase> {
  const base = new URL(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  base.pathname = `/sched_test_${tag}_${process.pid}_${Date.now() % 100000}`;
  const url = base.toString();
  await dropDatabase(url);
  await ensureDatabase(url);
  const db = openDatabase(url, poolSize);
  await migrateToLatest(db);
  return {
    url,
    db,
    async drop() {
      await db.destroy();
      await dropDatabase(url);
    },
  };
}
