// The fleet page (/fleet) in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core) against a live HTTP API on 127.0.0.1 over a real region (PostgreSQL +
// Temporal dev server + worker): its node cells match the database (one whole, one shared, one
// free, one cordoned, one down), its queue shows a waiting job with its reason, it redraws after a
// node is cordoned, and its screenshot holds every colour of the legend.
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PNG } from 'pngjs';
import { sql } from 'kysely';
import { USE_COLOURS } from '../../api/http/fleet-page';
import { startApiServer } from '../../worker/api-server';
import { createTestDatabase, type TestDatabase } from '../helpers/db';
import { seedFleet, seedTenants } from '../helpers/fleet';
import { REGION, eventually, startTemporal, type TemporalHarness } from '../helpers/temporal';

const BOOTSTRAP = 'bootstrap-admin-key-for-the-fleet-page-test-0123456789';
const SCREENSHOT = path.join(__dirname, '../../bench/out/fleet-page.png');
const VIEWPORT = { width: 1280, height: 900 };
let t: TestDatabase;
let h: TemporalHarness;
let api: Awaited<ReturnType<typeof startApiServer>>;
let browser: Browser;
let page: Page;
let operatorKey: string;
let names: string[];

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- response bodies are read loosely in assertions
async function call(method: 'GET' | 'POST', url: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${api.url}${url}`, {
    method,
    headers: { authorization: `Bearer ${BOOTSTRAP}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json() };
}
const submit = async (jobId: string, workers: number, devicesPerWorker: number, tier = 'standard') =>
  expect(
    (
      await call('POST', '/v1/jobs', {
        jobId,
        tenant: 'acme/ml',
        tier,
        priority: 0,
        durationMs: 600_000,
        request: { acceleratorTypes: ['A100'], workers, devicesPerWorker, topology: 'any' },
      })
    ).status,
  ).toBe(201);
const jobState = async (jobId: string) => (await call('GET', `/v1/jobs/${jobId}`)).body.summary?.state as string | undefined;
const untilState = (jobId: string, want: string) =>
  eventually(async () => ((await jobState(jobId)) === want ? true : undefined), `${jobId} ${want}`, 60_000);

/** What each node should look like, from the database alone. */
async function expectedUses(): Promise<Record<string, string>> {
  const rows = await t.db.selectFrom('nodes').select(['name', 'state', 'free_milli']).execute();
  return Object.fromEntries(
    rows.map((n) => [
      n.name,
      n.state === 'down'
        ? 'down'
        : n.state !== 'ready'
          ? 'cordoned'
          : n.free_milli.every((m) => m === 0)
            ? 'whole'
            : n.free_milli.every((m) => m === 1000)
              ? 'free'
              : 'shared',
    ]),
  );
}
/** The cells the page shows: node → its data-use, class and computed background colour. */
const cells = () =>
  page.$$eval('.node', (els) =>
    els.map((e) => ({
      node: e.getAttribute('data-node') ?? '',
      use: e.getAttribute('data-use') ?? '',
      className: e.className,
      // Runs in the page (the project's tsconfig has no DOM library).
      background: (globalThis as unknown as { getComputedStyle(el: unknown): { backgroundColor: string } }).getComputedStyle(e)
        .backgroundColor,
    })),
  );
const rgb = (hex: string) => {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255] as const;
};

beforeAll(async () => {
  t = await createTestDatabase('fleetpage');
  const ids = await seedFleet(t.db, { nodes: [['A100', 2, 5]] });
  names = (await t.db.selectFrom('nodes').select('name').where('id', 'in', ids).orderBy('id').execute()).map((n) => n.name);
  await seedTenants(t.db, ['acme/ml']);
  h = await startTemporal('fleet-page');
  // A short preemption grace, so the preemption at the end takes seconds.
  await h.startWorker(t.db, { preemptGraceMs: 200 });
  api = await startApiServer({ db: t.db, client: h.client, region: REGION, bootstrapKey: BOOTSTRAP });
  const key = await call('POST', '/v1/admin/api-keys', { name: 'fleet-viewer', tenant: '*', role: 'operator', reason: 'fleet page test' });
  expect(key.status).toBe(201);
  operatorKey = key.body.key;

  // One node cordoned and one down before anything runs, then a job that fills a node and one that shares another.
  expect((await call('POST', `/v1/nodes/${names[3]}/cordon`, { reason: 'fleet page test' })).status).toBe(200);
  expect((await call('POST', `/v1/nodes/${names[4]}/down`, { reason: 'fleet page test' })).status).toBe(200);
  await submit('fp-whole', 1, 2);
  await untilState('fp-whole', 'running');
  await submit('fp-shared', 1, 1);
  await untilState('fp-shared', 'running');
  // Two workers of two devices each: only one node has two free devices left, so it waits.
  await submit('fp-wait', 2, 2);
  await untilState('fp-wait', 'waiting');

  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  page = await browser.newPage({ viewport: VIEWPORT });
});
afterAll(async () => {
  await browser?.close();
  await api?.close();
  // End the jobs still live before the worker and server go: their activities share the test's
  // client, and a call of theirs retried after its channel closed fails the suite from a timer.
  for (const id of ['fp-whole', 'fp-shared', 'fp-wait', 'fp-premium']) {
    await h?.client.cancel('acme/ml', id, 'test done').catch(() => undefined);
    await h?.client.result('acme/ml', id).catch(() => undefined);
  }
  await h?.teardown();
  await t?.drop();
});

