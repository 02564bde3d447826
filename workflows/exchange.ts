// PeerExchangeWorkflow (`peers/<region>`, one per region): publishes the region's inventory
// summary to every peer every few seconds and on large changes (its publication activity waits,
// up to the period, for free capacity to move a lot since the last summary), and takes the peers' summaries (the `offerSummary`
// update: a malformed, unknown or older summary is refused with the reason and changes nothing).
// Publishing never blocks scheduling: it is its own workflow, and a peer that does not answer costs
// one failed send. Continues as new before its history grows long.
import {
  ApplicationFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { Published, SchedulerActivities } from '../activities';
import { NON_RETRYABLE_ERROR_TYPES } from '../api/errors';
import { validateSummary } from '../api/peers';
import {
  offerSummaryUpdate,
  peerExchangeStatusQuery,
  type PeerExchangeInput,
  type PeerExchangeStatus,
  type PublishWhenDue,
} from '../api/messages';

/** How often a region publishes its summary, unless configured. */
export const PUBLISH_EVERY_MS = 2_000;
/** However large the changes, early publications are at least this far apart. */
export const EARLY_GAP_MS = 500;
/** Publishing on large changes (before it: a timer between periodic publications). */
const PUBLISH_ON_CHANGE = 'exchange-publish-on-large-change';
/** Publications and received summaries per run before continuing as new. */
const EVENTS_PER_RUN = 100;

const acts = proxyActivities<SchedulerActivities>({
  // One try per period: a summary that cannot be sent now is replaced by the next one.
  startToCloseTimeout: '15s',
  retry: { maximumAttempts: 1 },
});
const local = proxyLocalActivities<SchedulerActivities>({
  startToCloseTimeout: '10s',
  retry: { initialInterval: '200ms', maximumInterval: '2s', maximumAttempts: 5, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES },
});

export async function PeerExchangeWorkflow(input: PeerExchangeInput): Promise<void> {
  const { region } = input;
  const every = input.publishEveryMs ?? PUBLISH_EVERY_MS;
  const status: PeerExchangeStatus = input.status ?? { region, published: {}, received: {}, refused: 0 };
  let events = 0;
  // The publication waits for a large change up to its period: its timeout covers the period, and
  // its heartbeat lets a lost worker be noticed within seconds.
  const waiting = proxyActivities<SchedulerActivities>({
    startToCloseTimeout: every + 15_000,
    heartbeatTimeout: '5s',
    retry: { maximumAttempts: 1 },
  });
  /** Free devices per type in the last publication that reached this workflow (none yet: publish at once). */
  let published: PublishWhenDue['published'];
  let dueAt = 0;

  setHandler(peerExchangeStatusQuery, () => status);
  setHandler(
    offerSummaryUpdate,
    async (summary) => {
      events++;
      const stored = await local.storePeerSummary(summary);
      if (stored.stored) {
        status.received[summary.region] = { version: stored.version, at: Date.now() };
        return { stored: true as const, version: stored.version };
      }
      // Refused: an answer to the sender, nothing stored. (An older version arriving late is normal.)
      status.refused++;
      status.lastRefusal = stored.reason;
      log.debug('peer summary refused', { event: 'peers.refused', region, from: summary.region, reason: stored.reason });
      throw ApplicationFailure.nonRetryable(stored.reason, 'SummaryRefused');
    },
    {
      validator: (summary) => {
        const problems = validateSummary(summary);
        if (problems.length) throw new Error(`summary refused: ${problems.join('; ')}`);
      },
    },
  );

  const record = (sent: Published, at: number) => {
    for (const [peer, r] of Object.entries(sent)) {
      const p = (status.published[peer] ??= { sent: 0, failed: 0 });
      if (r.ok) {
        p.sent++;
        p.lastSentAt = at;
      } else {
        p.failed++;
        p.lastError = r.error;
      }
    }
  };

  for (;;) {
    const started = Date.now();
    if (patched(PUBLISH_ON_CHANGE)) {
      try {
        const r = await waiting.publishWhenDue({
          ...(published ? { published } : {}),
          waitMs: Math.max(0, dueAt - started),
          minWaitMs: EARLY_GAP_MS,
        });
        record(r.sent, Date.now());
        published = r.free;
        if (r.early) {
          status.early = (status.early ?? 0) + 1;
          status.lastEarlyReason = r.early;
          log.debug('summary published early', { event: 'peers.publish-early', region, reason: r.early });
        }
      } catch (err) {
        // Nothing known about what went out: publish at once next time, after a pause.
        log.warn('summary not published', { event: 'peers.publish-failed', region, error: (err as Error).message });
        published = undefined;
        await sleep(Math.max(100, every - (Date.now() - started)));
      }
      dueAt = Date.now() + every;
      events++;
      if (events >= EVENTS_PER_RUN || workflowInfo().continueAsNewSuggested) {
        await condition(allHandlersFinished);
        await continueAsNew<typeof PeerExchangeWorkflow>({ ...input, status });
      }
      continue;
    }
    try {
      record(await acts.publishSummary(), started);
    } catch (err) {
      log.warn('summary not published', { event: 'peers.publish-failed', region, error: (err as Error).message });
    }
    events++;
    await sleep(Math.max(100, every - (Date.now() - started)));
    if (events >= EVENTS_PER_RUN || workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof PeerExchangeWorkflow>({ ...input, status });
    }
  }
}
