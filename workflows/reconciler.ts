// ReconcilerWorkflow (`reconciler/<region>`, one per region, on the scheduler task queue; every
// worker starts it if it is not running): every 30 s, releases the jobs whose workflow ended
// without releasing them (terminated, reset, or cut at the history limit) and drops stale
// nominations (activities/reconcile.ts). A pass that fails is logged and tried again at the next;
// it never stops. Continues as new before its history grows long.
import { continueAsNew, log, proxyActivities, setHandler, sleep } from '@temporalio/workflow';
import type { SchedulerActivities } from '../activities';
import { reconcilerStatusQuery, type ReconcilerInput, type ReconcilerStatus } from '../api/reconciler';

/** Time between passes, unless configured. */
export const RECONCILE_EVERY_MS = 30_000;
/** Passes per run before continuing as new. */
const PASSES_PER_RUN = 200;

const acts = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '2m',
  // A pass that cannot finish now is replaced by the next one.
  retry: { maximumAttempts: 2 },
});

export async function ReconcilerWorkflow(input: ReconcilerInput): Promise<void> {
  const { region } = input;
  const every = input.everyMs ?? RECONCILE_EVERY_MS;
  const status: ReconcilerStatus = input.status ?? { region, passes: 0, released: 0, nominationsDropped: 0 };
  setHandler(reconcilerStatusQuery, () => status);
  for (let pass = 0; pass < PASSES_PER_RUN; pass++) {
    try {
      const r = await acts.reconcile(input.graceMs);
      status.passes++;
      status.released += r.released.length;
      status.nominationsDropped += r.nominationsDropped;
      status.last = {
        at: Date.now(),
        checked: r.checked,
        released: r.released.map((x) => x.jobId),
        nominationsDropped: r.nominationsDropped,
      };
      if (r.released.length) log.warn('reconciler released jobs', { event: 'reconciler.pass', region, released: status.last.released });
    } catch (err) {
      status.lastError = err instanceof Error ? err.message : String(err);
      log.warn('reconciler pass failed', { event: 'reconciler.failed', region, error: status.lastError });
    }
    await sleep(every);
  }
  await continueAsNew<typeof ReconcilerWorkflow>({ ...input, status });
}
