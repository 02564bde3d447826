// Where the CLI finds its API and key: the environment (SCHED_API_URL, SCHED_API_KEY) over a JSON
// config file (`--config <path>`, else $XDG_CONFIG_HOME/sched/config.json or
// ~/.config/sched/config.json) of the shape `{ "url": "http://…", "key": "sched_…" }`.
// Pure: the caller reads the file and hands its text in.
import path from 'node:path';

export interface CliConfig {
  url: string;
  key?: string;
  /** Where each value came from, for error messages. */
  source: { url: string; key?: string };
}

export class CliConfigError extends Error {}

/** The config file to read: the one named, else the default under the user's config directory. */
export function configPath(env: Record<string, string | undefined>, explicit?: string): string | undefined {
  if (explicit) return explicit;
  const base = env.XDG_CONFIG_HOME || (env.HOME ? path.join(env.HOME, '.config') : undefined);
  return base && path.join(base, 'sched', 'config.json');
}

function parseFile(text: string, file: string): { url?: string; key?: string } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new CliConfigError(`${file}: not JSON (${(err as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new CliConfigError(`${file}: must be a JSON object like {"url": "http://127.0.0.1:8080", "key": "sched_…"}`);
  const o = parsed as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => k !== 'url' && k !== 'key');
  if (unknown.length)
    throw new CliConfigError(`${file}: unknown field ${unknown.map((k) => JSON.stringify(k)).join(', ')} (allowed: url, key)`);
  for (const k of ['url', 'key'] as const)
    if (o[k] !== undefined && (typeof o[k] !== 'string' || o[k] === ''))
      throw new CliConfigError(`${file}: ${k} must be a non-empty string`);
  return { url: o.url as string | undefined, key: o.key as string | undefined };
}

function checkUrl(url: string, from: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new CliConfigError(`${from}: ${JSON.stringify(url)} is not a URL (e.g. http://127.0.0.1:8080)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new CliConfigError(`${from}: ${JSON.stringify(url)} must be http:// or https://`);
  return url.replace(/\/+$/, '');
}

/**
 * The settings in force. `file` is the config file's path and text (text undefined: it does not
 * exist, which is fine unless it was named with --config).
 */
export function resolveConfig(o: {
  env: Record<string, string | undefined>;
  file?: { path: string; text: string | undefined; explicit: boolean };
  urlFlag?: string;
}): CliConfig {
  let fromFile: { url?: string; key?: string } = {};
  if (o.file) {
    if (o.file.text === undefined) {
      if (o.file.explicit) throw new CliConfigError(`${o.file.path}: no such config file`);
    } else fromFile = parseFile(o.file.text, o.file.path);
  }
  const filePath = o.file?.path ?? 'config file';
  const pick = (flag: string | undefined, envName: string, fileValue: string | undefined): [string | undefined, string] => {
    if (flag) return [flag, 'the --api-url flag'];
    if (o.env[envName]) return [o.env[envName], envName];
    return [fileValue, filePath];
  };
  const [url, urlFrom] = pick(o.urlFlag, 'SCHED_API_URL', fromFile.url);
  const [key, keyFrom] = pick(undefined, 'SCHED_API_KEY', fromFile.key);
  if (!url)
    throw new CliConfigError(
      `no API address: set SCHED_API_URL (e.g. http://127.0.0.1:8080), pass --api-url, or put "url" in ${o.file?.path ?? '~/.config/sched/config.json'}`,
    );
  return { url: checkUrl(url, urlFrom), key, source: { url: urlFrom, ...(key ? { key: keyFrom } : {}) } };
}
