// Reservations' I/O: the ledger a placement transaction decides reservations with (figures read
// once per type per transaction, kept current as it places jobs), and booking a reservation. The
// rules are `scheduling/reservations`.
import { sql, type Kysely, type Transaction } from 'kysely';
import type { Database, ReservationState } from '../db/schema';
import type { Tier } from '../api/types';
import { badRequest } from '../api/errors';
import { reservationWorkflowId, schedulerTaskQueue } from '../api/ids';
import type { ReservationInfo, ReservationRequest } from '../api/messages';
import { validateReservation } from '../api/validation';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { activityLog, type Region } from './region';
import { inSubtree } from '../api/tenants';
import { recordPlacement, reservationBlock, type ActiveReservation, type TypeFigures } from '../scheduling/reservations';

/** Reads active reservations, then per type (on first use) the figures the decision needs. */
export class ReservationLedger {
  private figures = new Map<string, TypeFigures>();
  private constructor(readonly active: ActiveReservation[]) {}

  /** A ledger over the reservations active now (read by the caller in its transaction). */
  static of(active: ActiveReservation[]): ReservationLedger {
    return new ReservationLedger(active);
  }

  async block(trx: Transaction<Database>, job: { tenant: string; tier: Tier }, type: string, milli: number): Promise<string | undefined> {
    if (job.tier === 'basic' || !this.active.some((r) => r.acceleratorType === type)) return undefined;
    return reservationBlock(this.active, await this.load(trx, type), job, type, milli);
  }

  async placed(trx: Transaction<Database>, job: { tenant: string; tier: Tier }, type: string, milli: number): Promise<void> {
    if (!this.active.some((r) => r.acceleratorType === type)) return;
    recordPlacement(this.active, await this.load(trx, type), job, type, milli);
  }

  private async load(trx: Transaction<Database>, type: string): Promise<TypeFigures> {
    const have = this.figures.get(type);
    if (have) return have;
    const mine = this.active.filter((r) => r.acceleratorType === type);
    const free = await sql<{ free: string }>`
      SELECT coalesce(sum(f), 0)::bigint AS free FROM nodes n CROSS JOIN LATERAL unnest(n.free_milli) AS f
      WHERE n.accelerator_type = ${type} AND n.state = 'ready'`.execute(trx);
    const held = await sql<{ tenant: string; tier: string; milli: string }>`
      SELECT j.tenant, j.tier, sum(a.milli)::bigint AS milli FROM allocations a
      JOIN jobs j ON j.id = a.job_id JOIN nodes n ON n.id = a.node_id
      WHERE n.accelerator_type = ${type} GROUP BY j.tenant, j.tier`.execute(trx);
    const figures: TypeFigures = { freeMilli: Number(free.rows[0].free), basicMilli: 0, ownerMilli: new Map() };
    for (const h of held.rows) {
      const owned = mine.filter((r) => inSubtree(h.tenant, r.tenant));
      for (const r of owned) figures.ownerMilli.set(r.id, (figures.ownerMilli.get(r.id) ?? 0) + Number(h.milli));
      if (!owned.length && h.tier === 'basic') figures.basicMilli += Number(h.milli);
    }
    this.figures.set(type, figures);
    return figures;
  }
}

/**
 * Books a reservation unless, at some moment of its window, it and the reservations overlapping
 * it would reserve more devices of the type than the region's nodes have. Serialised per type by
 * locking the type's row; a retry of the same booking returns the existing row.
 */
