// Runs once before all test files: checks the Temporal binary is built and bundles the
// workflows a single time so that each test's workers start in well under a second.
import fs from 'node:fs';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { requireTemporalBinary } from '../../scripts/temporal-server';

export const WORKFLOW_BUNDLE = path.join(__dirname, '..', '..', '.cache', 'workflow-bundle.js');

export default async function globalSetup(): Promise<void> {
  requireTemporalBinary();
  const { code } = await bundleWorkflowCode({
    workflowsPath: path.join(__dirname, '..', '..', 'workflows', 'index.ts'),
    logger: { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error },
  });
  fs.mkdirSync(path.dirname(WORKFLOW_BUNDLE), { recursive: true });
  fs.writeFileSync(WORKFLOW_BUNDLE, code);
}
