// JobWorkflow: one job's lifecycle — validate, admit, queue, wait for the region scheduler to
// place it, run it through the executor, and release what it held — with the operator messages
// it answers (job-handlers.ts). A requeue (operator, drain, node loss, a failed attempt with
// retries left) releases the devices and queues the job again at a new epoch, keeping its
// original queue position. A job that waits too long at home, or cannot run there at all, is
// handed to a peer region (handoff.ts); a copy started by a handoff waits for its home's decision
// before it joins this region's queue. Deterministic: all I/O is in activities.
import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  ContinueAsNew,
  allHandlersFinished,
  condition,
  continueAsNew,
  isCancellation,
  log,
  patched,
  workflowInfo,
} from '@temporalio/workflow';
import type { JobResult, JobState, Placement } from '../api/types';
import { validateSpec } from '../api/validation';
import { ErrorTypes } from '../api/errors';
import type { JobWorkflowInput } from '../api/messages';
import { handoffPolicy } from '../scheduling/handoff';
import { JobRecord, acts, handoffActs, local, peerward } from './job-record';
import { registerJobHandlers } from './job-handlers';
import { LOCAL_YIELD, runPlaced } from './job-run';
import { awaitDecision, handOff } from './handoff';

/** How often a waiting job looks for a placement it may have missed, and re-kicks the scheduler. */
export const PLACEMENT_CHECK_MS = 30_000;
export const MAX_PLACEMENT_CHECK_MS = 5 * 60_000;
/** How often a job looking abroad asks again which peer could take it. */
export const PEER_RETRY_MS = 5_000;
/**
 * A waiting job continues as new once its history has this many events (or the server suggests
 * it): a job that waits for weeks must not reach the server's history limit, which terminates it.
 */
export const LONG_WAIT_EVENTS = 2_000;

/** What admission answered: a home job may come placed, or waiting abroad; a copy is pending. */
type Admission =
  | { admitted: false; problems: string[] }
  | { admitted: true; epoch: number; state?: string; placement?: Placement; waitingReason?: string };

type Waited = Placement | 'cancelled' | 'timeout' | 'given-back' | 'continue' | { peer: string; why: string };

