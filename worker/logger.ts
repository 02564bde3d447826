// pino JSON logs. Every line carries the region; lines about a job carry jobId and workflowId,
// including those the Temporal SDK emits for workflows and activities.
import pino from 'pino';
import { jobIdOfWorkflowId } from '../api/ids';
import { Runtime, type Logger as TemporalLogger, type LogLevel, type LogMetadata } from '@temporalio/worker';

export type Log = pino.Logger;

export function createLogger(region: string, level: string = process.env.LOG_LEVEL ?? 'info'): Log {
  return pino({ level, base: { region } });
}

const LEVELS: Record<LogLevel, pino.Level> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

class PinoTemporalLogger implements TemporalLogger {
  constructor(private readonly sink: Log) {}
  log(level: LogLevel, message: string, meta: LogMetadata = {}): void {
    const { workflowId, ...rest } = meta as Record<string, unknown>;
    const jobId = rest.jobId ?? jobIdOfWorkflowId(workflowId);
    this.sink[LEVELS[level]]({ ...rest, ...(workflowId ? { workflowId } : {}), ...(jobId ? { jobId } : {}) }, message);
  }
  trace(m: string, meta?: LogMetadata): void {
    this.log('TRACE', m, meta);
  }
  debug(m: string, meta?: LogMetadata): void {
    this.log('DEBUG', m, meta);
  }
  info(m: string, meta?: LogMetadata): void {
    this.log('INFO', m, meta);
  }
  warn(m: string, meta?: LogMetadata): void {
    this.log('WARN', m, meta);
  }
  error(m: string, meta?: LogMetadata): void {
    this.log('ERROR', m, meta);
  }
}

let installed = false;
/** Routes the SDK's workflow, activity and worker logs through pino. Once per process. */
export function installTemporalLogging(log: Log): void {
  if (installed) return;
  installed = true;
  Runtime.install({ logger: new PinoTemporalLogger(log) });
}
