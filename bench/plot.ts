// Minimal PNG line plot (pngjs): axes, a grid at 10% steps, one coloured line per series.
import fs from 'node:fs';
import { PNG } from 'pngjs';

export interface Series {
  name: string;
  color: [number, number, number];
  points: Array<[number, number]>;
}

export function writeLinePlot(file: string, series: Series[], xMax: number, yMax: number, width = 900, height = 560): void {
  const png = new PNG({ width, height });
  png.data.fill(255);
  const m = { l: 60, r: 20, t: 20, b: 50 };
  const px = (x: number) => Math.round(m.l + (x / xMax) * (width - m.l - m.r));
  const py = (y: number) => Math.round(height - m.b - (y / yMax) * (height - m.t - m.b));
  const set = (x: number, y: number, c: [number, number, number]) => {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    const i = (y * width + x) * 4;
    png.data[i] = c[0];
    png.data[i + 1] = c[1];
    png.data[i + 2] = c[2];
    png.data[i + 3] = 255;
  };
  const line = (x0: number, y0: number, x1: number, y1: number, c: [number, number, number], thick = 1) => {
    const steps = Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0), 1);
    for (let s = 0; s <= steps; s++) {
      const x = Math.round(x0 + ((x1 - x0) * s) / steps);
      const y = Math.round(y0 + ((y1 - y0) * s) / steps);
      for (let dx = 0; dx < thick; dx++) for (let dy = 0; dy < thick; dy++) set(x + dx, y + dy, c);
    }
  };
  for (let g = 0; g <= 10; g++) {
    line(px((xMax * g) / 10), py(0), px((xMax * g) / 10), py(yMax), [225, 225, 225]);
    line(px(0), py((yMax * g) / 10), px(xMax), py((yMax * g) / 10), [225, 225, 225]);
  }
  line(px(0), py(0), px(xMax), py(0), [0, 0, 0], 2);
  line(px(0), py(0), px(0), py(yMax), [0, 0, 0], 2);
  for (const s of series)
    for (let i = 1; i < s.points.length; i++)
      line(px(s.points[i - 1][0]), py(s.points[i - 1][1]), px(s.points[i][0]), py(s.points[i][1]), s.color, 2);
  // Legend: a colour swatch per series, top left, in the order listed in the bench output.
  series.forEach((s, i) => {
    for (let dx = 0; dx < 30; dx++) for (let dy = 0; dy < 8; dy++) set(m.l + 20 + dx, m.t + 15 + i * 16 + dy, s.color);
  });
  fs.writeFileSync(file, PNG.sync.write(png));
}
