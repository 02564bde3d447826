// What a measurement cost the machine, split by who spent it: this process (the in-process worker
// with the bench's own client), the Temporal server process, and the PostgreSQL backends serving
// the bench database (CPU from /proc, statement time and commits from pg_stat_database). Read
// around a phase so a job's cost can be set beside JobShapeWorkflow's, part by part.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { sql, type Kysely } from 'kysely';
import type { Database } from '../db/schema';

/** Clock ticks per second of /proc's CPU times (100 on Linux almost always; asked once). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU ms (user + system) a process has used so far; NaN when /proc cannot tell (it ended, or no /proc). */
export function processCpuMs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime the 14th, stime the 15th.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** What a phase used, in ms of CPU or statement time, and commits. */
export interface Usage {
  wallMs: number;
  /** This process: the worker (workflows, activities, the SDK's core threads) and the bench's client. */
  processCpuMs: number;
  /** The Temporal server process. */
  serverCpuMs: number;
  /** The PostgreSQL backends connected to the bench database (other databases' sessions are not counted). */
  dbCpuMs: number;
  /** Statement time of those backends (pg_stat_database.active_time): includes lock and I/O waits. */
  dbActiveMs: number;
  dbXacts: number;
  /** The machine's 1-minute load average as the phase ended (everything on it, not only this bench). */
  load: number;
}

/**
 * Meters a phase: started before it, ticked now and then (a database backend that closes between
 * ticks loses what it used since the last one), stopped after it.
 */
export class UsageMeter {
  private readonly backends = new Map<number, { first: number; last: number }>();
  private readonly start = { wall: 0, process: 0, server: 0, activeMs: 0, xacts: 0 };
  private timer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly db: Kysely<Database>,
    private readonly serverPid: number | undefined,
  ) {}

  static async start(db: Kysely<Database>, serverPid: number | undefined): Promise<UsageMeter> {
    const m = new UsageMeter(db, serverPid);
    await m.tick(true);
    const s = await m.dbStats();
    const cpu = process.cpuUsage();
    Object.assign(m.start, {
      wall: performance.now(),
      process: (cpu.user + cpu.system) / 1000,
      server: processCpuMs(serverPid),
      activeMs: s.activeMs,
      xacts: s.xacts,
    });
    m.timer = setInterval(() => void m.tick(false).catch(() => undefined), 1000);
    return m;
  }

  /** Records each backend's CPU so far (a backend first seen after the start counts from zero). */
  private async tick(initial: boolean): Promise<void> {
    const r = await sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE datname = current_database()`.execute(this.db);
    for (const { pid } of r.rows) {
      const cpu = processCpuMs(pid);
      if (!Number.isFinite(cpu)) continue;
      const seen = this.backends.get(pid);
      if (seen) seen.last = cpu;
      else this.backends.set(pid, { first: initial ? cpu : 0, last: cpu });
    }
  }

  private async dbStats(): Promise<{ activeMs: number; xacts: number }> {
    const r = await sql<{ active_time: number | null; xact_commit: string }>`
      SELECT active_time, xact_commit FROM pg_stat_database WHERE datname = current_database()`.execute(this.db);
    return { activeMs: Number(r.rows[0]?.active_time ?? NaN), xacts: Number(r.rows[0]?.xact_commit ?? NaN) };
  }

  async stop(): Promise<Usage> {
    clearInterval(this.timer);
    await this.tick(false);
    const s = await this.dbStats();
    const cpu = process.cpuUsage();
    let dbCpuMs = 0;
    for (const b of this.backends.values()) dbCpuMs += b.last - b.first;
    return {
      wallMs: performance.now() - this.start.wall,
      processCpuMs: (cpu.user + cpu.system) / 1000 - this.start.process,
      serverCpuMs: processCpuMs(this.serverPid) - this.start.server,
      dbCpuMs,
      dbActiveMs: s.activeMs - this.start.activeMs,
      dbXacts: s.xacts - this.start.xacts,
      load: os.loadavg()[0],
    };
  }
}
