// Labelled charts for the benches: a vega-lite spec compiled to vega, rendered headless to SVG,
// and the SVG rasterised to PNG with resvg (system fonts, so the titles, axis labels and legend
// are real text in both files).
import fs from 'node:fs';
import { Resvg } from '@resvg/resvg-js';
import type * as Vega from 'vega';
import type * as VegaLite from 'vega-lite/build/index';

/** The family named in the charts; resvg falls back to the system's sans-serif when it is absent. */
const FONT = 'DejaVu Sans';

/** One line: its name in the legend and its (x, y) points. */
export interface Series {
  name: string;
  points: Array<[number, number]>;
}

export interface LineChart {
  title: string;
  subtitle?: string;
  xTitle: string;
  yTitle: string;
  series: Series[];
  /** Axis ranges; default: the data's. */
  xDomain?: [number, number];
  yDomain?: [number, number];
  /** d3 format of the axis labels, e.g. `.0%`. */
  xFormat?: string;
  yFormat?: string;
}

/** One bar: its group on the x axis, its series (colour, named in the legend) and its value. */
export interface Bar {
  group: string;
  series: string;
  value: number;
}

export interface BarChart {
  title: string;
  subtitle?: string;
  xTitle: string;
  yTitle: string;
  bars: Bar[];
  yDomain?: [number, number];
  yFormat?: string;
  /** Legend order (default: first appearance). */
  seriesOrder?: string[];
}

/** The files a chart was written to. */
export interface ChartFiles {
  svg: string;
  png: string;
}

const CONFIG: VegaLite.TopLevelSpec['config'] = {
  font: FONT,
  title: { fontSize: 16, subtitleFontSize: 12, anchor: 'start' },
  axis: { labelFontSize: 12, titleFontSize: 13, grid: true },
  legend: { labelFontSize: 12, titleFontSize: 13, orient: 'right' },
  background: 'white',
};

function titleOf(title: string, subtitle?: string): VegaLite.TopLevelSpec['title'] {
  return subtitle ? { text: title, subtitle } : title;
}

/** A line chart of `chart.series` written to `<base>.svg` and `<base>.png`. */
export async function writeLineChart(base: string, chart: LineChart): Promise<ChartFiles> {
  const values = chart.series.flatMap((s) => s.points.map(([x, y]) => ({ series: s.name, x, y })));
  const spec: VegaLite.TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: titleOf(chart.title, chart.subtitle),
    width: 720,
    height: 420,
    data: { values },
    mark: { type: 'line', strokeWidth: 2 },
    encoding: {
      x: {
        field: 'x',
        type: 'quantitative',
        title: chart.xTitle,
        ...(chart.xDomain ? { scale: { domain: chart.xDomain } } : {}),
        ...(chart.xFormat ? { axis: { format: chart.xFormat } } : {}),
      },
      y: {
        field: 'y',
        type: 'quantitative',
        title: chart.yTitle,
        ...(chart.yDomain ? { scale: { domain: chart.yDomain, zero: false } } : {}),
        ...(chart.yFormat ? { axis: { format: chart.yFormat } } : {}),
      },
      color: { field: 'series', type: 'nominal', title: 'policy', sort: chart.series.map((s) => s.name) },
    },
    config: CONFIG,
  };
  return render(base, spec);
}

/** A grouped bar chart (one group per x value, one bar per series) written to `<base>.svg` and `<base>.png`. */
export async function writeBarChart(base: string, chart: BarChart): Promise<ChartFiles> {
  const order = chart.seriesOrder ?? [...new Set(chart.bars.map((b) => b.series))];
  const spec: VegaLite.TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: titleOf(chart.title, chart.subtitle),
    width: { step: 22 },
    height: 380,
    data: { values: chart.bars },
    mark: 'bar',
    encoding: {
      x: { field: 'group', type: 'nominal', title: chart.xTitle, sort: null, axis: { labelAngle: -30 } },
      xOffset: { field: 'series', type: 'nominal', sort: order },
      y: {
        field: 'value',
        type: 'quantitative',
        title: chart.yTitle,
        ...(chart.yDomain ? { scale: { domain: chart.yDomain, zero: false, clamp: true } } : {}),
        ...(chart.yFormat ? { axis: { format: chart.yFormat } } : {}),
      },
      color: { field: 'series', type: 'nominal', title: 'policy', sort: order },
    },
    config: CONFIG,
  };
  return render(base, spec);
}

/** Compiles and renders a vega-lite spec headless; both libraries are ES modules, so they are imported at run time. */
async function render(base: string, spec: VegaLite.TopLevelSpec): Promise<ChartFiles> {
  const vega = (await import('vega')) as typeof Vega;
  // A variable specifier: under this project's `node` module resolution the package's types are
  // reached only through its build path (imported as types above), which its exports map does not open at run time.
  const vegaLite = (await import('vega-lite' as string)) as typeof VegaLite;
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const png = new Resvg(svg, {
    font: { loadSystemFonts: true, defaultFontFamily: FONT, sansSerifFamily: FONT },
    fitTo: { mode: 'zoom', value: 1.5 },
  })
    .render()
    .asPng();
  const files = { svg: `${base}.svg`, png: `${base}.png` };
  fs.writeFileSync(files.svg, svg);
  fs.writeFileSync(files.png, png);
  return files;
}
