// Typed, non-retryable domain failures raised by activities. Retrying them cannot help.
import { ApplicationFailure } from '@temporalio/common';

export const ErrorTypes = {
  badRequest: 'BadRequest',
  unknownJob: 'UnknownJob',
  staleEpoch: 'StaleEpoch',
} as const;

export function badRequest(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, ErrorTypes.badRequest);
}
export function unknownJob(jobId: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(`job ${jobId} is not registered`, ErrorTypes.unknownJob);
}
export function staleEpoch(jobId: string, epoch: number, current: number): ApplicationFailure {
  return ApplicationFailure.nonRetryable(
    `job ${jobId}: epoch ${epoch} is stale (current epoch is ${current})`,
    ErrorTypes.staleEpoch,
  );
}

/** PostgreSQL errors worth retrying in a fresh transaction: serialization failure, deadlock. */
export function isTransient(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code;
  return code === '40001' || code === '40P01';
}

export async function withTransientRetry<T>(attempt: () => Promise<T>, tries = 8): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await attempt();
    } catch (err) {
      if (i >= tries || !isTransient(err)) throw err;
      await new Promise((r) => setTimeout(r, Math.min(100, 2 ** i) * Math.random()));
    }
  }
}
