// AutoscalerWorkflow (`autoscaler/<region>`, one per region, on the scheduler task queue; a worker
// started with autoscaling on starts it if it is not running). Every period: apply what the
// providers reported (nodes ready join the inventory, reclaim notices drain, lost nodes go down);
// read the jobs waiting for capacity (not quota) and the capacity on its way; request the cheapest
// offerings that hold the waiting gangs whole, within quotas, provider limits and the region's
// budget — each request its own activity, keyed by a request id taken from this workflow's state,
// so a retry or a worker crash neither loses nor doubles it; release provider nodes idle past the
// limit; then wait. No scale-up within the cooldown of the last. Operators pause, resume and set
// limits with messages; the status query says what it saw, chose, spent and why.
import { condition, continueAsNew, log, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { SchedulerActivities } from '../activities';
import { NON_RETRYABLE_ERROR_TYPES, rootMessage } from '../api/errors';
import {
  DEFAULT_AUTOSCALER_LIMITS,
  applyLimits,
  autoscalerStatusQuery,
  pauseAutoscalerSignal,
  resumeAutoscalerSignal,
  setAutoscalerLimitsUpdate,
  type AutoscalerInput,
  type AutoscalerLimits,
  type AutoscalerStatus,
  type ProvisionRecord,
  type ScaleDecision,
} from '../api/autoscaler';

/** Decisions per run before continuing as new. */
const DECISIONS_PER_RUN = 300;

const acts = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', maximumInterval: '10s', maximumAttempts: 3, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES },
});
/** A provisioning request: retried until the provider answers (the request id makes every retry the same request). */
const provisioning = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '1s', maximumInterval: '15s', maximumAttempts: 20, nonRetryableErrorTypes: NON_RETRYABLE_ERROR_TYPES },
});

