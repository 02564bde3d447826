// Typed, non-retryable domain failures. Activities raise them; workflows and clients recognise
// them by type name, never by message text. Retrying them cannot help.
import { ApplicationFailure } from '@temporalio/common';

export const ErrorTypes = {
  badRequest: 'BadRequest',
  unknownJob: 'UnknownJob',
  staleEpoch: 'StaleEpoch',
  /** The run could not be launched or watched, and trying again cannot help: the attempt has failed. */
  runFailed: 'RunFailed',
  /** The job id is taken in this region (by another tenant's job, or a job that has ended): ids are used once. */
  jobIdTaken: 'JobIdTaken',
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

export function runFailed(message: string, cause?: Error): ApplicationFailure {
  return ApplicationFailure.create({ message, type: ErrorTypes.runFailed, nonRetryable: true, cause });
}
export function jobIdTaken(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, ErrorTypes.jobIdTaken);
}

/** The domain failure of this type in `err` (thrown directly, or as the cause of an activity failure), if any. */
export function findDomainError(err: unknown, type: ErrorType): ApplicationFailure | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) if (e instanceof ApplicationFailure && e.type === type) return e;
  return undefined;
}

/** Whether `err` is a domain failure of this type (thrown directly, or as the cause of an activity failure). */
export function isDomainError(err: unknown, type: ErrorType): boolean {
  return findDomainError(err, type) !== undefined;
}

/** The innermost error's message under any wrapping (an update's failure under its activity failure, say). */
export function rootMessage(err: unknown): string {
  let e: unknown = err;
  while (e instanceof Error && e.cause instanceof Error) e = e.cause;
  return e instanceof Error ? e.message : String(e);
}
