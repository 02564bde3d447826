// PostgreSQL failures worth retrying in a fresh transaction, and the retry loop around them.

/** Serialization failure or deadlock: the transaction lost a race and may simply run again. */
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
