// The checks a job applies to every message it is sent before acting on it: a malformed one is
// named and ignored, never thrown inside a handler (which would wedge the workflow on every replay).
import {
  validateCancelReason,
  validateHandedJobEnded,
  validateHandoffDecision,
  validatePlacedDelivery,
  validatePreemptRequest,
  validateWaitingNotice,
} from '../../api/validation';
import type { Placement } from '../../api/types';

const placement = (o: Partial<Placement> = {}): Placement => ({
  jobId: 'j-1',
  epoch: 2,
  acceleratorType: 'A100',
  workers: [{ workerIdx: 0, nodeId: 7, nodeName: 'n-7', deviceIdx: [0, 1], milli: 1000 }],
  ...o,
});

describe('a placed delivery', () => {
  test('as the scheduler sends it is accepted', () => {
    expect(validatePlacedDelivery({ epoch: 2, placement: placement() }, 'j-1')).toEqual([]);
    expect(
      validatePlacedDelivery(
        { epoch: 2, placement: placement({ workers: [{ workerIdx: 0, nodeId: 7, nodeName: 'n-7', deviceIdx: [3], milli: 250 }] }) },
        'j-1',
      ),
    ).toEqual([]);
  });

  test.each<[string, unknown, RegExp]>([
    ['missing', undefined, /placed: undefined must be an object/],
    ['null', null, /placed: null must be an object/],
    ['an epoch that is not a number', { epoch: 'one', placement: placement() }, /epoch: "one" must be a positive integer/],
    ['no placement', { epoch: 2 }, /placement: undefined must be an object/],
    [
      'a placement of another job',
      { epoch: 2, placement: placement({ jobId: 'j-2' }) },
      /placement.jobId: "j-2" must be this job's id "j-1"/,
    ],
    [
      'a placement of another epoch',
      { epoch: 2, placement: placement({ epoch: 3 }) },
      /placement.epoch: 3 must equal the delivery's epoch 2/,
    ],
    ['no accelerator type', { epoch: 2, placement: placement({ acceleratorType: '' }) }, /placement.acceleratorType: "" must be/],
    [
      'workers that are not a list',
      { epoch: 2, placement: { ...placement(), workers: 'all' } },
      /placement.workers: "all" must be a non-empty list/,
    ],
    ['no workers', { epoch: 2, placement: placement({ workers: [] }) }, /placement.workers: \[\] must be a non-empty list/],
    [
      'a worker without devices',
      { epoch: 2, placement: placement({ workers: [{ workerIdx: 0, nodeId: 7, nodeName: 'n-7', deviceIdx: [], milli: 1000 }] }) },
      /placement.workers\[0\].deviceIdx: \[\] must be a non-empty list of device indexes/,
    ],
    [
      'a worker on no node',
      { epoch: 2, placement: placement({ workers: [{ workerIdx: 0, nodeId: 0, nodeName: 'n-7', deviceIdx: [1], milli: 1000 }] }) },
      /placement.workers\[0\].nodeId: 0 must be a positive integer/,
    ],
    [
      'a share above a whole device',
      { epoch: 2, placement: placement({ workers: [{ workerIdx: 0, nodeId: 7, nodeName: 'n-7', deviceIdx: [1], milli: 1001 }] }) },
      /placement.workers\[0\].milli: 1001 must be an integer from 1 to 1000/,
    ],
  ])('with %s is refused, naming the field', (_, message, problem) => {
    const problems = validatePlacedDelivery(message, 'j-1');
    expect(problems.join('; ')).toMatch(problem);
  });
});

describe('a waiting notice', () => {
  test('with an epoch and a reason is accepted', () => {
    expect(validateWaitingNotice({ epoch: 1, reason: 'A100: no room for 1×4' })).toEqual([]);
  });
  test.each<[string, unknown, RegExp]>([
    ['missing', undefined, /waiting: undefined must be an object/],
    ['with a reason that is not text', { epoch: 1, reason: 42 }, /reason: 42 must be a string/],
    ['with a fractional epoch', { epoch: 1.5, reason: 'x' }, /epoch: 1.5 must be a positive integer/],
    ['with an endless reason', { epoch: 1, reason: 'x'.repeat(5000) }, /reason: must be at most 4096 characters/],
  ])('%s is refused', (_, message, problem) => {
    expect(validateWaitingNotice(message).join('; ')).toMatch(problem);
  });
});

describe('a preempt request', () => {
  test('naming a job and a grace period is accepted', () => {
    expect(validatePreemptRequest({ preemptor: 'p-1', graceMs: 10_000 })).toEqual([]);
    expect(validatePreemptRequest({ preemptor: 'p-1', graceMs: 0 })).toEqual([]);
  });
  test.each<[string, unknown, RegExp]>([
    ['missing', undefined, /preempt: undefined must be an object/],
    ['with a preemptor that is not a job id', { preemptor: 7, graceMs: 10 }, /preemptor: 7 must be a job id/],
    ['with a grace period that is text', { preemptor: 'p-1', graceMs: 'soon' }, /graceMs: "soon" must be an integer from 0 to/],
    ['with a negative grace period', { preemptor: 'p-1', graceMs: -5 }, /graceMs: -5 must be an integer from 0 to/],
  ])('%s is refused', (_, message, problem) => {
    expect(validatePreemptRequest(message).join('; ')).toMatch(problem);
  });
});

describe('the handoff messages', () => {
  test('a decision is committed or aborted at an epoch', () => {
    expect(validateHandoffDecision({ epoch: 3, decision: 'committed' })).toEqual([]);
    expect(validateHandoffDecision({ epoch: 3, decision: 'aborted' })).toEqual([]);
    expect(validateHandoffDecision({ epoch: 3, decision: 'maybe' }).join('; ')).toMatch(/decision: "maybe" must be committed or aborted/);
    expect(validateHandoffDecision(undefined).join('; ')).toMatch(/handoffDecision: undefined must be an object/);
  });
  test("a copy's ending carries an epoch and a job result", () => {
    expect(validateHandedJobEnded({ epoch: 2, result: { jobId: 'j-1', outcome: 'completed', region: 'eu' } })).toEqual([]);
    expect(validateHandedJobEnded({ epoch: 2, result: 'done' }).join('; ')).toMatch(/result: "done" must be a job result/);
    expect(validateHandedJobEnded({ epoch: 2, result: { jobId: 'j-1', outcome: 'exploded' } }).join('; ')).toMatch(
      /result.outcome: "exploded" must be one of completed, cancelled, rejected, failed/,
    );
    expect(validateHandedJobEnded(undefined).join('; ')).toMatch(/handedJobEnded: undefined must be an object/);
  });
});

describe('a cancel signal', () => {
  test('may give a reason, or none', () => {
    expect(validateCancelReason(undefined)).toEqual([]);
    expect(validateCancelReason('done with it')).toEqual([]);
  });
  test('with a reason that is not text is refused', () => {
    expect(validateCancelReason({ why: 'x' }).join('; ')).toMatch(/cancel: reason: {"why":"x"} must be a string/);
  });
});
