// Candidate nodes for requests, read through the fit indexes and locked with SKIP LOCKED: every
// page a transaction needs at one moment (any number of types, request shapes and policies) in one
// statement, so a batch pays one round trip for its candidates, not one per shape.
import { sql, type RawBuilder, type Transaction } from 'kysely';
import type { Database } from '../../db/schema';
import { PREPARED } from '../../db/connection';
import type { PlacementPolicyName, ResourceRequest } from '../../api/types';
import type { CandidateNode } from '../../scheduling/placement';
import { candidatePageSize, hostNeed, wholeDevicesPerNode } from '../../scheduling/geometry';

type Trx = Transaction<Database>;

/** Fitting nodes per type the fragmentation-aware policy samples its candidates from (index order). */
export const FGD_SAMPLE_WINDOW = 1024;

/** One page to read: fitting nodes of one type for one request shape, in its policy's order. */
export interface CandidatePage {
  type: string;
  request: ResourceRequest;
  policy: PlacementPolicyName;
  candidateLimit: number;
}

type FitColumn = 'free_whole' | 'max_partial';

/** One range scan of a page: its fit index, the least it must hold there, and its filters. */
interface Scan {
  page: number;
  type: string;
  min: number;
  cpu: number;
  memory: number;
  labels: string;
  limit: number;
}

export interface CandidateRow {
  page: number;
  id: number;
  name: string;
  pod: string;
  rack: string;
  accelerator_type: string;
  free_milli: number[];
  free_cpu_milli: number | null;
  free_memory_mib: number | null;
  spot: boolean;
  price_per_device_hour: number;
}

/** The fit filter on `nodes` for the scan row `t`, with `fit` the index column. Nodes short of the host CPU or memory are filtered on the same range scan; NULL free amounts are untracked: room for anything. */
const fitting = (fit: FitColumn) =>
  sql.raw(`nodes.accelerator_type = t.type AND nodes.state = 'ready' AND nodes.${fit} >= t.min
    ${fit === 'max_partial' ? 'AND nodes.max_partial > 0' : ''}
    AND (t.cpu = 0 OR nodes.free_cpu_milli IS NULL OR nodes.free_cpu_milli >= t.cpu)
    AND (t.memory = 0 OR nodes.free_memory_mib IS NULL OR nodes.free_memory_mib >= t.memory)
    AND (t.labels = '{}' OR nodes.labels @> t.labels::jsonb)
    AND nodes.id <> ALL(x.ids)`);

/** The order a policy reads fitting nodes in (FGD's random sample of the first window is its own filter). */
function ordering(policy: PlacementPolicyName, fit: FitColumn): RawBuilder<unknown> {
  switch (policy) {
    case 'first-fit':
      return sql.raw('ORDER BY nodes.id');
    case 'random-fit':
      return sql.raw('ORDER BY random()');
    case 'fgd':
    case 'fgd-host':
      // FGD scores every candidate itself, so it reads a random sample rather than the fit
      // index's order, which would hand it best-fit's choices only. The sample is drawn from the
      // first FGD_SAMPLE_WINDOW fitting nodes in index order, so the rows read stay bounded
      // whatever the fleet size (and unlocked: only the sample is locked).
      return sql`AND nodes.id IN (SELECT w.id FROM (SELECT nodes.id FROM nodes WHERE ${fitting(fit)}
        ORDER BY nodes.${sql.raw(fit)}, nodes.id LIMIT ${sql.lit(FGD_SAMPLE_WINDOW)}) w ORDER BY random() LIMIT t.lim)`;
    default:
      return sql.raw(`ORDER BY nodes.${fit}, nodes.id`);
  }
}

