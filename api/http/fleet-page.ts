// The fleet page served at /fleet: one HTML document with its style and a small script, no
// build step and nothing fetched from elsewhere. The script reads the API key from `?key=`
// (then drops it from the address bar) or asks for it once, keeps it in sessionStorage, and
// redraws from `GET /v1/fleet` every few seconds (`?refresh=<seconds>`, default 3).
import type { NodeUse } from './fleet';

/** The colour of each use, shared by the page's cells and its legend (and asserted by its test). */
export const USE_COLOURS: Record<NodeUse, string> = {
  whole: '#1f4e9c',
  shared: '#7fb2e5',
  free: '#dff3e3',
  cordoned: '#f0a830',
  down: '#4a4a4a',
};

const USE_WORDS: Record<NodeUse, string> = {
  whole: 'whole: every device allocated',
  shared: 'shared: some devices or shares in use',
  free: 'free: nothing allocated',
  cordoned: 'cordoned or draining',
  down: 'down',
};

const style = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px; color: #1b1b1b; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 18px 0 6px; } h3 { font-size: 14px; margin: 10px 0 4px; }
#meta { color: #555; margin-bottom: 8px; }
#error { display: none; background: #fde2e1; border: 1px solid #c0392b; padding: 6px 10px; margin: 8px 0; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; margin: 6px 0 10px; }
.legend span { display: inline-flex; align-items: center; gap: 5px; }
.swatch { width: 14px; height: 14px; border: 1px solid #888; display: inline-block; }
.grid { display: flex; flex-wrap: wrap; gap: 4px; max-width: 1100px; }
.node { width: 92px; height: 44px; border: 1px solid #777; border-radius: 3px; font-size: 11px; padding: 2px 4px;
  box-sizing: border-box; overflow: hidden; }
.node .devices { display: block; font-size: 10px; }
${Object.entries(USE_COLOURS)
  .map(([use, colour]) => `.node.${use}, .swatch.${use} { background-color: ${colour}; }`)
  .join('\n')}
.node.whole, .node.down { color: #fff; }
table { border-collapse: collapse; margin: 4px 0 10px; } th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eee; } .empty { color: #777; font-style: italic; }
`;

// The browser side: plain DOM, textContent only (names and reasons are never parsed as HTML).
const script = `
(() => {
  const params = new URLSearchParams(location.search);
  const fromQuery = params.get('key');
  if (fromQuery) {
    sessionStorage.setItem('schedApiKey', fromQuery);
    params.delete('key');
    history.replaceState(null, '', location.pathname + (params.toString() ? '?' + params : ''));
  }
  let key = sessionStorage.getItem('schedApiKey');
  if (!key) {
    key = prompt('API key (operator role) for this region') || '';
    if (key) sessionStorage.setItem('schedApiKey', key);
  }
  const refreshS = Math.max(1, Number(params.get('refresh')) || 3);
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  };
  const table = (head, rows) => {
    const t = el('table', {}, el('tr', {}, ...head.map((h) => el('th', {}, h))));
    for (const r of rows) t.append(el('tr', {}, ...r.map((c) => el('td', {}, c))));
    return t;
  };
  const ago = (s) => (s < 90 ? s + ' s' : s < 5400 ? Math.round(s / 60) + ' min' : Math.round(s / 3600) + ' h');

  function draw(f) {
    $('region').textContent = f.region;
    $('meta').textContent = 'updated ' + new Date(f.at).toLocaleTimeString() + ', every ' + refreshS + ' s';
    const nodes = $('nodes');
    nodes.replaceChildren();
    if (!f.types.length) nodes.append(el('p', { class: 'empty' }, 'no nodes registered'));
    for (const t of f.types) {
      const counts = Object.entries(t.counts).filter(([, n]) => n > 0).map(([u, n]) => n + ' ' + u).join(', ');
      nodes.append(el('h3', {}, t.acceleratorType + ' — ' + t.nodes.length + ' nodes (' + counts + '), ' + t.freeDevices + ' of ' + t.devices + ' devices free'));
      const grid = el('div', { class: 'grid', 'data-type': t.acceleratorType });
      for (const n of t.nodes)
        grid.append(el('div', { class: 'node ' + n.use, 'data-node': n.name, 'data-use': n.use,
          title: n.name + ' (' + n.state + ', ' + n.pod + '/' + n.rack + '): ' + n.freeDevices + ' of ' + n.deviceCount + ' devices free' },
          n.name, el('span', { class: 'devices' }, n.freeDevices + '/' + n.deviceCount + ' free')));
      nodes.append(grid);
    }
    const queue = $('queue');
    queue.replaceChildren();
    for (const q of f.queue) {
      const byType = Object.entries(q.byType).map(([ty, n]) => n + ' ' + ty).join(', ');
      queue.append(el('h3', { 'data-tier': q.tier }, q.tier + ': ' + q.waiting + ' waiting' + (byType ? ' (' + byType + ')' : '')));
      if (q.jobs.length)
        queue.append(table(['job', 'tenant', 'priority', 'wants', 'waiting', 'reason'],
          q.jobs.map((j) => [j.jobId, j.tenant, j.priority, j.devices + ' × ' + j.acceleratorTypes.join('|'), ago(j.waitingS), j.waitingReason || '—'])));
    }
    const pre = $('preemptions');
    pre.replaceChildren();
    if (!f.preemptions.length) pre.append(el('p', { class: 'empty' }, 'none in the last hour'));
    else pre.append(table(['job', 'tenant', 'tier', 'gave way to', 'when', ''],
      f.preemptions.map((p) => [p.victim, p.tenant, p.tier, p.preemptor, new Date(p.at).toLocaleTimeString(), p.pending ? 'being preempted' : 'requeued'])));
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  }

  async function refresh() {
    try {
      const res = await fetch('/v1/fleet', { headers: { authorization: 'Bearer ' + key } });
      const body = await res.json();
      if (!res.ok) {
        if (res.status === 401) sessionStorage.removeItem('schedApiKey');
        throw new Error(res.status + ' ' + (body.message || body.error));
      }
      draw(body);
      $('error').style.display = 'none';
    } catch (err) {
      $('error').textContent = 'cannot read the fleet: ' + err.message;
      $('error').style.display = 'block';
    } finally {
      setTimeout(refresh, refreshS * 1000);
    }
  }
  refresh();
})();
`;

export function fleetPageHtml(): string {
  const legend = Object.entries(USE_WORDS)
    .map(([use, words]) => `<span data-legend="${use}"><i class="swatch ${use}"></i>${words}</span>`)
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Fleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>${style}</style></head>
<body>
<h1>Fleet of region <span id="region">…</span></h1>
<div id="meta">loading…</div>
<div id="error" role="alert"></div>
<div class="legend">${legend}</div>
<h2>Nodes by accelerator type</h2><div id="nodes"></div>
<h2>Queue by tier</h2><div id="queue"></div>
<h2>Recent preemptions</h2><div id="preemptions"></div>
<script>${script}</script>
</body></html>`;
}