export async function AutoscalerWorkflow(input: AutoscalerInput): Promise<void> {
  const { region } = input;
  const carry = input.carry;
  let limits: AutoscalerLimits = carry?.status.limits ?? DEFAULT_AUTOSCALER_LIMITS;
  const status: AutoscalerStatus = carry?.status ?? {
    region,
    paused: false,
    limits,
    decisions: 0,
    costPerHour: 0,
    inFlight: [],
    requested: 0,
    releasedNodes: 0,
  };
  // Before the first await: a query at the start of a run (after every continue-as-new too) would
  // otherwise find no handler while the providers are read.
  setHandler(autoscalerStatusQuery, () => status);
  const config = await acts.autoscaleProviders();
  if (!carry && input.limits) {
    const start = applyLimits(DEFAULT_AUTOSCALER_LIMITS, input.limits, config.providers);
    if (start.problems.length) throw new Error(`autoscaler limits refused: ${start.problems.join('; ')}`);
    limits = 'limits' in start ? start.limits : limits;
  }
  const chain = carry?.chain ?? workflowInfo().runId.slice(0, 8);
  let seq = carry?.seq ?? 0;
  let lastScaleUpAt = carry?.lastScaleUpAt ?? 0;
  status.limits = limits;
  let wake = false;
  /** When the next idle node reaches the idle limit: the next decision is then, if sooner than a period. */
  let nextIdleAt: number | undefined;

  setHandler(pauseAutoscalerSignal, (reason) => {
    status.paused = true;
    status.pausedReason = typeof reason === 'string' && reason ? reason.slice(0, 200) : 'paused by an operator';
    log.info('autoscaler paused', { event: 'autoscaler.paused', region, reason: status.pausedReason });
  });
  setHandler(resumeAutoscalerSignal, () => {
    status.paused = false;
    delete status.pausedReason;
    wake = true;
    log.info('autoscaler resumed', { event: 'autoscaler.resumed', region });
  });
  setHandler(
    setAutoscalerLimitsUpdate,
    (change) => {
      const next = applyLimits(status.limits, change, config.providers);
      if ('limits' in next) {
        status.limits = next.limits;
        wake = true;
        log.info('autoscaler limits set', { event: 'autoscaler.limits', region, limits: next.limits });
      }
      return status.limits;
    },
    {
      validator: (change) => {
        const next = applyLimits(status.limits, change, config.providers);
        if (next.problems.length) throw new Error(`limits refused: ${next.problems.join('; ')}`);
      },
    },
  );

  for (let d = 0; d < DECISIONS_PER_RUN && !workflowInfo().continueAsNewSuggested; d++) {
    try {
      await decide();
      delete status.lastError;
    } catch (err) {
      status.lastError = rootMessage(err);
      log.warn('autoscaler decision failed', { event: 'autoscaler.failed', region, error: status.lastError });
    }
    wake = false;
    const idleDue = nextIdleAt === undefined ? Infinity : nextIdleAt - Date.now();
    await condition(() => wake, Math.max(50, Math.min(status.limits.periodMs, idleDue)));
  }
  await continueAsNew<typeof AutoscalerWorkflow>({ region, carry: { chain, seq, lastScaleUpAt, status } });

  async function decide(): Promise<void> {
    const observed = await acts.autoscaleObserve();
    const now = Date.now();
    const lim = status.limits;
    const plan = await acts.autoscalePlan(lim, status.paused, now);
    nextIdleAt = plan.nextIdleAt;
    status.decisions++;
    status.costPerHour = plan.costPerHour;
    status.inFlight = plan.inFlight;
    const decision: ScaleDecision = { at: now, demand: plan.demand, provisioned: [], released: [], unmet: plan.unmet, reason: '' };
    const why: string[] = [];
    if (observed.registered.length) why.push(`${observed.registered.length} node(s) joined: ${observed.registered.join(', ')}`);
    for (const f of observed.failed) why.push(`request ${f.requestId} failed: ${f.error}`);
    if (observed.lost.length) why.push(`lost: ${observed.lost.join(', ')}`);
    if (status.paused) {
      decision.reason = [`paused (${status.pausedReason ?? 'by an operator'}): no scaling`, ...why].join('; ');
      finish(decision);
      return;
    }
    const demandText = plan.waitingForCapacity
      ? `${plan.waitingForCapacity} job(s) wait for capacity: ${plan.demand.map((l) => `${l.jobs} × ${l.shape}`).join(', ')}`
      : 'no job waits for capacity';
    why.push(demandText);
    const cooling = now - lastScaleUpAt < lim.cooldownMs;
    if (plan.requests.length && cooling)
      why.push(`cooling down until ${new Date(lastScaleUpAt + lim.cooldownMs).toISOString()}: no new request`);
    else if (plan.requests.length) {
      // Ids first, from this workflow's state, so a replay or a retry names the same requests.
      const asked = plan.requests.map((r) => ({ ...r, requestId: `${region}-${chain}-${++seq}` }));
      lastScaleUpAt = now;
      const tickets = await Promise.all(
        asked.map(async (r): Promise<ProvisionRecord> => {
          const record: ProvisionRecord = {
            requestId: r.requestId,
            provider: r.provider,
            offering: r.offering,
            count: r.count,
            costPerHour: r.costPerHour,
            forJobs: r.forJobs,
          };
          try {
            const t = await provisioning.autoscaleProvision({
              requestId: r.requestId,
              provider: r.provider,
              offering: r.offering,
              count: r.count,
            });
            record.state = t.state;
            if (t.granted !== undefined) record.granted = t.granted;
            if (t.error) record.error = t.error;
          } catch (err) {
            record.state = 'failed';
            record.error = rootMessage(err);
          }
          return record;
        }),
      );
      status.requested += tickets.length;
      decision.provisioned = tickets;
      for (const t of tickets) {
        log.info('autoscaler scaled up', {
          event: 'autoscaler.scale-up',
          region,
          requestId: t.requestId,
          provider: t.provider,
          offering: t.offering,
          count: t.count,
          costPerHour: t.costPerHour,
          forJobs: t.forJobs,
          demand: demandText,
          state: t.state,
          error: t.error,
        });
        why.push(
          t.state === 'failed'
            ? `request ${t.requestId} for ${t.count} × ${t.provider}/${t.offering} refused: ${t.error}`
            : `requested ${t.count} × ${t.provider}/${t.offering} (${t.costPerHour}/h, ${t.requestId}) for ${t.forJobs.join(', ')}`,
        );
        if (t.state !== 'failed') status.inFlight.push(t);
      }
    }
    if (plan.unmet.length) {
      why.push(`unserved: ${plan.unmet.join(' | ')}`);
      if (plan.unmet.join() !== status.last?.unmet.join())
        log.warn('autoscaler cannot serve demand', { event: 'autoscaler.unmet', region, unmet: plan.unmet });
    }
    for (const node of plan.idle) {
      try {
        const r = await acts.autoscaleRelease(node);
        if (r.released) {
          decision.released.push(node);
          status.releasedNodes++;
          log.info('autoscaler scaled in', { event: 'autoscaler.scale-in', region, node, idleLimitMs: lim.idleLimitMs });
        } else why.push(`kept ${node}: ${r.reason}`);
      } catch (err) {
        why.push(`could not release ${node}: ${rootMessage(err)}`);
      }
    }
    if (decision.released.length) why.push(`released ${decision.released.join(', ')}: idle past ${lim.idleLimitMs} ms`);
    decision.reason = why.join('; ');
    finish(decision);
  }

  function finish(decision: ScaleDecision): void {
    status.last = decision;
    if (decision.provisioned.length || decision.released.length) status.lastAction = decision;
  }
}
