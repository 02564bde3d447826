// Reservation rules at placement time. An active reservation keeps `devices` of one type for a
// tenant (and its subtree). Other tenants' basic work may use the idle part (it is preempted when
// the owner needs it), but their standard and premium work may not: a placement is refused when
// what would be left free, plus what basic work holds, no longer covers the idle part of the
// reservations they are not part of. Pure: decided over per-type figures the caller reads.
import type { Tier } from '../api/types';
import { inSubtree } from '../api/tenants';
import { formatDevices } from '../api/units';

export interface ActiveReservation {
  id: string;
  tenant: string;
  acceleratorType: string;
  devices: number;
  endsAt: Date;
}

export interface TypeFigures {
  /** Free milli-devices on ready nodes of the type. */
  freeMilli: number;
  /** Held by basic jobs of tenants outside every reservation on the type (preemptible for owners). */
  basicMilli: number;
  /** Held by each reservation's own tenant subtree. */
  ownerMilli: Map<string, number>;
}

/** Why placing `milli` of `type` for this job would eat into others' reservations; undefined if it may. */
export function reservationBlock(
  reservations: readonly ActiveReservation[],
  figures: TypeFigures,
  job: { tenant: string; tier: Tier },
  type: string,
  milli: number,
): string | undefined {
  if (job.tier === 'basic') return undefined;
  const others = reservations.filter((r) => r.acceleratorType === type && !inSubtree(job.tenant, r.tenant));
  if (!others.length) return undefined;
  const idle = others.reduce((sum, r) => sum + Math.max(0, r.devices * 1000 - (figures.ownerMilli.get(r.id) ?? 0)), 0);
  if (figures.freeMilli - milli + figures.basicMilli >= idle) return undefined;
  const r = others[0];
  return `capacity reserved: ${others.length === 1 ? `${r.devices} ${type} reserved for ${r.tenant} until ${r.endsAt.toISOString()}` : `${others.length} reservations of ${type}`}, ${formatDevices(idle)} idle; ${formatDevices(Math.max(0, figures.freeMilli + figures.basicMilli - idle))} left for others`;
}

/** Keeps the figures current after a placement in the same transaction. */
export function recordPlacement(
  reservations: readonly ActiveReservation[],
  figures: TypeFigures,
  job: { tenant: string; tier: Tier },
  type: string,
  milli: number,
): void {
  figures.freeMilli -= milli;
  const owned = reservations.filter((r) => r.acceleratorType === type && inSubtree(job.tenant, r.tenant));
  for (const r of owned) figures.ownerMilli.set(r.id, (figures.ownerMilli.get(r.id) ?? 0) + milli);
  if (!owned.length && job.tier === 'basic') figures.basicMilli += milli;
}
