// Percentiles and number formatting for the benches' tables, so every table reads its
// percentiles and empty cells the same way.

/** The value at percentile `p` of ascending `sorted` (nearest rank, rounding down); NaN when empty. */
export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

export const ascending = (xs: number[]): number[] => [...xs].sort((a, b) => a - b);

export const mean = (xs: number[]): number => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

/** Count, p50, p99 and max of a sample, in any order (NaN for an empty one). */
export function quantiles(values: number[]): { n: number; p50: number; p99: number; max: number } {
  const s = ascending(values);
  return { n: s.length, p50: percentile(s, 50), p99: percentile(s, 99), max: s.length ? s[s.length - 1] : NaN };
}

/** A table cell: fixed digits, or '-' where there is no value. */
export const fmt = (v: number, digits = 0): string => (Number.isFinite(v) ? v.toFixed(digits) : '-');
