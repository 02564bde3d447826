// ReservationWorkflow: one capacity reservation's window, on durable timers. It opens the
// reservation at its start (the allocator then keeps the reserved devices for the tenant, lending
// idle ones only to basic work) and closes it at its end, or earlier on a `cancel` signal.
import { condition, log, proxyActivities, setHandler } from '@temporalio/workflow';
import type { SchedulerActivities } from '../activities';
import { reservationWorkflowId } from '../api/ids';
import { cancelReservationSignal, reservationStatusQuery, type ReservationInfo, type ReservationRequest } from '../api/messages';

const acts = proxyActivities<SchedulerActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '200ms', maximumInterval: '10s' },
});

export async function ReservationWorkflow(r: ReservationRequest & { region: string }): Promise<ReservationInfo> {
  const info: ReservationInfo = { ...r, state: 'pending', workflowId: reservationWorkflowId(r.id) };
  let cancelled = false;
  setHandler(cancelReservationSignal, () => {
    cancelled = true;
  });
  setHandler(reservationStatusQuery, () => info);
  const untilOrCancelled = async (at: number): Promise<void> => {
    const wait = at - Date.now();
    if (wait > 0) await condition(() => cancelled, wait);
  };
  await untilOrCancelled(Date.parse(r.startsAt));
  if (!cancelled) {
    await acts.setReservationState(r.id, 'active');
    info.state = 'active';
    log.info('reservation open', { event: 'reservation.open', reservation: r.id, tenant: r.tenant });
    await untilOrCancelled(Date.parse(r.endsAt));
  }
  info.state = cancelled ? 'cancelled' : 'ended';
  await acts.setReservationState(r.id, info.state);
  log.info('reservation closed', { event: `reservation.${info.state}`, reservation: r.id });
  return info;
}
