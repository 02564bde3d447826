// Failpoints: named places (mostly in the handoff protocol) where a fault-injection test can stop this
// worker process at an exact step (SIGKILL to itself), or hold it there while the test kills a
// Temporal server, to prove that a crash between any two steps loses and duplicates nothing.
// Inert unless SCHED_FAILPOINTS names the point; each fires once per SCHED_FAILPOINT_DIR.
import fs from 'node:fs';
import path from 'node:path';

export const FAILPOINTS = [
  'handoff.home.marked', // the job left the home queue; its copy is not started yet
  'handoff.home.started', // the copy is started at the peer; its answer not read yet
  'handoff.home.deciding', // prepare answered; the decision not recorded yet
  'handoff.home.decided', // the decision is in the home database; the activity has not returned
  'handoff.home.telling', // the decision is about to be sent to the copy
  'handoff.copy.admitted', // the copy is pending in the peer database; the activity has not returned
  'handoff.copy.activated', // the copy joined the peer queue; the activity has not returned
  'handoff.copy.ending', // the copy ended; the home is about to be told
  'job.requeue', // a requeue's release is about to start (the job shows `releasing`)
  'autoscale.provisioned', // a provisioning request is recorded at the provider; the activity has not returned
  'cycle.running', // a scheduling cycle started on this worker and has not read the queue yet
] as const;
export type Failpoint = (typeof FAILPOINTS)[number];

export async function failpoint(name: Failpoint): Promise<void> {
  const armed = process.env.SCHED_FAILPOINTS;
  if (!armed || !armed.split(',').includes(name)) return;
  const dir = process.env.SCHED_FAILPOINT_DIR;
  if (!dir) throw new Error('SCHED_FAILPOINTS is set without SCHED_FAILPOINT_DIR');
  const reached = path.join(dir, `${name}.reached`);
  if (fs.existsSync(reached)) return;
  fs.writeFileSync(reached, String(process.pid));
  if (process.env.SCHED_FAILPOINT_ACTION === 'pause') {
    const release = path.join(dir, `${name}.release`);
    while (!fs.existsSync(release)) await new Promise((r) => setTimeout(r, 100));
    return;
  }
  process.kill(process.pid, 'SIGKILL');
  await new Promise(() => undefined); // the signal is delivered before anything else runs
}