export async function bookReservation(
  db: Kysely<Database>,
  region: string,
  r: { id: string; tenant: string; acceleratorType: string; devices: number; startsAt: string; endsAt: string },
): Promise<{ state: ReservationState }> {
  return db.transaction().execute(async (trx) => {
    const type = await trx
      .selectFrom('accelerator_types')
      .select('name')
      .where('name', '=', r.acceleratorType)
      .forUpdate()
      .executeTakeFirst();
    if (!type) throw badRequest(`acceleratorType: unknown accelerator type ${JSON.stringify(r.acceleratorType)}`);
    const tenant = await trx.selectFrom('tenants').select('path').where('path', '=', r.tenant).executeTakeFirst();
    if (!tenant) throw badRequest(`tenant: ${r.tenant} is not a registered tenant`);
    const existing = await trx.selectFrom('reservations').select(['state', 'tenant', 'devices']).where('id', '=', r.id).executeTakeFirst();
    if (existing) {
      if (existing.tenant !== r.tenant || existing.devices !== r.devices)
        throw badRequest(`id: reservation ${r.id} already exists with other terms`);
      return { state: existing.state };
    }
    const cap = await sql<{ devices: string }>`
      SELECT coalesce(sum(n.device_count), 0)::bigint AS devices FROM nodes n
      WHERE n.accelerator_type = ${r.acceleratorType} AND n.state <> 'down'`.execute(trx);
    const capacity = Number(cap.rows[0].devices);
    const start = new Date(r.startsAt);
    const end = new Date(r.endsAt);
    const overlapping = await trx
      .selectFrom('reservations')
      .select(['id', 'devices', 'starts_at', 'ends_at'])
      .where('accelerator_type', '=', r.acceleratorType)
      .where('region', '=', region)
      .where('state', 'in', ['pending', 'active'])
      .where('starts_at', '<', end)
      .where('ends_at', '>', start)
      .execute();
    // The reserved total only rises where a window starts: check the new start and every overlapping start inside it.
    const instants = [start, ...overlapping.map((o) => o.starts_at).filter((t) => t > start && t < end)];
    for (const at of instants) {
      const live = overlapping.filter((o) => o.starts_at <= at && o.ends_at > at);
      const total = r.devices + live.reduce((s, o) => s + o.devices, 0);
      if (total > capacity)
        throw badRequest(
          `reservation ${r.id}: ${r.devices} ${r.acceleratorType} from ${r.startsAt} to ${r.endsAt} would reserve ${total} of the region's ${capacity} ${r.acceleratorType} at ${at.toISOString()}` +
            (live.length ? ` (overlaps ${live.map((o) => `${o.id}: ${o.devices}`).join(', ')})` : ''),
        );
    }
    await trx
      .insertInto('reservations')
      .values({
        id: r.id,
        tenant: r.tenant,
        accelerator_type: r.acceleratorType,
        region,
        devices: r.devices,
        starts_at: start,
        ends_at: end,
      })
      .execute();
    return { state: 'pending' };
  });
}

/** Books a reservation (refused if it overbooks) and starts the workflow that opens and closes it. */
export async function createReservation(region: Region, r: ReservationRequest): Promise<ReservationInfo> {
  const problems = validateReservation(r);
  if (problems.length) throw badRequest(problems.join('; '));
  const booked = await bookReservation(region.db, region.name, r);
  const workflowId = reservationWorkflowId(r.id);
  try {
    await region.client.workflow.start('ReservationWorkflow', {
      workflowId,
      taskQueue: schedulerTaskQueue(region.taskQueue),
      args: [{ ...r, region: region.name }],
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
  activityLog().info('reservation booked', {
    event: 'reservation.booked',
    reservation: r.id,
    tenant: r.tenant,
    devices: r.devices,
    type: r.acceleratorType,
  });
  return { ...r, state: booked.state, workflowId };
}

/** Opens or closes a reservation (a closed one stays closed), and wakes the scheduler: capacity changed hands. */
export async function setReservationState(region: Region, id: string, state: ReservationState): Promise<void> {
  await region.db.updateTable('reservations').set({ state }).where('id', '=', id).where('state', 'in', ['pending', 'active']).execute();
  activityLog().info('reservation state', { event: `reservation.${state}`, reservation: id });
  await region.kick();
}