/** One branch of the read: every scan of one (policy, fit index), each a bounded range scan joined laterally. */
function branch(policy: PlacementPolicyName, fit: FitColumn, scans: Scan[]): RawBuilder<CandidateRow> {
  const col = <K extends keyof Scan>(k: K) => scans.map((s) => s[k]);
  return sql<CandidateRow>`(SELECT t.page, c.* FROM x, unnest(${col('page')}::int[], ${col('type')}::text[], ${col('min')}::int[],
      ${col('cpu')}::int[], ${col('memory')}::int[], ${col('labels')}::text[], ${col('limit')}::int[])
      AS t(page, type, min, cpu, memory, labels, lim)
    CROSS JOIN LATERAL (
      SELECT nodes.id, nodes.name, nodes.pod, nodes.rack, nodes.accelerator_type, nodes.free_milli, nodes.free_cpu_milli,
        nodes.free_memory_mib, nodes.spot, nodes.price_per_device_hour
      FROM nodes WHERE ${fitting(fit)} ${ordering(policy, fit)}
      LIMIT t.lim FOR UPDATE OF nodes SKIP LOCKED) c)`;
}

/**
 * The statement reading the next page of candidates for each of `pages`, past the nodes in
 * `exclude`: one bounded range scan per page and fit index, joined laterally over parameter
 * arrays, and locked with SKIP LOCKED so concurrent allocators do not queue behind each other on
 * hot rows. A request for shares reads nodes with a partly used device that fits it, then whole
 * free devices. Its rows are `CandidateRow`s; `candidatesOf` turns them into pages.
 */
export function candidatePagesQuery(pages: readonly CandidatePage[], exclude: readonly number[] = []): RawBuilder<CandidateRow> {
  const groups = new Map<string, { policy: PlacementPolicyName; fit: FitColumn; scans: Scan[] }>();
  const add = (policy: PlacementPolicyName, fit: FitColumn, scan: Scan) => {
    const key = `${policy}|${fit}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { policy, fit, scans: [] }));
    g.scans.push(scan);
  };
  pages.forEach(({ type, request, policy, candidateLimit }, page) => {
    const host = hostNeed(request);
    const labels = request.nodeLabels && Object.keys(request.nodeLabels).length ? JSON.stringify(request.nodeLabels) : '{}';
    const limit = candidatePageSize(request, candidateLimit);
    const scan = { page, type, cpu: host.cpu, memory: host.memory, labels, limit };
    if (request.devicesPerWorker === 0) add(policy, 'max_partial', { ...scan, min: request.milliPerWorker ?? 1000 });
    add(policy, 'free_whole', { ...scan, min: wholeDevicesPerNode(request) });
  });
  // Shares' partly used devices first, so they fill before whole devices are split.
  const ordered = [...groups.values()].sort((a, b) => (a.fit === b.fit ? 0 : a.fit === 'max_partial' ? -1 : 1));
  const union = sql.join(
    ordered.map((g) => branch(g.policy, g.fit, g.scans)),
    sql` UNION ALL `,
  );
  return sql<CandidateRow>`WITH x AS (SELECT ${[...exclude]}::int[] AS ids) ${union}`;
}

/** Each page's nodes from the rows of `candidatePagesQuery`, in the order read (a node once per page). */
export function candidatesOf(rows: readonly CandidateRow[], pages: number): CandidateNode[][] {
  const out: CandidateNode[][] = Array.from({ length: pages }, () => []);
  const seen = out.map(() => new Set<number>());
  for (const r of rows) {
    if (seen[r.page].has(r.id)) continue;
    seen[r.page].add(r.id);
    out[r.page].push({
      id: r.id,
      name: r.name,
      pod: r.pod,
      rack: r.rack,
      freeMilli: r.free_milli,
      freeCpuMilli: r.free_cpu_milli ?? undefined,
      freeMemoryMib: r.free_memory_mib ?? undefined,
      ...(r.spot ? { spot: true } : {}),
      ...(r.price_per_device_hour ? { pricePerDeviceHour: r.price_per_device_hour } : {}),
    });
  }
  return out;
}

/** The next page of candidates for each of `pages`, past the nodes in `exclude`, in one statement (`candidatePagesQuery`). */
export async function findCandidatePages(
  trx: Trx,
  pages: readonly CandidatePage[],
  exclude: readonly number[] = [],
): Promise<CandidateNode[][]> {
  // Prepared: the text depends only on which (policy, fit) branches appear; every value is a parameter.
  const rows = await sql<CandidateRow>`${sql.raw(PREPARED)}${candidatePagesQuery(pages, exclude)}`.execute(trx);
  return candidatesOf(rows.rows, pages.length);
}
