// Units and how they read. Device amounts are milli-devices (1 device = 1000), so that shares of a
// device and whole devices add up in one integer; people read them back as devices.
import type { ResourceRequest } from './types';

export const MILLI_PER_DEVICE = 1000;

/** Devices as text, up to 3 decimals and no trailing zeros: 8000 → "8", 1500 → "1.5", 250 → "0.25". */
export function formatDevices(milli: number): string {
  if (!Number.isFinite(milli)) return String(milli);
  return String(Number((milli / MILLI_PER_DEVICE).toFixed(3)));
}

/** A request as an operator reads it: `2×4 of A100|H100 with 8000m CPU each in one rack`. */
export function describeRequest(request: ResourceRequest): string {
  const host = [
    request.cpuMilliPerWorker ? `${request.cpuMilliPerWorker}m CPU` : '',
    request.memoryMibPerWorker ? `${request.memoryMibPerWorker} MiB` : '',
  ].filter(Boolean);
  const where = request.topology === 'any' ? '' : ` in one ${request.topology}`;
  return `${request.workers}×${workerSize(request)} of ${request.acceleratorTypes.join('|')}${host.length ? ` with ${host.join(' and ')} each` : ''}${where}`;
}

/** One worker's devices: `4` whole devices, or `250m` of one device. */
export function workerSize(request: Pick<ResourceRequest, 'devicesPerWorker' | 'milliPerWorker'>): string {
  return request.devicesPerWorker > 0 ? `${request.devicesPerWorker}` : `${request.milliPerWorker}m`;
}
