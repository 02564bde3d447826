// Workflow changes stay replayable: histories recorded by earlier code replay on today's without a
// nondeterminism error (each change that live workflows may replay is behind patched()). The
// histories are in test/fixtures, with the script and the commit that recorded them.
import fs from 'node:fs';
import path from 'node:path';
import { Worker } from '@temporalio/worker';
import { temporal } from '@temporalio/proto';
import { WORKFLOW_BUNDLE } from '../helpers/global-setup';

/** A history as `fetchHistory()` gave it, encoded as protobuf. */
const fixture = (name: string) => temporal.api.history.v1.History.decode(fs.readFileSync(path.join(__dirname, '..', 'fixtures', name)));

const replay = (name: string) =>
  Worker.runReplayHistory({ workflowBundle: { codePath: WORKFLOW_BUNDLE }, replayName: name }, fixture(name), `replay-${name}`);

describe('PeerExchangeWorkflow replays its earlier histories', () => {
  test('one started before publishing on large changes (a timer between publications) replays on the old branch', async () => {
    await expect(replay('exchange-v1.history.bin')).resolves.toBeUndefined();
  });

  test('one that publishes through publishWhenDue replays', async () => {
    await expect(replay('exchange-v2.history.bin')).resolves.toBeUndefined();
  });
});
