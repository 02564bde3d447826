// METRICS_PORT turns a worker's /metrics, /healthz and /readyz server on; a bad value stops the worker with its name.
import { configFromEnv } from '../../worker/config';

test('without METRICS_PORT the worker serves no metrics', () => {
  expect(configFromEnv({}).metrics).toBeUndefined();
});

test('METRICS_PORT serves them on loopback, or on METRICS_HOST', () => {
  expect(configFromEnv({ METRICS_PORT: '9464' }).metrics).toEqual({ port: 9464, host: '127.0.0.1' });
  expect(configFromEnv({ METRICS_PORT: '9464', METRICS_HOST: '0.0.0.0' }).metrics).toEqual({ port: 9464, host: '0.0.0.0' });
});

test.each(['0', '65536', '-1', '94.5', 'abc', ''])('METRICS_PORT %j is refused, naming the variable', (value) => {
  expect(() => configFromEnv({ METRICS_PORT: value })).toThrow(`METRICS_PORT ${JSON.stringify(value)} must be a TCP port, 1..65535`);
});

test('PUBLISH_EARLY is on unless set off; another value is refused, naming the variable', () => {
  expect(configFromEnv({}).publishEarly).toBe(true);
  expect(configFromEnv({ PUBLISH_EARLY: 'on' }).publishEarly).toBe(true);
  expect(configFromEnv({ PUBLISH_EARLY: 'off' }).publishEarly).toBe(false);
  expect(() => configFromEnv({ PUBLISH_EARLY: 'no' })).toThrow('PUBLISH_EARLY "no" must be on or off');
});
