// The Grafana dashboard in deploy/grafana queries exactly the metrics the registry defines: every
// metric an expression names exists (histogram series included), every scheduler metric has a
// panel, and every selector honours the dashboard's region variable.
import fs from 'node:fs';
import path from 'node:path';
import { Histogram } from 'prom-client';
import { metricsRegistry, schedulerMetricNames } from '../../activities/metrics';

const DASHBOARD = path.join(__dirname, '..', '..', 'deploy', 'grafana', 'scheduler-dashboard.json');
const dashboard = JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as unknown;

/** Every `expr` anywhere in the dashboard, with where it is. */
function exprs(node: unknown, where = ''): Array<{ where: string; expr: string }> {
  if (Array.isArray(node)) return node.flatMap((n, i) => exprs(n, `${where}[${i}]`));
  if (node === null || typeof node !== 'object') return [];
  const o = node as Record<string, unknown>;
  const here = typeof o.title === 'string' ? `${where} "${o.title}"` : where;
  return Object.entries(o).flatMap(([k, v]) =>
    k === 'expr' && typeof v === 'string' ? [{ where: here, expr: v }] : exprs(v, `${here}.${k}`),
  );
}

const PROMQL_WORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'offset', 'bool']);

/** The metric names a PromQL expression selects: identifiers left once strings, matchers, ranges, groupings and function calls are removed. */
function metricsIn(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = [...bare.matchAll(/[a-zA-Z_:][\w:]*(?!\s*\(|\w)/g)].map((m) => m[0]).filter((w) => !PROMQL_WORDS.has(w));
  return [...new Set(names)];
}

/** Series names the registry exposes: each metric, and a histogram's _bucket, _sum and _count. */
function exposedSeries(): Set<string> {
  const out = new Set<string>();
  for (const m of metricsRegistry.getMetricsAsArray()) {
    out.add(m.name);
    if (m instanceof Histogram) for (const s of ['_bucket', '_sum', '_count']) out.add(`${m.name}${s}`);
  }
  return out;
}

const baseName = (series: string): string => series.replace(/_(bucket|sum|count)$/, '');

describe('the Grafana dashboard', () => {
  const all = exprs(dashboard);
  const templates = ((dashboard as { templating: { list: Array<{ definition?: string }> } }).templating.list ?? [])
    .map((v) => /^label_values\((\w+),\s*(\w+)\)$/.exec(v.definition ?? ''))
    .filter((m): m is RegExpExecArray => m !== null);

  test('the expression parser finds the metrics of typical PromQL', () => {
    expect(metricsIn('histogram_quantile(0.99, sum by (le, tier) (rate(sched_x_bucket{region=~"$region"}[5m])))')).toEqual([
      'sched_x_bucket',
    ]);
    expect(metricsIn('sum by (tier) (rate(a_total{k="v"}[5m])) / sum(b) and on(region) c')).toEqual(['a_total', 'b', 'c']);
  });

  test('has panels with expressions', () => {
    expect(all.length).toBeGreaterThanOrEqual(10);
  });

  test('every expression selects at least one metric, and every metric it names is defined by the registry', () => {
    const series = exposedSeries();
    for (const { where, expr } of all) {
      const names = metricsIn(expr);
      expect({ where, expr, selects: names.length > 0 }).toMatchObject({ selects: true });
      for (const n of names) expect({ where, metric: n, defined: series.has(n) }).toEqual({ where, metric: n, defined: true });
    }
  });

  test('every selector is narrowed by the region variable', () => {
    for (const { where, expr } of all)
      for (const n of metricsIn(expr))
        expect({ where, metric: n, filtered: expr.includes(`${n}{region=~"$region"}`) }).toMatchObject({ filtered: true });
  });

  test('every scheduler metric has a panel', () => {
    const used = new Set(all.flatMap(({ expr }) => metricsIn(expr).map(baseName)));
    expect(schedulerMetricNames().filter((n) => !used.has(n))).toEqual([]);
  });

  test('the region variable lists the regions from a metric the registry defines', () => {
    expect(templates.map((m) => [m[1], m[2]])).toEqual([['sched_jobs', 'region']]);
    expect(schedulerMetricNames()).toContain(templates[0][1]);
  });
});
