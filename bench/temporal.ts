// What the Temporal-backed benchmarks share: in-memory dev servers that die with the bench, and
// the workflow bundle built once to a temporary file, each registered for cleanup.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bundleWorkflowCode } from '@temporalio/worker';
import { freePort, startDevServer, type DevServer } from '../scripts/temporal-server';

export type Cleanup = Array<[string, () => Promise<unknown>]>;

export async function benchTemporal(tag: string, namespace: string, cleanup: Cleanup): Promise<{ server: DevServer; bundlePath: string }> {
  const server = await benchServer(namespace, cleanup);
  return { server, bundlePath: await benchBundle(tag, cleanup) };
}

/** An in-memory dev server with `namespace`, stopped by `cleanup` (or, at the latest, when the bench exits). */
export async function benchServer(namespace: string, cleanup: Cleanup): Promise<DevServer> {
  const server = await startDevServer({ port: await freePort(), namespaces: [namespace] });
  cleanup.push(['stop the Temporal dev server', () => server.stop()]);
  // Whatever way the bench exits (a second Ctrl-C, a fatal error), the server goes with it.
  process.once('exit', () => {
    if (server.process.exitCode === null) server.process.kill('SIGKILL');
  });
  return server;
}

/** The bench's workflow bundle (the scheduler's workflows and the bench's own), built once to a temporary file that `cleanup` removes. */
export async function benchBundle(tag: string, cleanup: Cleanup): Promise<string> {
  const { code } = await bundleWorkflowCode({
    workflowsPath: path.join(__dirname, 'workflows', 'index.ts'),
    logger: { log() {}, trace() {}, debug() {}, info() {}, warn: console.warn, error: console.error },
  });
  const bundlePath = path.join(os.tmpdir(), `${tag}-bench-${process.pid}.js`);
  fs.writeFileSync(bundlePath, code);
  cleanup.push(['remove the workflow bundle', async () => fs.rmSync(bundlePath, { force: true })]);
  return bundlePath;
}
