// The benches' workflow bundle: every workflow the scheduler runs, and the bench-only reference
// workflows, which never ship in the production bundle.
export * from '../../workflows';
export { JobShapeWorkflow, NoopWorkflow } from './shape';
