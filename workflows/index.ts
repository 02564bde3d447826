// Every workflow the scheduler's workers run.
export { JobWorkflow } from './job';
export { RegionSchedulerWorkflow } from './scheduler';
export { NoopWorkflow } from './noop';
export { ReservationWorkflow } from './reservation';
