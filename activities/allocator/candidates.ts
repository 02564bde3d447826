// Candidate nodes for a request, read through the fit indexes and locked with SKIP LOCKED.
import { sql, type SelectQueryBuilder, type Transaction } from 'kysely';
import type { Database } from '../../db/schema';
import type { PlacementPolicyName, ResourceRequest } from '../../api/types';
import type { CandidateNode } from '../../scheduling/placement';
import { candidatePageSize, hostNeed, wholeDevicesPerNode } from '../../scheduling/geometry';

type Trx = Transaction<Database>;

/** Fitting nodes per type the fragmentation-aware policy samples its candidates from (index order). */
export const FGD_SAMPLE_WINDOW = 1024;

/**
 * Candidate nodes for each of `types`, read in one statement through the fit indexes (one
 * bounded range scan per type, joined laterally) and locked with SKIP LOCKED so concurrent
 * allocators do not queue behind each other on hot rows. Nodes short of the host CPU or memory
 * one worker needs are filtered on the same range scan.
 */
export async function findCandidates(
  trx: Trx,
  types: string[],
  request: ResourceRequest,
  policy: PlacementPolicyName,
  candidateLimit: number,
  exclude: number[] = [],
): Promise<Map<string, CandidateNode[]>> {
  const limit = candidatePageSize(request, candidateLimit);
  const whole = request.devicesPerWorker > 0;
  const perNode = wholeDevicesPerNode(request);
  const host = hostNeed(request);
  const scan = (fitColumn: 'free_whole' | 'max_partial', min: number) =>
    trx
      .selectFrom(sql<{ type: string }>`(SELECT unnest(${types}::text[]) AS type)`.as('t'))
      .innerJoinLateral(
        (eb) => {
          const fitting = <Q extends SelectQueryBuilder<Database & { t: { type: string } }, 'nodes' | 't', object>>(q: Q): Q => {
            let f = q
              .whereRef('nodes.accelerator_type', '=', 't.type')
              .where('nodes.state', '=', 'ready')
              .where(`nodes.${fitColumn}`, '>=', min);
            // NULL free amounts are untracked: room for anything.
            if (host.cpu > 0) f = f.where((w) => w.or([w('nodes.free_cpu_milli', 'is', null), w('nodes.free_cpu_milli', '>=', host.cpu)]));
            if (host.memory > 0)
              f = f.where((w) => w.or([w('nodes.free_memory_mib', 'is', null), w('nodes.free_memory_mib', '>=', host.memory)]));
            if (request.nodeLabels && Object.keys(request.nodeLabels).length)
              f = f.where('nodes.labels', '@>', JSON.stringify(request.nodeLabels) as never);
            if (exclude.length) f = f.where(sql<boolean>`nodes.id <> ALL(${exclude}::int[])`);
            return f as Q;
          };
          let q = fitting(
            eb
              .selectFrom('nodes')
              .select([
                'id',
                'name',
                'pod',
                'rack',
                'accelerator_type',
                'free_milli',
                'free_cpu_milli',
                'free_memory_mib',
                'spot',
                'price_per_device_hour',
              ]),
          );
          switch (policy) {
            case 'first-fit':
              q = q.orderBy('id');
              break;
            case 'random-fit':
              q = q.orderBy((o) => o.fn('random', []));
              break;
            case 'fgd':
              // FGD scores every candidate itself, so it reads a random sample rather than the fit
              // index's order, which would hand it best-fit's choices only. The sample is drawn from
              // the first FGD_SAMPLE_WINDOW fitting nodes in index order, so the rows read stay
              // bounded whatever the fleet size (and unlocked: only the sample is locked).
              q = q.where('nodes.id', 'in', (sub) =>
                sub
                  .selectFrom((inner) =>
                    fitting(inner.selectFrom('nodes').select('nodes.id'))
                      .orderBy(`nodes.${fitColumn}`)
                      .orderBy('nodes.id')
                      .limit(FGD_SAMPLE_WINDOW)
                      .as('w'),
                  )
                  .select('w.id')
                  .orderBy((o) => o.fn('random', []))
                  .limit(limit),
              );
              break;
            default:
              q = q.orderBy(fitColumn).orderBy('id');
          }
          return q.limit(limit).forUpdate().skipLocked().as('c');
        },
        (join) => join.onTrue(),
      )
      .selectAll('c')
      .execute();
  const rows = [];
  if (!whole) rows.push(...(await scan('max_partial', request.milliPerWorker ?? 1000)));
  const seen = new Set(rows.map((r) => r.id));
  for (const r of await scan('free_whole', perNode)) if (!seen.has(r.id)) rows.push(r);
  const out = new Map<string, CandidateNode[]>(types.map((t) => [t, []]));
  for (const r of rows)
    out.get(r.accelerator_type)!.push({
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
  return out;
}
