// PeerExchangeWorkflow (`peers/<region>`, one per region): publishes the region's inventory
// summary to every peer every few seconds, and takes the peers' summaries (the `offerSummary`
// update: a malformed, unknown or older summary is refused with the reason and changes nothing).
// Publishing never blocks scheduling: it is its own workflow, and a peer that does not answer costs
// one failed send. Continues as new before its history grows long.
import {
  ApplicationFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  log,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { SchedulerActivities } from '../activities';
import { NON_RETRYABLE_ERROR_TYPES } from '../api/errors';
import { validateSummary } from '../api/peers';
import { offerSummaryUpdate, peerExchangeStatusQuery, type PeerExchangeInput, type PeerExchangeStatus } from '../api/messages';

/** How often a region publishes its summary, unless configured. */
export const PUBLISH_EVERY_MS = 2_000;
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

  for (;;) {
    const started = Date.now();
    try {
      const sent = await acts.publishSummary();
      for (const [peer, r] of Object.entries(sent)) {
        const p = (status.published[peer] ??= { sent: 0, failed: 0 });
        if (r.ok) {
          p.sent++;
          p.lastSentAt = started;
        } else {
          p.failed++;
          p.lastError = r.error;
        }
      }
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