export async function JobWorkflow({ spec, region, origin, resume }: JobWorkflowInput): Promise<JobResult> {
  const job = new JobRecord(spec, workflowInfo().workflowId, region, origin);
  const { status, jobId, deliveries } = job;
  if (resume) {
    Object.assign(status, resume.status);
    for (const [e, d] of resume.decisions) job.decisions.set(e, d);
    for (const [p, until] of resume.avoid) job.avoid.set(p, until);
    if (resume.committedCopy) job.heard = 'committed';
  }
  registerJobHandlers(job);

  const finish = async (result: JobResult): Promise<JobResult> => {
    await condition(allHandlersFinished);
    return result;
  };

  const problems = resume ? [] : validateSpec(spec);
  if (problems.length) {
    const reason = `invalid spec: ${problems.join('; ')}`;
    job.enter('rejected', reason);
    return finish({ jobId, outcome: 'rejected', reason });
  }
  // The client set the submitted state at start; this task's own changes go out in one upsert below.
  if (!resume) status.phase = 'admitting' as JobState; // (widened: handlers change it too)
  const entry: Admission = resume
    ? { admitted: true, epoch: status.epoch, state: resume.abroad ? 'waiting-abroad' : 'waiting', waitingReason: status.waitingReason }
    : origin
      ? await local.admitCopy(spec, origin)
      : await local.admitAndPlace(spec);
  if (!entry.admitted) {
    const reason = `not admitted${origin ? ` in ${region} (handed over by ${origin.region})` : ''}: ${entry.problems.join('; ')}`;
    job.enter('rejected', reason);
    return finish({ jobId, outcome: 'rejected', reason });
  }
  status.epoch = entry.epoch;
  let outcome: JobResult['outcome'] = 'completed';
  let reason: string | undefined;
  let placement: Placement | undefined;
  let ranIn = region;
  /** Continuing as new: the finally below must not release. */
  let continuing = false;
  /** The copy learned `committed`: it must tell its home how the job ends. */
  let committedCopy = resume?.committedCopy ?? false;

  if (origin && !resume) {
    job.enter('pending', `pending: handed over by ${origin.region}, waiting for its decision`, undefined, origin.region);
    committedCopy = await awaitDecision(job);
    if (!committedCopy || status.cancelRequested) {
      // Aborted or given back: it never was this region's job. Cancelled while pending: it ends here, and the home hears it.
      const why = job.givenBack
        ? `given back to ${origin.region}`
        : job.heard === 'aborted'
          ? `handoff aborted by ${origin.region}`
          : 'cancelled';
      await handoffActs.withdrawCopy(jobId, origin.epoch, why);
      job.enter('cancelled', why);
      const result: JobResult = { jobId, outcome: 'cancelled', reason: why, region, ...(job.givenBack ? { givenBack: true } : {}) };
      if (committedCopy) await peerward.tellOriginEnded(origin, job.workflowId, result);
      return finish(result);
    }
    await handoffActs.activateCopy(jobId, origin.epoch);
  }

  // Handoff applies to jobs submitted here (a copy stays where it was handed); behind a patch, so
  // jobs started before it replay as they ran.
  const global = !origin && patched('global-handoff');
  // A committed copy given back (recalled by its home) while it waits in this region's queue ends
  // here, holding nothing, and does not tell the home (the home has it back); before this patch
  // such a copy waited on with its row cancelled.
  const givenBackEnds = origin !== undefined && patched('given-back-copy-ends');
  const admitted = entry;
  let abroad = admitted.state === 'waiting-abroad';
  const policy = handoffPolicy(spec);

  /** Waits for the scheduler's delivery (or finds the placement itself), or a peer that should take the job. */
  const waitForPlacement = async (deadline?: number): Promise<Waited> => {
    const lookingAbroad = () => global && !status.pinned;
    let lookAbroadAt = abroad ? Date.now() : Date.now() + policy.afterMs;
    let checkAt = Date.now() + PLACEMENT_CHECK_MS;
    // The self-check backs off, so a job that waits for days keeps a short history.
    for (let every = PLACEMENT_CHECK_MS; ;) {
      if (lookingAbroad() && Date.now() >= lookAbroadAt) {
        const avoid = [...job.avoid].filter(([, until]) => until > Date.now()).map(([p]) => p);
        const choice = await handoffActs.pickPeer(spec, avoid, abroad);
        if (choice.peer !== undefined) return { peer: choice.peer, why: choice.reason };
        lookAbroadAt = Date.now() + PEER_RETRY_MS;
        if (abroad && choice.reason !== status.waitingReason) job.enter('waiting-abroad', choice.reason);
      }
      let wake = deadline === undefined ? checkAt : Math.min(checkAt, deadline);
      if (lookingAbroad()) wake = Math.min(wake, lookAbroadAt);
      const left = wake - Date.now();
      if (left > 0) await condition(() => deliveries.has(status.epoch) || status.cancelRequested || (givenBackEnds && job.givenBack), left);
      if (givenBackEnds && job.givenBack) return 'given-back';
      if (status.cancelRequested) return 'cancelled';
      const delivered = deliveries.get(status.epoch);
      if (delivered) return delivered.placement;
      // A long wait: start a fresh history (between messages, nothing delivered, no handler running).
      const info = workflowInfo();
      if ((info.continueAsNewSuggested || info.historyLength >= LONG_WAIT_EVENTS) && allHandlersFinished() && deliveries.size === 0)
        if (patched('continue-long-waits')) return 'continue';
      if (Date.now() >= checkAt || (deadline !== undefined && Date.now() >= deadline)) {
        // Missed delivery, or a scheduler that stopped: look for ourselves (the check wakes it).
        if (!abroad) {
          const found = await acts.checkPlacement(jobId, status.epoch);
          if (found) return found;
        }
        if (deadline !== undefined && Date.now() >= deadline) return 'timeout';
        every = Math.min(MAX_PLACEMENT_CHECK_MS, every * 2);
        checkAt = Date.now() + every;
      }
    }
  };

  try {
    let deadline = resume ? resume.deadline : spec.maxWaitMs ? Date.now() + spec.maxWaitMs : undefined;
    // Placed on admission: straight to running, no waiting state and no scheduler round trip.
    if (admitted.placement) deliveries.set(entry.epoch, { epoch: entry.epoch, placement: admitted.placement });
    for (;;) {
      const ready = status.cancelRequested ? undefined : deliveries.get(status.epoch);
      if (!ready && abroad && status.phase !== 'waiting-abroad')
        job.enter('waiting-abroad', admitted.waitingReason ?? 'waiting for a peer region with room');
      else if (!ready && !abroad && status.phase !== 'waiting')
        job.enter(
          'waiting',
          status.handoff && status.handoff.state !== 'committed'
            ? `back home after handing off to ${status.handoff.peer} (${status.handoff.state}): ${status.handoff.reason ?? ''}`
            : status.lastRequeue
              ? `requeued: ${status.lastRequeue}`
              : (admitted.waitingReason ?? 'queued: waiting for the next scheduling cycle'),
        );
      const got = ready ? ready.placement : await waitForPlacement(deadline);
      if (got === 'continue') {
        continuing = true;
        log.info('long wait continues as new', {
          jobId,
          event: 'job.continued',
          epoch: status.epoch,
          events: workflowInfo().historyLength,
        });
        return await continueAsNew<typeof JobWorkflow>({
          spec,
          region,
          ...(origin ? { origin } : {}),
          resume: {
            status: { ...status },
            decisions: [...job.decisions],
            avoid: [...job.avoid],
            committedCopy,
            abroad,
            ...(deadline !== undefined ? { deadline } : {}),
            continued: (resume?.continued ?? 0) + 1,
          },
        });
      }
      if (got === 'cancelled') {
        outcome = 'cancelled';
        break;
      }
      if (got === 'given-back') {
        outcome = 'cancelled';
        reason = `given back to ${origin!.region}`;
        break;
      }
      if (got === 'timeout') {
        outcome = 'failed';
        reason = `not placed within maxWaitMs ${spec.maxWaitMs}: ${status.waitingReason ?? 'waiting'}`;
        break;
      }
      if ('peer' in got) {
        const end = await handOff(job, got.peer, got.why, abroad);
        if (end.kind === 'ended') {
          ({ outcome, reason, placement } = end.result);
          ranIn = end.result.region ?? got.peer;
          break;
        }
        // Home again: recalled jobs stay; an aborted one looks abroad again later (a must-leave one at once).
        if (status.pinned) abroad = false;
        if (status.cancelRequested) {
          outcome = 'cancelled';
          break;
        }
        continue;
      }
      deadline = undefined;
      placement = got;
      status.placement = got;
      status.phase = 'placed' as JobState;
      log.info('job placed', { jobId, event: 'job.placed', epoch: status.epoch, acceleratorType: got.acceleratorType });
      const end = await runPlaced(job, got);
      if (end.kind === 'succeeded') break;
      if (end.kind === 'cancelled') {
        outcome = 'cancelled';
        break;
      }
      if (end.kind === 'failed' && status.attempt >= (spec.maxAttempts ?? 1)) {
        outcome = 'failed';
        reason = `attempt ${status.attempt} of ${spec.maxAttempts ?? 1} failed: ${end.detail}`;
        break;
      }
      // Back to the queue, same position, new epoch.
      const why = end.kind === 'failed' ? `attempt ${status.attempt} failed: ${end.detail}` : end.detail;
      job.enter('releasing');
      await CancellationScope.nonCancellable(async () => {
        const requeuer = end.kind === 'preempted' && patched(LOCAL_YIELD) ? local : acts;
        status.epoch = await requeuer.requeue(
          jobId,
          status.epoch,
          status.attempt,
          why,
          end.kind === 'preempted' ? end.preemptor : undefined,
        );
      });
      status.lastRequeue = why;
      status.placement = undefined;
      job.requeueAsked = undefined;
      job.preemptFor = undefined;
      job.preemptedFor = undefined;
      if (status.cancelRequested) {
        outcome = 'cancelled';
        break;
      }
    }
  } catch (err) {
    // Continuing as new is not an ending: nothing is released, the next run carries on.
    if (err instanceof ContinueAsNew) throw err;
    if (isCancellation(err)) outcome = 'cancelled';
    else if (err instanceof ActivityFailure && err.cause instanceof ApplicationFailure && err.cause.type === ErrorTypes.badRequest) {
      outcome = 'rejected';
      reason = err.cause.message;
    } else {
      outcome = 'failed';
      reason = err instanceof Error ? err.message : String(err);
    }
  } finally {
    // Release always runs, even when the workflow itself is being cancelled (not when it continues as new).
    if (!continuing)
      await CancellationScope.nonCancellable(async () => {
        // Final state and release in one transaction: no cycle places it afterwards, and nothing
        // ever sees a finished job holding devices. A run that completed has done it already.
        job.finalRelease = true;
        if (!(job.finishedByRun && outcome === 'completed')) {
          job.enter('releasing');
          await acts.finish(jobId, status.epoch, outcome, reason ?? null);
        }
        job.enter(outcome, reason);
      });
  }
  const result: JobResult = {
    jobId,
    outcome,
    reason,
    placement: outcome === 'completed' ? placement : (status.placement ?? placement),
    ...(global || origin ? { region: ranIn } : {}),
    ...(givenBackEnds && job.givenBack ? { givenBack: true } : {}),
  };
  // A committed copy tells its home how the job ended (until delivered); the home ends with it.
  if (origin && committedCopy && !(givenBackEnds && job.givenBack))
    await CancellationScope.nonCancellable(() => peerward.tellOriginEnded(origin, job.workflowId, result));
  return finish(result);
}
