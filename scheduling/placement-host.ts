// Host-aware fragmentation for the `fgd-host` policy: FGD's fragmentation plus the GPUs a node
// strands because its host CPU or memory runs out before its devices do.
//
// FGD (Weng et al., ATC '23) counts a node's free devices as fragmented for a task class only when
// the class no longer fits there at all, so it does not see a CPU-heavy task draining a GPU-rich
// node's cores while its devices stay free. On the openb fleet that is where most of the lost
// capacity sits: 8-GPU nodes with 12 cores per GPU end with free GPUs and no cores, while 2-GPU
// nodes with 52 cores per GPU end with cores to spare. This module measures that stranding against
// the mix's own appetite (host CPU and memory per unit of GPU the recent requests ask for), so the
// policy sends CPU-heavy work where cores are plentiful and keeps GPU-rich nodes for GPU-heavy work.
import type { MixShape, NodeFree, WorkerShape } from './placement';

const WHOLE = 1000;

/** How much stranding weighs against fragmentation (both in milli-devices); tuned on the openb traces, flat between 1 and 4. */
export const STRANDING_WEIGHT = 2;

/** Host CPU (milli-cores) and memory (MiB) the mix asks for per milli-device of GPU; 0 where it asks for none. */
export interface HostAppetite {
  cpuPerMilli: number;
  memoryPerMilli: number;
}

/** Milli-devices one worker of `shape` takes. */
function deviceMilli(shape: WorkerShape): number {
  return shape.devicesPerWorker > 0 ? shape.devicesPerWorker * WHOLE : (shape.milliPerWorker ?? WHOLE);
}

const appetites = new WeakMap<readonly MixShape[], HostAppetite>();

/** The mix's host CPU and memory per milli-device, weighted by the GPU each class asks for (memoised per mix array). */
export function hostAppetite(mix: readonly MixShape[]): HostAppetite {
  const known = appetites.get(mix);
  if (known) return known;
  let milli = 0;
  let cpu = 0;
  let memory = 0;
  for (const m of mix) {
    milli += m.weight * deviceMilli(m);
    cpu += m.weight * (m.cpuMilliPerWorker ?? 0);
    memory += m.weight * (m.memoryMibPerWorker ?? 0);
  }
  const appetite = milli > 0 ? { cpuPerMilli: cpu / milli, memoryPerMilli: memory / milli } : { cpuPerMilli: 0, memoryPerMilli: 0 };
  appetites.set(mix, appetite);
  return appetite;
}

/**
 * Free device capacity (milli-devices) on a node that its free host CPU or memory could not feed
 * at the mix's appetite: free GPU beyond what the cores (or memory) left would carry. Untracked
 * host resources, or a mix that asks for none, strand nothing.
 */
export function strandedMilli(node: NodeFree, appetite: HostAppetite): number {
  const free = node.freeMilli.reduce((a, b) => a + b, 0);
  let fed = free;
  if (node.freeCpuMilli !== undefined && appetite.cpuPerMilli > 0)
    fed = Math.min(fed, Math.max(0, node.freeCpuMilli) / appetite.cpuPerMilli);
  if (node.freeMemoryMib !== undefined && appetite.memoryPerMilli > 0)
    fed = Math.min(fed, Math.max(0, node.freeMemoryMib) / appetite.memoryPerMilli);
  return free - fed;
}

/** How much a placement grows the node's stranded capacity, from the node as it is to the node as it would be. */
export function strandingGrowth(before: NodeFree, afterPlacing: NodeFree, mix: readonly MixShape[]): number {
  const appetite = hostAppetite(mix);
  return strandedMilli(afterPlacing, appetite) - strandedMilli(before, appetite);
}
