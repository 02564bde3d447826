// Waking the region scheduler, coalesced. Every submission, release and priority change wants a
// scheduling cycle soon; sending each its own signal would load the scheduler's history and its
// one workflow lock with thousands of signals under load. A kick only promises that a cycle starts
// after it was asked for (a cycle reads the whole queue), so callers can share signals.

/**
 * A `kick()` that coalesces concurrent callers: while one signal is in flight, every new caller
 * shares the single signal sent after it, and signals go out at most every `spacingMs`. Each
 * caller's promise settles with a signal sent after its call began (and rejects if that signal
 * failed).
 */
export function coalescedKick(send: () => Promise<void>, spacingMs: number, now: () => number = Date.now): () => Promise<void> {
  let inflight: Promise<void> | undefined;
  let queued: Promise<void> | undefined;
  let lastSent = -Infinity;
  const start = (): Promise<void> => {
    // The scheduler debounces for about as long as the spacing, so a closer kick would only cost
    // it a workflow task, and they pile up under load.
    const wait = lastSent + spacingMs - now();
    const p = (wait > 0 ? new Promise<void>((r) => setTimeout(r, wait)) : Promise.resolve())
      .then(() => {
        lastSent = now();
        return send();
      })
      .finally(() => {
        if (inflight === p) inflight = undefined;
      });
    inflight = p;
    return p;
  };
  return () => {
    if (queued) return queued;
    if (!inflight) return start();
    const next = inflight
      .catch(() => undefined)
      .then(() => {
        queued = undefined;
        return start();
      });
    queued = next;
    return next;
  };
}
