// NoopWorkflow: starts and completes at once. The lifecycle benchmark measures the server's own
// workflow throughput with it, as the ceiling the job lifecycle is compared against.
export async function NoopWorkflow(): Promise<string> {
  return 'done';
}
