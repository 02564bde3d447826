// Bench-only activities, registered beside the scheduler's own by the benches' workers.
import type { JobSpec, Placement } from '../api/types';

/** JobShapeWorkflow's input: what a job workflow is started with, and how long its run takes. */
export interface ShapeInput {
  spec: JobSpec;
  region: string;
  runMs: number;
}

/** When a JobShapeWorkflow's admission ran and its run activity started (wall-clock ms). */
export interface ShapeTimes {
  admittedAt: number;
  runStartedAt: number;
}

/** A placement of the size a 1-device job's is (the shape carries it through its history as a job does). */
function placementOf(spec: JobSpec): Placement {
  return {
    jobId: spec.jobId,
    epoch: 1,
    acceleratorType: spec.request.acceleratorTypes[0] ?? 'unknown',
    workers: [{ workerIdx: 0, nodeId: 1, nodeName: 'b0', deviceIdx: [0], milli: 1000 }],
  };
}

export function createBenchActivities() {
  return {
    /** JobShapeWorkflow's admission: no work; answers as an admission that placed the job does, with the time it ran. */
    async referenceAdmit(input: ShapeInput): Promise<{ admitted: true; epoch: number; state: 'placed'; placement: Placement; at: number }> {
      return { admitted: true, epoch: 1, state: 'placed', placement: placementOf(input.spec), at: Date.now() };
    },

    /** JobShapeWorkflow's run: waits `durationMs` and returns when it started (wall-clock ms), touching nothing. */
    async referenceRun(input: {
      jobId: string;
      epoch: number;
      placement: Placement;
      durationMs: number;
    }): Promise<{ state: 'succeeded'; progressMs: number; durationMs: number; finished: true; startedAt: number }> {
      const startedAt = Date.now();
      await new Promise((resolve) => setTimeout(resolve, input.durationMs));
      return { state: 'succeeded', progressMs: input.durationMs, durationMs: input.durationMs, finished: true, startedAt };
    },
  };
}

export type BenchActivities = ReturnType<typeof createBenchActivities>;
