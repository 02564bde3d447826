// Where the CLI finds its API address and key: flags and environment over the config file, and a
// clear error for each way the settings can be wrong.
import { CliConfigError, configPath, resolveConfig } from '../../api/cli/config';

const file = (text: string | undefined, explicit = false) => ({ path: '/home/u/.config/sched/config.json', text, explicit });

describe('configPath', () => {
  test('the named file, else XDG_CONFIG_HOME, else ~/.config', () => {
    expect(configPath({ HOME: '/home/u' }, '/etc/sched.json')).toBe('/etc/sched.json');
    expect(configPath({ HOME: '/home/u', XDG_CONFIG_HOME: '/xdg' })).toBe('/xdg/sched/config.json');
    expect(configPath({ HOME: '/home/u' })).toBe('/home/u/.config/sched/config.json');
    expect(configPath({})).toBeUndefined();
  });
});

describe('resolveConfig', () => {
  test('the environment wins over the file, the --api-url flag over both; a trailing slash is dropped', () => {
    const f = file(JSON.stringify({ url: 'http://file:1', key: 'file-key' }));
    expect(resolveConfig({ env: {}, file: f })).toEqual({
      url: 'http://file:1',
      key: 'file-key',
      source: { url: f.path, key: f.path },
    });
    expect(resolveConfig({ env: { SCHED_API_URL: 'http://env:2/', SCHED_API_KEY: 'env-key' }, file: f })).toEqual({
      url: 'http://env:2',
      key: 'env-key',
      source: { url: 'SCHED_API_URL', key: 'SCHED_API_KEY' },
    });
    expect(resolveConfig({ env: { SCHED_API_URL: 'http://env:2' }, file: f, urlFlag: 'https://flag:3' }).url).toBe('https://flag:3');
  });

  test('no file is fine unless it was named; a key may be absent (the command then says so)', () => {
    expect(resolveConfig({ env: { SCHED_API_URL: 'http://a:1' }, file: file(undefined) })).toEqual({
      url: 'http://a:1',
      key: undefined,
      source: { url: 'SCHED_API_URL' },
    });
    expect(() => resolveConfig({ env: { SCHED_API_URL: 'http://a:1' }, file: file(undefined, true) })).toThrow(
      '/home/u/.config/sched/config.json: no such config file',
    );
  });

  test.each([
    ['{not json', /config\.json: not JSON/],
    ['[1]', /must be a JSON object like/],
    ['{"url": "http://a:1", "token": "x"}', /unknown field "token" \(allowed: url, key\)/],
    ['{"url": 5}', /url must be a non-empty string/],
    ['{"url": "ftp://a"}', /"ftp:\/\/a" must be http:\/\/ or https:\/\//],
    ['{"url": "not a url"}', /config\.json: "not a url" is not a URL/],
    ['{}', /no API address: set SCHED_API_URL/],
  ])('a config file %p is refused with %p', (text, message) => {
    expect(() => resolveConfig({ env: {}, file: file(text) })).toThrow(CliConfigError);
    expect(() => resolveConfig({ env: {}, file: file(text) })).toThrow(message);
  });

  test('a bad SCHED_API_URL is named as such', () => {
    expect(() => resolveConfig({ env: { SCHED_API_URL: 'localhost:8080' } })).toThrow(/SCHED_API_URL: "localhost:8080" must be http/);
  });
});
