// The benches' settings from the environment: each read names its rule, and a value that breaks
// it stops the bench with the variable, the value and the rule, before anything is started. An
// unset or empty variable means the default.

/** A setting the bench refuses; the harness prints its message alone, without a stack. */
export class SettingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SettingError';
  }
}

/** Bounds on a numeric setting; `above` is exclusive (`above: 0` reads "positive"). */
export interface NumberRule {
  min?: number;
  above?: number;
  max?: number;
  integer?: boolean;
}

function ruleText(rule: NumberRule): string {
  const bounds: string[] = [];
  if (rule.above !== undefined) bounds.push(`> ${rule.above}`);
  if (rule.min !== undefined) bounds.push(`≥ ${rule.min}`);
  if (rule.max !== undefined) bounds.push(`≤ ${rule.max}`);
  return `${rule.integer ? 'an integer' : 'a number'}${bounds.length ? ` ${bounds.join(' and ')}` : ''}`;
}

function breaks(v: number, rule: NumberRule): boolean {
  return (
    !Number.isFinite(v) ||
    (rule.integer === true && !Number.isInteger(v)) ||
    (rule.above !== undefined && v <= rule.above) ||
    (rule.min !== undefined && v < rule.min) ||
    (rule.max !== undefined && v > rule.max)
  );
}

/** The variable's value, or undefined when it is unset or blank. */
function raw(name: string): string | undefined {
  const value = process.env[name];
  return value === undefined || value.trim() === '' ? undefined : value;
}

/** The variable's comma-separated items, trimmed; an empty item is refused. */
function items(name: string, value: string): string[] {
  const list = value.split(',').map((s) => s.trim());
  if (list.some((s) => s === '')) throw new SettingError(`${name}=${JSON.stringify(value)}: an item is empty; give a comma-separated list`);
  return list;
}

function parse(name: string, value: string, item: string, rule: NumberRule): number {
  const v = Number(item);
  if (breaks(v, rule)) {
    const which = item === value ? '' : ` (item ${JSON.stringify(item)})`;
    throw new SettingError(`${name}=${JSON.stringify(value)}${which}: must be ${ruleText(rule)}`);
  }
  return v;
}

export function envNumber(name: string, fallback: number, rule: NumberRule = {}): number {
  const value = raw(name);
  return value === undefined ? fallback : parse(name, value, value.trim(), rule);
}

/** A comma-separated list of numbers, each under `rule`; `distinct` refuses a repeated value. */
export function envNumbers(name: string, fallback: number[], rule: NumberRule & { distinct?: boolean } = {}): number[] {
  const value = raw(name);
  if (value === undefined) return fallback;
  const list = items(name, value).map((item) => parse(name, value, item, rule));
  if (rule.distinct && new Set(list).size !== list.length)
    throw new SettingError(`${name}=${JSON.stringify(value)}: repeats a value; each may appear once`);
  return list;
}

/** A comma-separated list of names, each one of `allowed`. */
export function envChoices<T extends string>(name: string, fallback: readonly T[], allowed: readonly T[]): T[] {
  const value = raw(name);
  if (value === undefined) return [...fallback];
  return items(name, value).map((item) => {
    const known = allowed.find((a) => a === item);
    if (known === undefined)
      throw new SettingError(`${name}=${JSON.stringify(value)}: ${JSON.stringify(item)} must be one of ${allowed.join(', ')}`);
    return known;
  });
}

/** A URL (a PostgreSQL server, say). */
export function envUrl(name: string, fallback: string): URL {
  const value = raw(name) ?? fallback;
  try {
    return new URL(value);
  } catch {
    throw new SettingError(`${name}=${JSON.stringify(value)}: must be a URL`);
  }
}
