// RegionSchedulerWorkflow: the one scheduling loop of a region. Submissions, releases and
// priority changes kick it; kicks arriving close together are debounced into one cycle, and a
// timer runs a cycle anyway so aging and missed kicks are never stuck. Node cordon / uncordon /
// drain are updates on it, so operators reach them from the Temporal CLI. It continues as new
// before its history grows long.
import {
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  patched,
  proxyActivities,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { SchedulerActivities } from '../activities';
import { NON_RETRYABLE_ERROR_TYPES } from '../api/errors';
import { validateReservation } from '../api/validation';
import {
  cordonUpdate,
  drainUpdate,
  kickSignal,
  reserveUpdate,
  schedulerStatusQuery,
  uncordonUpdate,
  type NodeActionResult,
  type RegionSchedulerInput,
  type SchedulerStatus,
} from '../api/messages';

const acts = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '60s',
  retry: { initialInterval: '200ms', maximumInterval: '5s', nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES },
});
/**
 * The cycle itself heartbeats (activities/index.ts): a worker that dies mid-cycle is noticed within
 * the heartbeat timeout and the cycle retried at once, rather than after the 60 s start-to-close
 * timeout with the region placing nothing meanwhile (seen: ~30 s of no placements after a region's
 * restart). Only timeouts differ from `acts`, which replay does not compare: no patch needed.
 */
const cycleActs = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '60s',
  heartbeatTimeout: '10s',
  retry: { initialInterval: '200ms', maximumInterval: '5s', nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES },
});

/** Cycles per run before continuing as new, whatever the server suggests. */
const CYCLES_PER_RUN = 1000;
/** Kick signals per run before continuing as new (the server caps signals per run at about 10k). */
const KICKS_PER_RUN = 2000;

export async function RegionSchedulerWorkflow(input: RegionSchedulerInput): Promise<void> {
  const { region } = input;
  const debounceMs = input.debounceMs ?? 50;
  const periodMs = input.periodMs ?? 5_000;
  let pending = input.pending ?? true;
  const status: SchedulerStatus = { region, cycles: input.cycles ?? 0, placed: input.placed ?? 0 };
  let runCycles = 0;
  let kicks = 0;

  setHandler(kickSignal, () => {
    pending = true;
    kicks++;
  });
  setHandler(schedulerStatusQuery, () => status);
  const nodeValidator = (node: string): void => {
    if (typeof node !== 'string' || !node.trim()) throw new Error(`node: ${JSON.stringify(node)} must be a node name`);
  };
  const nodeAction =
    (state: 'cordoned' | 'ready' | 'draining') =>
    async (node: string): Promise<NodeActionResult> => {
      const result = await acts.setNodeState(node, state);
      log.info('node action', { event: `scheduler.node-${state}`, node, requeued: result.requeued });
      pending = true;
      return result;
    };
  setHandler(cordonUpdate, nodeAction('cordoned'), { validator: nodeValidator });
  setHandler(uncordonUpdate, nodeAction('ready'), { validator: nodeValidator });
  setHandler(drainUpdate, nodeAction('draining'), { validator: nodeValidator });
  setHandler(
    reserveUpdate,
    async (request) => {
      const booked = await acts.createReservation(request);
      log.info('reservation', { event: 'scheduler.reserve', reservation: request.id, tenant: request.tenant });
      return booked;
    },
    {
      validator: (request) => {
        const problems = validateReservation(request ?? {});
        if (problems.length) throw new Error(`reserve: ${problems.join('; ')}`);
      },
    },
  );

  for (;;) {
    await condition(() => pending, periodMs);
    // Debounce: let a burst of submissions land before the cycle reads the queue. The pause is
    // the activity's own: a workflow timer this short, started while kicks keep arriving, was
    // seen not to fire for two minutes on a loaded dev server, and the region placed nothing.
    const inActivity = patched('debounce-in-cycle');
    const debounce = pending && debounceMs > 0 ? debounceMs : 0;
    if (debounce && !inActivity) await sleep(debounce);
    pending = false;
    const started = Date.now();
    const r = inActivity ? await cycleActs.scheduleCycle(debounce) : await cycleActs.scheduleCycle();
    status.cycles++;
    status.placed += r.placed;
    runCycles++;
    status.lastCycle = { at: started, considered: r.considered, placed: r.placed, waiting: r.waiting, ms: r.ms };
    if (r.placed > 0 || r.more) log.debug('scheduling cycle', { event: 'scheduler.cycle', region, ...r });
    // A full batch may leave more to place; capacity freed by this cycle's refusals does not.
    if (r.more && r.placed > 0) pending = true;
    // Every kick is a history event too: start afresh well before the server's per-run limits.
    if (
      runCycles >= (input.cyclesPerRun ?? CYCLES_PER_RUN) ||
      kicks >= (input.kicksPerRun ?? KICKS_PER_RUN) ||
      workflowInfo().continueAsNewSuggested
    ) {
      // An operator action still in flight keeps this run going (cycles go on) until it ends:
      // before this patch, the loop waited for it here, and one stuck action stopped scheduling.
      if (patched('cycles-while-handlers-run')) {
        if (allHandlersFinished())
          await continueAsNew<typeof RegionSchedulerWorkflow>({ ...input, pending, cycles: status.cycles, placed: status.placed });
      } else {
        await condition(allHandlersFinished);
        await continueAsNew<typeof RegionSchedulerWorkflow>({ ...input, pending, cycles: status.cycles, placed: status.placed });
      }
    }
  }
}
