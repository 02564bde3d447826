// The kick coalescer: concurrent callers share signals, every caller is served by a signal sent
// after it asked, and a failed signal reaches its callers without stopping later kicks.
import { coalescedKick } from '../../activities/kick';

/** A fake scheduler signal: records when each send began, and completes when the test says. */
function fakeSend() {
  const sends: Array<{ startedAt: number; finish: (err?: Error) => void }> = [];
  let clock = 0;
  const send = () =>
    new Promise<void>((resolve, reject) => {
      sends.push({ startedAt: ++clock, finish: (err) => (err ? reject(err) : resolve()) });
    });
  return { sends, send, tick: () => ++clock };
}

const flush = () => new Promise((r) => setImmediate(r));

describe('coalesced kicks', () => {
  test('a lone kick sends one signal and settles when it is delivered', async () => {
    const f = fakeSend();
    const kick = coalescedKick(f.send, 0);
    let settled = false;
    const k = kick().then(() => (settled = true));
    await flush();
    expect(f.sends).toHaveLength(1);
    expect(settled).toBe(false);
    f.sends[0].finish();
    await k;
    expect(settled).toBe(true);
  });

  test('callers that arrive while a signal is in flight share exactly one later signal', async () => {
    const f = fakeSend();
    const kick = coalescedKick(f.send, 0);
    const first = kick();
    await flush();
    const asked = f.tick();
    const later = [kick(), kick(), kick(), kick()];
    await flush();
    expect(f.sends).toHaveLength(1); // the later callers wait for the first signal to finish
    f.sends[0].finish();
    await first;
    await flush();
    expect(f.sends).toHaveLength(2);
    // The shared signal began after the later callers asked: a cycle after it sees their jobs.
    expect(f.sends[1].startedAt).toBeGreaterThan(asked);
    f.sends[1].finish();
    await Promise.all(later);
    expect(f.sends).toHaveLength(2);
  });

  test('a failed signal rejects its callers, and the next kick sends afresh', async () => {
    const f = fakeSend();
    const kick = coalescedKick(f.send, 0);
    const first = kick();
    await flush();
    const second = kick();
    f.sends[0].finish(new Error('scheduler unreachable'));
    await expect(first).rejects.toThrow('scheduler unreachable');
    await flush();
    // The queued caller is not served by the failed signal: it gets its own.
    expect(f.sends).toHaveLength(2);
    f.sends[1].finish();
    await expect(second).resolves.toBeUndefined();
    const third = kick();
    await flush();
    expect(f.sends).toHaveLength(3);
    f.sends[2].finish();
    await third;
  });

  test('signals are spaced: a kick right after one waits out the spacing', async () => {
    const f = fakeSend();
    let now = 1000;
    const kick = coalescedKick(f.send, 50, () => now);
    const first = kick();
    await flush();
    f.sends[0].finish();
    await first;
    now += 10; // 10 ms later: 40 ms of spacing left
    const started = Date.now();
    const second = kick();
    await flush();
    expect(f.sends).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 60));
    expect(f.sends).toHaveLength(2);
    expect(Date.now() - started).toBeGreaterThanOrEqual(35);
    f.sends[1].finish();
    await second;
  });
});
