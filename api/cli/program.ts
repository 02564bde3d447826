// The `sched` command line: every command is one or two calls to the scheduler's HTTP API (never
// the database), printed as a table or fields for people, or as the API's JSON with --json.
// Exit codes: 0 done; 1 the API refused (its reason and each field's rule are printed); 2 bad
// usage or configuration; 3 the API could not be reached.
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { FleetSummary } from '../http/fleet';
import type { JobSummary, NodeView, QuotaView, ReservationView, WhyResponse } from '../http/schemas';
import type { JobStatus } from '../types';
import { SchedApi, CliApiError, CliUnreachableError, type Query } from './client';
import { CliConfigError, configPath, resolveConfig } from './config';
import { percent, renderFields, renderTable, shortDuration, type Cell } from './table';

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  env: Record<string, string | undefined>;
  /** A file's text, undefined when it does not exist; `-` is standard input. */
  readFile(path: string): string | undefined;
  now(): Date;
}

export const EXIT = { ok: 0, refused: 1, usage: 2, unreachable: 3 } as const;

/** A mistake in the command line found before calling the API. */
export class CliUsageError extends Error {}

interface GlobalOpts {
  json?: boolean;
  config?: string;
  apiUrl?: string;
}

const int =
  (name: string, min = 0) =>
  (v: string) => {
    if (!/^-?\d+$/.test(v) || Number(v) < min)
      throw new InvalidArgumentError(`${name} must be a whole number ≥ ${min}, not ${JSON.stringify(v)}`);
    return Number(v);
  };
/** A whole number, or `none` (no limit: sent as null; commander itself turns a null parse into ''). */
const intOrNone = (name: string) => (v: string) => (v === 'none' ? 'none' : int(name)(v));
const noneAsNull = (v: number | 'none'): number | null => (v === 'none' ? null : v);

/** An ISO timestamp, `now`, or `+<n>s|m|h|d` from now. */
export function timeArg(v: string, now: Date): string {
  if (v === 'now') return now.toISOString();
  const rel = /^\+(\d+)([smhd])$/.exec(v);
  if (rel) {
    const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[rel[2] as 's' | 'm' | 'h' | 'd'];
    return new Date(now.getTime() + Number(rel[1]) * unit).toISOString();
  }
  const t = Date.parse(v);
  if (Number.isNaN(t)) throw new InvalidArgumentError(`${JSON.stringify(v)} is not a time: use an ISO timestamp, now, or +30m / +2h / +1d`);
  return new Date(t).toISOString();
}

const jobRow = (j: JobSummary, now: Date): Cell[] => [
  j.jobId,
  j.tenant,
  j.state,
  j.tier,
  j.priority,
  j.acceleratorTypes.join('|'),
  j.region,
  shortDuration((now.getTime() - Date.parse(j.createdAt)) / 1000),
  j.waitingReason,
];

function statusFields(s: JobStatus): Array<[string, Cell]> {
  return [
    ['phase', s.phase],
    ['tier', s.tier],
    ['priority', s.priority],
    ['region', s.region],
    ['epoch', s.epoch],
    ['attempt', s.attempt],
    ['waiting', s.waitingReason],
    ['placement', s.placement?.workers.map((w) => `${w.nodeName}[${w.deviceIdx.join(',')}]`).join(' ')],
    ['cancel requested', s.cancelRequested ? 'yes' : undefined],
    ['last requeue', s.lastRequeue],
    ['handoff', s.handoff ? `${s.handoff.state} to ${s.handoff.peer}${s.handoff.reason ? ` (${s.handoff.reason})` : ''}` : undefined],
  ];
}

