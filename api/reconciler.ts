// The reconciler's contract: its input and the status operators query (`reconcilerStatus` on
// `reconciler/<region>`).
import { defineQuery } from '@temporalio/workflow';

export interface ReconcilerInput {
  region: string;
  /** Time between passes (default 30 s). */
  everyMs?: number;
  /** Rows touched this recently are left alone (default 60 s). */
  graceMs?: number;
  /** Kept across continue-as-new. */
  status?: ReconcilerStatus;
}

export interface ReconcilerStatus {
  region: string;
  passes: number;
  /** Jobs released since the reconciler started (their workflow had ended without releasing). */
  released: number;
  nominationsDropped: number;
  /** The last pass: when, rows looked at, and the jobs it released. */
  last?: { at: number; checked: number; released: string[]; nominationsDropped: number };
  /** The last pass that failed, and why (the next pass tries again). */
  lastError?: string;
}

export const reconcilerStatusQuery = defineQuery<ReconcilerStatus>('reconcilerStatus');
