// Every pooled connection carries bounds, so a failover or a dead socket fails a query instead
// of wedging the pool.
import { sql } from 'kysely';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { openDatabase } from '../../db/connection';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase('conn');
});
afterAll(async () => {
  await t?.drop();
});

test('statements, lock waits and idle transactions are bounded on every pooled connection', async () => {
  const db = openDatabase(t.url, 2);
  try {
    const r = await sql<{ s: string; l: string; i: string }>`
      SELECT current_setting('statement_timeout') AS s, current_setting('lock_timeout') AS l,
        current_setting('idle_in_transaction_session_timeout') AS i`.execute(db);
    expect(r.rows[0]).toEqual({ s: '5min', l: '1min', i: '1min' });
  } finally {
    await db.destroy();
  }
});
