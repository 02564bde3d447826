// Workflow changes stay replayable: every history in test/fixtures, recorded by earlier code (the
// commit is in the file name), replays on today's workflows without a nondeterminism error. A
// change that live workflows may replay goes behind patched(); without it, the histories recorded
// before it fail here. Recorded by test/fixtures/record-exchange-history.ts and
// record-job-histories.ts (jobs through completion, preemption, requeue and cancellation; the
// region scheduler meanwhile); record new ones when a workflow changes.
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from '@temporalio/worker';
import { temporal } from '@temporalio/proto';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';

const DIR = path.join(__dirname, '..', 'fixtures');
const fixtures = fs
  .readdirSync(DIR)
  .filter((f) => f.endsWith('.history.bin'))
  .sort();

/** A history as `fetchHistory()` gave it, encoded as protobuf (the SDK's JSON reader fails with this install's two protobufjs versions). */
const fixture = (name: string) => temporal.api.history.v1.History.decode(fs.readFileSync(path.join(DIR, name)));

test('the fixtures cover the exchange before and after publishing on large changes, jobs and the scheduler', () => {
  expect(fixtures).toEqual(expect.arrayContaining(['exchange-310a1a8.history.bin', 'exchange-b893c62.history.bin']));
  expect(fixtures.filter((f) => f.startsWith('job-')).length).toBeGreaterThanOrEqual(5);
  expect(fixtures.some((f) => f.startsWith('scheduler-'))).toBe(true);
});

test.each(fixtures)('%s replays on today’s workflows', async (name) => {
  const history = fixture(name);
  const type = history.events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name;
  expect(type).toMatch(/Workflow$/);
  await expect(
    Worker.runReplayHistory({ workflowBundle: { codePath: WORKFLOW_BUNDLE }, replayName: name }, history, `replay-${name}`),
  ).resolves.toBeUndefined();
});
