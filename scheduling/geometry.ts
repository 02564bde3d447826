// Request geometry: what one request needs of one node and of the fleet, computed in one place so
// that the admission check, the candidate reads and the placement agree on it.
import type { ResourceRequest } from '../api/types';
import { MILLI_PER_DEVICE, describeRequest } from '../api/units';

/** Candidate nodes one index range scan may read at the most, whatever the request. */
export const MAX_CANDIDATE_PAGE = 1024;

/** Milli-devices the request holds in all: the unit quota is charged in. */
export function requestMilli(request: ResourceRequest): number {
  return request.workers * (request.devicesPerWorker > 0 ? request.devicesPerWorker * MILLI_PER_DEVICE : (request.milliPerWorker ?? 0));
}

/** Workers that must share one node: the whole gang with topology `node`, otherwise one. */
export function workersPerNode(request: ResourceRequest): number {
  return request.topology === 'node' ? request.workers : 1;
}

/**
 * Whole free devices a node needs to be a candidate: the devices of the workers that share it,
 * or one device (a partly used one, or a free one) for a worker that takes a share.
 */
export function wholeDevicesPerNode(request: ResourceRequest): number {
  return request.devicesPerWorker > 0 ? workersPerNode(request) * request.devicesPerWorker : 1;
}

/** Host CPU (milli-cores) and memory (MiB) one node must have free for the workers that share it. */
export function hostNeed(request: ResourceRequest): { cpu: number; memory: number } {
  const k = workersPerNode(request);
  return { cpu: k * (request.cpuMilliPerWorker ?? 0), memory: k * (request.memoryMibPerWorker ?? 0) };
}

/**
 * Candidate nodes read per range scan for this request: enough for a gang to spread out (four per
 * worker) and never fewer than `candidateLimit`, capped at MAX_CANDIDATE_PAGE. A scan that returns
 * fewer rows than this has read every fitting node.
 */
export function candidatePageSize(request: ResourceRequest, candidateLimit: number): number {
  return Math.min(MAX_CANDIDATE_PAGE, Math.max(candidateLimit, request.workers * 4));
}

/** The largest amounts one node of an accelerator type has (Infinity: some node does not track it). */
export interface LargestNode {
  devices: number;
  cpuMilli: number;
  memoryMib: number;
}

/**
 * Why no node of the request's types could ever hold it (one worker, or the gang that must share
 * a node), given the largest node of each type; undefined when one could. `where` names the
 * inventory in the reason (e.g. `region eu-west`). A type missing from `largest` is unknown.
 */
export function neverFits(request: ResourceRequest, largest: ReadonlyMap<string, LargestNode>, where: string): string | undefined {
  const most: LargestNode = { devices: 0, cpuMilli: 0, memoryMib: 0 };
  for (const type of request.acceleratorTypes) {
    const node = largest.get(type);
    if (node === undefined) return `request.acceleratorTypes: unknown accelerator type ${JSON.stringify(type)}`;
    most.devices = Math.max(most.devices, node.devices);
    most.cpuMilli = Math.max(most.cpuMilli, node.cpuMilli);
    most.memoryMib = Math.max(most.memoryMib, node.memoryMib);
  }
  const types = request.acceleratorTypes.join('|');
  if (most.devices === 0) return `request.acceleratorTypes: no node of ${types} exists in ${where}`;
  const devices = wholeDevicesPerNode(request);
  if (request.devicesPerWorker > 0 && devices > most.devices)
    return `request: ${describeRequest(request)} needs ${devices} devices on one node, but the largest node of ${types} has ${most.devices}`;
  // Such a request would wait forever: no node of its types has the host CPU or memory for one worker (or the gang, on one node).
  const host = hostNeed(request);
  if (host.cpu > most.cpuMilli)
    return `request.cpuMilliPerWorker: ${describeRequest(request)} needs ${host.cpu}m CPU on one node, but the largest node of ${types} has ${most.cpuMilli}m`;
  if (host.memory > most.memoryMib)
    return `request.memoryMibPerWorker: ${describeRequest(request)} needs ${host.memory} MiB on one node, but the largest node of ${types} has ${most.memoryMib} MiB`;
  return undefined;
}
