// Human output: aligned text tables and short durations. Plain functions over strings.

export type Cell = string | number | boolean | null | undefined;

const text = (c: Cell): string => (c === null || c === undefined || c === '' ? '-' : String(c));

/**
 * Columns padded to their widest cell, two spaces apart; numbers right-aligned; the last column
 * left unpadded (long reasons do not push trailing blanks). An empty table prints `empty`.
 */
export function renderTable(headers: readonly string[], rows: readonly Cell[][], empty = '(none)'): string {
  if (rows.length === 0) return `${empty}\n`;
  const cells = rows.map((r) => headers.map((_, i) => text(r[i])));
  const numeric = headers.map((_, i) => rows.every((r) => typeof r[i] === 'number' || r[i] === null || r[i] === undefined));
  const widths = headers.map((h, i) => Math.max(h.length, ...cells.map((r) => r[i].length)));
  const line = (r: readonly string[]) =>
    r
      .map((c, i) => (i === r.length - 1 ? c : numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  return (
    [line(headers.map((h, i) => (numeric[i] && i < headers.length - 1 ? h.padStart(widths[i]) : h))), ...cells.map(line)].join('\n') + '\n'
  );
}

/** `key: value` lines, keys aligned, undefined values left out. */
export function renderFields(fields: ReadonlyArray<[string, Cell]>): string {
  const shown = fields.filter(([, v]) => v !== undefined);
  const width = Math.max(0, ...shown.map(([k]) => k.length));
  return shown.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${text(v)}`).join('\n') + '\n';
}

/** 42 s, 7 min, 3.5 h, 2 d. */
export function shortDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${Math.round((seconds / 3600) * 10) / 10} h`;
  return `${Math.round((seconds / 86400) * 10) / 10} d`;
}

/** A share as a percentage with no decimals (0..1 → "37%"). */
export const percent = (ratio: number): string => (Number.isFinite(ratio) ? `${Math.round(ratio * 100)}%` : '-');
