// `npm run migrate`: creates the database named by DATABASE_URL if needed and applies all migrations.
import { databaseUrl, ensureDatabase, migrateToLatest, openDatabase } from './connection';

async function main(): Promise<void> {
  const url = databaseUrl();
  await ensureDatabase(url);
  const db = openDatabase(url, 1);
  try {
    const applied = await migrateToLatest(db);
    console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
  } finally {
    await db.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
