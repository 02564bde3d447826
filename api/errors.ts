// Typed, non-retryable domain failures. Activities raise them; workflows and clients recognise
// them by type name, never by message text. Retrying them cannot help.
import { ApplicationFailure } from '@temporalio/common';

export const ErrorTypes = {
  badRequest: 'BadRequest',
  unknownJob: 'UnknownJob',
  staleEpoch: 'StaleEpoch',
} as const;
export type ErrorType = (typeof ErrorTypes)[keyof typeof ErrorTypes];

/** Every domain error type: the `nonRetryableErrorTypes` of every activity proxy. */
export const NON_RETRYABLE_ERROR_TYPES: string[] = Object.values(ErrorTypes);

export function badRequest(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, ErrorTypes.badRequest);
}
export function unknownJob(jobId: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(`job ${jobId} is not registered`, ErrorTypes.unknownJob);
}
export function staleEpoch(jobId: string, epoch: number, current: number): ApplicationFailure {
  return ApplicationFailure.nonRetryable(`job ${jobId}: epoch ${epoch} is stale (current epoch is ${current})`, ErrorTypes.staleEpoch);
}

/** Whether `err` is a domain failure of this type (thrown directly, or as the cause of an activity failure). */
export function isDomainError(err: unknown, type: ErrorType): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) if (e instanceof ApplicationFailure && e.type === type) return true;
  return false;
}

/** The innermost error's message under any wrapping (an update's failure under its activity failure, say). */
export function rootMessage(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}