test('the page without a usable key says why it shows nothing', async () => {
  const p = await browser.newPage();
  p.on('dialog', (d) => void d.accept('sched_not_a_key'));
  await p.goto(`${api.url}/fleet?refresh=60`);
  await p.waitForSelector('#error', { state: 'visible' });
  expect(await p.textContent('#error')).toMatch(/^cannot read the fleet: 401 /);
  await p.close();
});

test('the grid colours each node by its use in the database, and the queue shows the waiting job with its reason', async () => {
  await page.goto(`${api.url}/fleet?key=${encodeURIComponent(operatorKey)}&refresh=1`);
  // The key leaves the address bar (it stays in sessionStorage).
  expect(new URL(page.url()).searchParams.get('key')).toBeNull();
  await page.waitForSelector('.grid[data-type="A100"] .node');

  const want = await expectedUses();
  expect(Object.values(want).sort()).toEqual(['cordoned', 'down', 'free', 'shared', 'whole']);
  expect(want[names[3]]).toBe('cordoned');
  expect(want[names[4]]).toBe('down');
  const shown = await cells();
  expect(shown.map((c) => c.node).sort()).toEqual([...names].sort());
  for (const c of shown) {
    expect({ node: c.node, use: c.use }).toEqual({ node: c.node, use: want[c.node] });
    expect(c.className).toBe(`node ${want[c.node]}`);
    const [r, g, b] = rgb(USE_COLOURS[want[c.node] as keyof typeof USE_COLOURS]);
    expect(c.background).toBe(`rgb(${r}, ${g}, ${b})`);
  }
  // The legend names every use.
  expect(await page.$$eval('[data-legend]', (els) => els.map((e) => e.getAttribute('data-legend')))).toEqual([
    'whole',
    'shared',
    'free',
    'cordoned',
    'down',
  ]);

  expect(await page.textContent('h3[data-tier="standard"]')).toBe('standard: 1 waiting (1 A100)');
  const reason = (await t.db.selectFrom('jobs').select('waiting_reason').where('id', '=', 'fp-wait').executeTakeFirstOrThrow())
    .waiting_reason;
  expect(reason).toBeTruthy();
  const row = await page.$$eval('#queue tr', (trs) =>
    trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)).filter((r) => r[0] === 'fp-wait'),
  );
  expect(row).toEqual([['fp-wait', 'acme/ml', '0', '4 × A100', expect.stringMatching(/^\d+ (s|min)$/), reason]]);
  expect(await page.textContent('#preemptions')).toBe('none in the last hour');
  expect(await page.textContent('#region')).toBe(REGION);
});

test('the page redraws by itself: a cordoned node turns cordoned without a reload', async () => {
  const free = Object.entries(await expectedUses()).find(([, use]) => use === 'free')![0];
  const loads = Number(await page.getAttribute('body', 'data-loaded'));
  expect((await call('POST', `/v1/nodes/${free}/cordon`, { reason: 'fleet page refresh test' })).status).toBe(200);
  await page.waitForSelector(`.node[data-node="${free}"][data-use="cordoned"]`, { timeout: 30_000 });
  expect(Number(await page.getAttribute('body', 'data-loaded'))).toBeGreaterThan(loads);
  expect((await call('POST', `/v1/nodes/${free}/uncordon`, { reason: 'back' })).status).toBe(200);
  await page.waitForSelector(`.node[data-node="${free}"][data-use="free"]`, { timeout: 30_000 });
});

test('a screenshot of the page holds the grid in every colour of the legend', async () => {
  fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  const png = PNG.sync.read(fs.readFileSync(SCREENSHOT));
  expect({ width: png.width, height: png.height }).toEqual(VIEWPORT);
  const count: Record<string, number> = {};
  for (const [use, hex] of Object.entries(USE_COLOURS)) {
    const [r, g, b] = rgb(hex);
    let n = 0;
    for (let i = 0; i < png.data.length; i += 4) if (png.data[i] === r && png.data[i + 1] === g && png.data[i + 2] === b) n++;
    count[use] = n;
  }
  // Each use shows as at least a cell's worth of its colour (a cell is 92×44 px; its swatch in the legend adds 14×14).
  for (const use of Object.keys(USE_COLOURS)) expect({ use, enough: count[use] > 1500 }).toEqual({ use, enough: true });
});

test('a preemption shows under recent preemptions with the job that was given way to', async () => {
  // Two premium workers of two devices: one fits on the free node, the other only where a standard job runs.
  await submit('fp-premium', 2, 2, 'premium');
  await untilState('fp-premium', 'running');
  const victims = (
    await t.db
      .selectFrom('jobs')
      .select('id')
      .where(sql<boolean>`'fp-premium' = ANY(preempted_by)`)
      .execute()
  ).map((j) => j.id);
  expect(victims.length).toBeGreaterThan(0);
  const rows = await eventually(async () => {
    const r = await page.$$eval('#preemptions tr', (trs) =>
      trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')).filter((c) => c.length > 0),
    );
    return r.length ? r : undefined;
  }, 'the preemption drawn');
  expect(rows.map((r) => r[0]).sort()).toEqual([...victims].sort());
  for (const r of rows) {
    expect([r[1], r[2], r[3]]).toEqual(['acme/ml', 'standard', 'fp-premium']);
    expect(['requeued', 'being preempted']).toContain(r[5]);
  }
});
