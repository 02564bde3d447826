// Bench-only activities, registered beside the scheduler's own by the benches' workers.

export function createBenchActivities() {
  return {
    /** JobShapeWorkflow's admission: no work (the lifecycle bench's reference for Temporal's own cost of a job). */
    async referenceAdmit(): Promise<void> {},

    /** JobShapeWorkflow's run: waits `ms` and returns when it started (wall-clock ms), touching nothing. */
    async referenceRun(ms: number): Promise<number> {
      const started = Date.now();
      await new Promise((resolve) => setTimeout(resolve, ms));
      return started;
    },
  };
}

export type BenchActivities = ReturnType<typeof createBenchActivities>;
