// Every workflow the scheduler's workers run.
export { JobWorkflow } from './job';
export { RegionSchedulerWorkflow } from './scheduler';
export { ReservationWorkflow } from './reservation';
export { PeerExchangeWorkflow } from './exchange';
export { ReconcilerWorkflow } from './reconciler';
export { AutoscalerWorkflow } from './autoscaler';
