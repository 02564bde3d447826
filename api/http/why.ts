// "Why is my job not running?": a job's waiting reason (the workflow's status query, kept current
// by the region scheduler) read into what blocks it and what would let it go on. Pure.
import type { JobStatus } from '../types';
import type { WhyResponse } from './schemas';

const WAITING = new Set(['submitted', 'validating', 'admitting', 'waiting', 'waiting-abroad', 'handing-off', 'pending']);

const RULES: Array<{ test: RegExp; blockedBy: string; unblock: string[] }> = [
  {
    test: /^over quota/,
    blockedBy: 'quota',
    unblock: [
      "the tenant's running jobs of this accelerator type ending or being cancelled",
      'an admin raising the quota rule (nominal or borrowing limit) named in the reason',
      'idle capacity of the cohort becoming free to borrow',
    ],
  },
  {
    test: /held for higher-ranked job|kept for higher-ranked jobs/,
    blockedBy: 'held',
    unblock: [
      'the higher-ranked job named in the reason being placed or leaving the queue',
      'a higher priority for this job (set priority)',
    ],
  },
  {
    test: /reserv/,
    blockedBy: 'reserved',
    unblock: ['the reservation named in the reason ending or being cancelled', 'a reservation for this tenant'],
  },
  {
    test: /^waiting for a peer region|no peer has room|no peer region is allowed/,
    blockedBy: 'handoff',
    unblock: ['a peer region in allowedRegions with room for the job', 'capacity of its shape added at home'],
  },
  {
    test: /^pending: handed over/,
    blockedBy: 'handoff',
    unblock: ["the home region's handoff decision reaching this region"],
  },
  {
    test: /^requeued/,
    blockedBy: 'requeue',
    unblock: ['the next scheduling cycle finding room for it (it keeps its queue position)'],
  },
  {
    test: /^queued/,
    blockedBy: 'queue',
    unblock: ['the next scheduling cycle (within seconds)'],
  },
];

/** What blocks a job and what would unblock it, from its status. */
export function explainWait(status: JobStatus): WhyResponse {
  const waiting = WAITING.has(status.phase);
  const base = {
    jobId: status.jobId,
    state: status.phase,
    waiting,
    ...(status.waitingReason ? { waitingReason: status.waitingReason } : {}),
  };
  if (!waiting) {
    const unblock =
      status.phase === 'handed-off'
        ? [`the job lives in ${status.handoff?.peer ?? 'a peer region'} now: ask there (locate)`]
        : status.phase === 'placed' || status.phase === 'running' || status.phase === 'releasing'
          ? []
          : ['nothing: the job has ended'];
    return { ...base, unblock };
  }
  const reason = status.waitingReason ?? '';
  const rule = RULES.find((r) => r.test.test(reason));
  if (rule) return { ...base, blockedBy: rule.blockedBy, unblock: rule.unblock };
  if (status.phase === 'submitted' || status.phase === 'validating' || status.phase === 'admitting')
    return { ...base, blockedBy: 'admission', unblock: ['admission finishing (within seconds)'] };
  return {
    ...base,
    blockedBy: 'capacity',
    unblock: [
      'running jobs of its accelerator types ending, freeing devices of its shape',
      'nodes of its types being added, uncordoned or brought back up',
      'a higher tier or priority (premium work may preempt)',
    ],
  };
}
