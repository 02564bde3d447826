// Every workflow the scheduler's workers run.
export { JobWorkflow } from './job';
