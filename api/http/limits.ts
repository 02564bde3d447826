// Per-tenant limits on submissions: how many jobs a tenant subtree may have queued, and how fast it
// may submit (a token bucket: `perSecond` tokens a second, at most `burst` saved up). A limit set
// on a tenant covers its subtree and is shared by it; the nearest tenant on the chain that sets a
// field decides it, else the API's default. Pure: the caller reads the rows and the queue count.
import { tenantChain } from '../tenants';

export interface LimitRow {
  tenant: string;
  maxQueuedJobs: number | null;
  submitPerSecond: number | null;
  submitBurst: number | null;
}

export interface LimitDefaults {
  maxQueuedJobs: number;
  submitPerSecond: number;
  submitBurst: number;
}

/** The limits that apply to a submission by `tenant`, and the subtree each one is counted over. */
export interface AppliedLimits {
  maxQueuedJobs: number;
  /** The subtree whose queued jobs count against maxQueuedJobs. */
  queueScope: string;
  perSecond: number;
  burst: number;
  /** The subtree sharing the token bucket. */
  rateScope: string;
}

export const DEFAULT_LIMITS: LimitDefaults = { maxQueuedJobs: 10_000, submitPerSecond: 200, submitBurst: 400 };

export function applicableLimits(tenant: string, rows: readonly LimitRow[], defaults: LimitDefaults = DEFAULT_LIMITS): AppliedLimits {
  const byTenant = new Map(rows.map((r) => [r.tenant, r]));
  const nearest = (field: 'maxQueuedJobs' | 'submitPerSecond' | 'submitBurst'): { value: number; from: string } | undefined => {
    for (const t of tenantChain(tenant)) {
      const v = byTenant.get(t)?.[field];
      if (v !== null && v !== undefined) return { value: v, from: t };
    }
    return undefined;
  };
  const queued = nearest('maxQueuedJobs');
  const rate = nearest('submitPerSecond');
  const burst = nearest('submitBurst');
  const perSecond = rate?.value ?? defaults.submitPerSecond;
  return {
    maxQueuedJobs: queued?.value ?? defaults.maxQueuedJobs,
    queueScope: queued?.from ?? tenant,
    perSecond,
    // A burst below one second's worth would refuse a steady stream at the rate itself.
    burst: Math.max(1, burst?.value ?? (rate ? Math.max(1, Math.ceil(perSecond)) : defaults.submitBurst)),
    rateScope: rate?.from ?? burst?.from ?? tenant,
  };
}

/** Token buckets by key, refilled continuously. In memory: each API process limits on its own. */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(private readonly now: () => number = Date.now) {}

  /** Takes a token from `key`'s bucket, or says in how many seconds one will be there. */
  take(key: string, perSecond: number, burst: number): { ok: true } | { ok: false; retryAfterS: number } {
    const now = this.now();
    const b = this.buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * perSecond);
    b.at = now;
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterS: Math.max(1, Math.ceil((1 - b.tokens) / perSecond)) };
  }

  /** Gives a token back (the submission it was taken for was refused for another reason). */
  giveBack(key: string, burst: number): void {
    const b = this.buckets.get(key);
    if (b) b.tokens = Math.min(burst, b.tokens + 1);
  }
}