export function buildProgram(io: CliIo): Command {
  const program = new Command('sched')
    .description("the GPU/NPU scheduler's command line, over its HTTP API")
    .option('--json', "print the API's JSON (for scripts) instead of tables")
    .option('--config <path>', 'config file {"url", "key"} (default ~/.config/sched/config.json)')
    .option('--api-url <url>', 'the API address (default: SCHED_API_URL, else the config file)')
    .addHelpText(
      'after',
      '\nThe key comes from SCHED_API_KEY or the config file\'s "key".\nExit codes: 0 done, 1 refused by the API, 2 bad usage or configuration, 3 API unreachable.',
    )
    .showHelpAfterError('(sched --help for usage)')
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .exitOverride();

  const globals = (): GlobalOpts => program.opts<GlobalOpts>();
  const api = (): SchedApi => {
    const g = globals();
    const file = configPath(io.env, g.config);
    const cfg = resolveConfig({
      env: io.env,
      file: file ? { path: file, text: io.readFile(file), explicit: Boolean(g.config) } : undefined,
      urlFlag: g.apiUrl,
    });
    if (!cfg.key)
      throw new CliConfigError(
        `no API key: set SCHED_API_KEY or put "key" in ${file ?? '~/.config/sched/config.json'} (an admin creates keys with POST /v1/admin/api-keys)`,
      );
    return new SchedApi(cfg.url, cfg.key);
  };
  /** Prints `json` as JSON with --json, else what `human` renders. */
  const show = <T>(json: T, human: (v: T) => string) => io.out(globals().json ? `${JSON.stringify(json, null, 2)}\n` : human(json));

  // --- jobs ---
  program
    .command('submit')
    .description('submit a job from a JSON spec (idempotent on its jobId)')
    .requiredOption('-f, --file <path>', 'the job spec as JSON (- for standard input)')
    .action(async (o: { file: string }) => {
      const text = io.readFile(o.file);
      if (text === undefined) throw new CliUsageError(`${o.file}: no such file`);
      let spec: unknown;
      try {
        spec = JSON.parse(text);
      } catch (err) {
        throw new CliUsageError(`${o.file}: not JSON (${(err as Error).message})`);
      }
      const r = await api().call<{ jobId: string; tenant: string; workflowId: string; region: string; created: boolean }>(
        'POST',
        '/v1/jobs',
        {
          body: spec,
        },
      );
      show(
        r,
        (v) =>
          `${v.created ? 'submitted' : 'already submitted (same spec)'}: job ${v.jobId} of ${v.tenant} in region ${v.region}, workflow ${v.workflowId}\n`,
      );
    });

  program
    .command('ls')
    .description('list jobs, newest first')
    .addOption(new Option('--state <state>', 'only jobs in this state'))
    .addOption(new Option('--tier <tier>', 'only this tier').choices(['premium', 'standard', 'basic']))
    .option('--type <acceleratorType>', 'only jobs asking for this accelerator type')
    .option('--region <region>', 'only jobs now in this region')
    .option('--tenant <path>', 'only this tenant subtree')
    .option('--limit <n>', 'rows per page (1..500)', int('--limit', 1))
    .option('--cursor <cursor>', "start after the previous page's cursor")
    .option('--all', 'follow every page')
    .action(
      async (o: {
        state?: string;
        tier?: string;
        type?: string;
        region?: string;
        tenant?: string;
        limit?: number;
        cursor?: string;
        all?: boolean;
      }) => {
        const client = api();
        const query: Query = {
          state: o.state,
          tier: o.tier,
          acceleratorType: o.type,
          region: o.region,
          tenant: o.tenant,
          limit: o.limit,
          cursor: o.cursor,
        };
        const jobs: JobSummary[] = [];
        let next: string | undefined;
        do {
          const page = await client.call<{ jobs: JobSummary[]; nextCursor?: string }>('GET', '/v1/jobs', {
            query: { ...query, cursor: next ?? o.cursor },
          });
          jobs.push(...page.jobs);
          next = page.nextCursor;
        } while (o.all && next);
        show({ jobs, ...(next ? { nextCursor: next } : {}) }, (v) => {
          const now = io.now();
          const table = renderTable(
            ['JOB', 'TENANT', 'STATE', 'TIER', 'PRIO', 'TYPES', 'REGION', 'AGE', 'WAITING REASON'],
            v.jobs.map((j) => jobRow(j, now)),
            '(no jobs)',
          );
          return v.nextCursor ? `${table}more: add --cursor ${v.nextCursor} (or --all)\n` : table;
        });
      },
    );

  program
    .command('status')
    .description("a job's status where it is now, and its database row")
    .argument('<jobId>')
    .action(async (jobId: string) => {
      const v = await api().call<{ jobId: string; tenant: string; workflowId: string; status?: JobStatus; summary?: JobSummary }>(
        'GET',
        `/v1/jobs/${encodeURIComponent(jobId)}`,
      );
      show(v, () =>
        renderFields([
          ['job', v.jobId],
          ['tenant', v.tenant],
          ['workflow', v.workflowId],
          ...(v.status
            ? statusFields(v.status)
            : ([
                ['state', v.summary?.state],
                ['waiting', v.summary?.waitingReason ?? undefined],
                ['note', 'its workflow did not answer; this is the database row'],
              ] as Array<[string, Cell]>)),
        ]),
      );
    });

  program
    .command('why')
    .description('why a job waits, and what would let it go on')
    .argument('<jobId>')
    .action(async (jobId: string) => {
      const v = await api().call<WhyResponse>('GET', `/v1/jobs/${encodeURIComponent(jobId)}/why`);
      show(v, () => {
        const head = renderFields([
          ['job', v.jobId],
          ['state', v.state],
          ['waiting', v.waiting ? 'yes' : 'no'],
          ['reason', v.waitingReason],
          ['blocked by', v.blockedBy],
        ]);
        return v.unblock.length ? `${head}to unblock:\n${v.unblock.map((u) => `  - ${u}\n`).join('')}` : head;
      });
    });

  const jobAction = (name: 'cancel' | 'requeue', description: string, reasonRequired: boolean) =>
    program
      .command(name)
      .description(description)
      .argument('<jobId>')
      .addOption(new Option('--reason <text>', 'why (written to the audit log)').makeOptionMandatory(reasonRequired))
      .action(async (jobId: string, o: { reason?: string }) => {
        const s = await api().call<JobStatus>('POST', `/v1/jobs/${encodeURIComponent(jobId)}/${name}`, {
          body: o.reason !== undefined ? { reason: o.reason } : {},
        });
        show(s, () => `job ${jobId}: ${s.phase}${s.cancelRequested ? ' (cancel requested)' : ''}\n`);
      });
  jobAction('cancel', 'cancel a job (it releases what it holds)', false);
  jobAction('requeue', 'send a placed job back to the queue (its place in line kept)', true);

  program
    .command('priority')
    .description("change a job's priority within its tier")
    .argument('<jobId>')
    .argument('<priority>', 'the new priority (a whole number)', int('priority'))
    .option('--reason <text>', 'why (written to the audit log)')
    .action(async (jobId: string, priority: number, o: { reason?: string }) => {
      const s = await api().call<JobStatus>('POST', `/v1/jobs/${encodeURIComponent(jobId)}/priority`, {
        body: { priority, ...(o.reason !== undefined ? { reason: o.reason } : {}) },
      });
      show(s, () => `job ${jobId}: priority ${s.priority} (${s.phase})\n`);
    });

  // --- fleet ---
  program
    .command('top')
    .description('capacity by accelerator type and the queue by tier')
    .action(async () => {
      const f = await api().call<FleetSummary>('GET', '/v1/fleet');
      show(f, () => {
        const capacity = renderTable(
          ['TYPE', 'NODES', 'WHOLE', 'SHARED', 'FREE', 'CORDONED', 'DOWN', 'DEVICES', 'FREE DEVICES', 'USED'],
          f.types.map((t) => [
            t.acceleratorType,
            t.nodes.length,
            t.counts.whole,
            t.counts.shared,
            t.counts.free,
            t.counts.cordoned,
            t.counts.down,
            t.devices,
            t.freeDevices,
            percent(t.devices ? t.usedMilli / (t.devices * 1000) : 0),
          ]),
          '(no nodes)',
        );
        const queue = renderTable(
          ['TIER', 'WAITING', 'BY TYPE', 'OLDEST', 'HEAD JOB', 'HEAD REASON'],
          f.queue.map((q) => [
            q.tier,
            q.waiting,
            Object.entries(q.byType)
              .map(([t, n]) => `${n} ${t}`)
              .join(', '),
            q.jobs[0] ? shortDuration(q.jobs[0].waitingS) : undefined,
            q.jobs[0]?.jobId,
            q.jobs[0]?.waitingReason,
          ]),
        );
        return `region ${f.region} at ${f.at}\n\ncapacity\n${capacity}\nqueue\n${queue}`;
      });
    });

  program
    .command('nodes')
    .description("the region's nodes")
    .addOption(new Option('--state <state>', 'only nodes in this state').choices(['ready', 'cordoned', 'draining', 'down']))
    .option('--type <acceleratorType>', 'only this accelerator type')
    .action(async (o: { state?: string; type?: string }) => {
      const r = await api().call<{ nodes: NodeView[] }>('GET', '/v1/nodes', { query: { state: o.state, acceleratorType: o.type } });
      show(r, (v) =>
        renderTable(
          ['NODE', 'TYPE', 'STATE', 'DEVICES', 'FREE', 'POD', 'RACK', 'CLUSTER'],
          v.nodes.map((n) => [n.name, n.acceleratorType, n.state, n.deviceCount, n.freeDevices, n.pod, n.rack, n.cluster]),
          '(no nodes)',
        ),
      );
    });

  for (const [action, description] of [
    ['drain', 'cordon a node and send every job on it back to the queue'],
    ['cordon', 'stop new placements on a node (what runs there keeps running)'],
    ['uncordon', 'open a node to placements again'],
  ] as const)
    program
      .command(action)
      .description(description)
      .argument('<node>')
      .requiredOption('--reason <text>', 'why (written to the audit log)')
      .action(async (node: string, o: { reason: string }) => {
        const r = await api().call<{ node: string; state: string; requeued: string[]; unanswered?: string[] }>(
          'POST',
          `/v1/nodes/${encodeURIComponent(node)}/${action}`,
          { body: { reason: o.reason } },
        );
        show(
          r,
          (v) =>
            `node ${v.node}: ${v.state}${v.requeued.length ? `; requeued ${v.requeued.join(', ')}` : ''}` +
            `${v.unanswered?.length ? `; not yet answered: ${v.unanswered.join(', ')}` : ''}\n`,
        );
      });

  // --- quotas ---
  const quota = program.command('quota').description('quota rules: show (default), set, rm');
  const quotaTable = (v: { quotas: QuotaView[] }) =>
    renderTable(
      ['TENANT', 'TYPE', 'NOMINAL', 'BORROWING', 'LENDING', 'USED'],
      v.quotas.map((q) => [q.tenant, q.acceleratorType, q.nominal, q.borrowingLimit ?? 'none', q.lendingLimit ?? 'none', q.usedDevices]),
      '(no quota rules)',
    );
  quota
    .command('show', { isDefault: true })
    .description('the quota rules of your subtree and what each subtree holds now')
    .option('--tenant <path>', 'only this tenant subtree')
    .action(async (o: { tenant?: string }) => {
      const r = await api().call<{ quotas: QuotaView[] }>('GET', '/v1/admin/quotas', { query: { tenant: o.tenant } });
      show(r, quotaTable);
    });
  quota
    .command('set')
    .description('create or change a quota rule (checked against every other rule first)')
    .argument('<tenant>')
    .argument('<acceleratorType>')
    .requiredOption('--nominal <devices>', 'guaranteed devices', int('--nominal'))
    .option('--borrowing <devices>', 'most it may borrow above nominal, or none (no limit)', intOrNone('--borrowing'))
    .option('--lending <devices>', 'most of its nominal others may borrow, or none (no limit)', intOrNone('--lending'))
    .requiredOption('--reason <text>', 'why (written to the audit log)')
    .action(
      async (
        tenant: string,
        acceleratorType: string,
        o: { nominal: number; borrowing?: number | 'none'; lending?: number | 'none'; reason: string },
      ) => {
        const r = await api().call<QuotaView>('PUT', '/v1/admin/quotas', {
          body: {
            tenant,
            acceleratorType,
            nominal: o.nominal,
            ...(o.borrowing !== undefined ? { borrowingLimit: noneAsNull(o.borrowing) } : {}),
            ...(o.lending !== undefined ? { lendingLimit: noneAsNull(o.lending) } : {}),
            reason: o.reason,
          },
        });
        show(r, (q) => quotaTable({ quotas: [q] }));
      },
    );
  quota
    .command('rm')
    .description('remove a quota rule')
    .argument('<tenant>')
    .argument('<acceleratorType>')
    .requiredOption('--reason <text>', 'why (written to the audit log)')
    .action(async (tenant: string, acceleratorType: string, o: { reason: string }) => {
      const r = await api().call<unknown>('DELETE', '/v1/admin/quotas', { body: { tenant, acceleratorType, reason: o.reason } });
      show(r, () => `removed the ${acceleratorType} rule of ${tenant}\n`);
    });

  // --- reservations ---
  const reserve = program.command('reserve').description('reservations: create, ls (default), cancel');
  const reservationTable = (rows: ReservationView[]) =>
    renderTable(
      ['ID', 'TENANT', 'TYPE', 'DEVICES', 'STARTS', 'ENDS', 'STATE'],
      rows.map((r) => [r.id, r.tenant, r.acceleratorType, r.devices, r.startsAt, r.endsAt, r.state]),
      '(no reservations)',
    );
  reserve
    .command('ls', { isDefault: true })
    .description('reservations of your subtree')
    .option('--tenant <path>', 'only this tenant subtree')
    .addOption(new Option('--state <state>').choices(['pending', 'active', 'ended', 'cancelled']))
    .action(async (o: { tenant?: string; state?: string }) => {
      const r = await api().call<{ reservations: ReservationView[] }>('GET', '/v1/reservations', {
        query: { tenant: o.tenant, state: o.state },
      });
      show(r, (v) => reservationTable(v.reservations));
    });
  reserve
    .command('create')
    .description('hold devices of a type for a tenant over a window')
    .requiredOption('--id <id>', 'the reservation id (lowercase, digits, . _ -)')
    .requiredOption('--tenant <path>')
    .requiredOption('--type <acceleratorType>')
    .requiredOption('--devices <n>', 'devices held', int('--devices', 1))
    .requiredOption('--start <time>', 'ISO timestamp, now, or +30m / +2h / +1d', (v) => timeArg(v, io.now()))
    .requiredOption('--end <time>', 'ISO timestamp or +30m / +2h / +1d', (v) => timeArg(v, io.now()))
    .requiredOption('--reason <text>', 'why (written to the audit log)')
    .action(async (o: { id: string; tenant: string; type: string; devices: number; start: string; end: string; reason: string }) => {
      const r = await api().call<ReservationView>('POST', '/v1/reservations', {
        body: {
          id: o.id,
          tenant: o.tenant,
          acceleratorType: o.type,
          devices: o.devices,
          startsAt: o.start,
          endsAt: o.end,
          reason: o.reason,
        },
      });
      show(r, (v) => reservationTable([v]));
    });
  reserve
    .command('cancel')
    .description('cancel a reservation (its devices go back to everyone)')
    .argument('<id>')
    .requiredOption('--reason <text>', 'why (written to the audit log)')
    .action(async (id: string, o: { reason: string }) => {
      const r = await api().call<unknown>('POST', `/v1/reservations/${encodeURIComponent(id)}/cancel`, { body: { reason: o.reason } });
      show(r, () => `cancelled reservation ${id}\n`);
    });

  program
    .command('whoami')
    .description('who the API takes you for: subject, tenant subtree, role')
    .action(async () => {
      const r = await api().call<{ subject: string; kind: string; tenant: string; role: string }>('GET', '/v1/whoami');
      show(r, (v) =>
        renderFields([
          ['subject', v.subject],
          ['kind', v.kind],
          ['tenant', v.tenant],
          ['role', v.role],
        ]),
      );
    });

  return program;
}

/** Runs the command line and returns the exit code; every failure is printed to `io.err` in words. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version are not failures; commander has already printed the usage error.
      return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help'
        ? EXIT.ok
        : EXIT.usage;
    }
    if (err instanceof CliApiError) {
      io.err(`sched: ${err.describe()}\n`);
      return EXIT.refused;
    }
    if (err instanceof CliUnreachableError) {
      io.err(`sched: ${err.message}\n`);
      return EXIT.unreachable;
    }
    if (err instanceof CliConfigError || err instanceof CliUsageError) {
      io.err(`sched: ${err.message}\n`);
      return EXIT.usage;
    }
    io.err(`sched: unexpected error: ${(err as Error).stack ?? String(err)}\n`);
    return EXIT.refused;
  }
}
