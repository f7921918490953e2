// Drives the demo page in headless Chromium for benchmarks/bench_web.py, one JSON command per stdin line,
// one JSON answer per stdout line (Debian's /usr/bin/chromium through playwright-core from web/node_modules;
// no browser download):
//
//   {"cmd": "open", "id": "slim-wasm-2", "query": "model=slim&backend=wasm&threads=2&long=640"}
//       -> {"id", "runtime": {backend, threads, adapter, note, requested}, "crossOriginIsolated", "latencyText"}
//   {"cmd": "time", "id": "slim-wasm-2", "frames": 5}  -> {"id", "times": [ms, ...], "frameMs"}
//   {"cmd": "screenshot", "id": "...", "path": "page.png"}  -> {"id"}
//
// Each page opens with the sample detected (the page does it on load); "time" calls the page's own
// window.blazeface.timeFrames, so the numbers are the ones the page shows. Errors come back as {"error"}.
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';

const require = createRequire(new URL('../web/package.json', import.meta.url));
const { chromium } = require('playwright-core');

const opts = JSON.parse(process.argv[2]);
const timeout = opts.timeoutMs ?? 300000;
const browser = await chromium.launch({
  executablePath: opts.chromium ?? '/usr/bin/chromium',
  headless: true,
  timeout,
  // WebGPU in headless Chromium: only with --enable-unsafe-webgpu (here it finds SwiftShader, a CPU adapter,
  // or the machine's GPU where there is one).
  args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', ...(opts.webgpu ? ['--enable-unsafe-webgpu'] : ['--disable-gpu'])],
});
const context = await browser.newContext({ viewport: { width: 900, height: 700 }, deviceScaleFactor: 1 });
const pages = new Map();

async function handle(msg) {
  if (msg.cmd === 'open') {
    const page = await context.newPage();
    page.setDefaultTimeout(timeout);
    const errors = [];
    page.on('pageerror', (err) => errors.push(String(err)));
    await page.goto(`${opts.url}?${msg.query}`);
    await page.waitForFunction(() => window.blazeface?.state === 'error' || window.blazeface?.loaded);
    const state = await page.evaluate(() => ({
      error: window.blazeface.error, runtime: window.blazeface.runtime, crossOriginIsolated: self.crossOriginIsolated,
      faces: window.blazeface.last?.faces.length, inputSize: window.blazeface.last?.inputSize }));
    if (state.error || errors.length) return { error: state.error ?? errors[0] };
    pages.set(msg.id, page);
    return { ...state, latencyText: await page.textContent('#latency') };
  }
  const page = pages.get(msg.id);
  if (!page) return { error: `no page ${msg.id}` };
  if (msg.cmd === 'time') return page.evaluate((n) => window.blazeface.timeFrames(n), msg.frames);
  if (msg.cmd === 'screenshot') {
    await page.screenshot({ path: msg.path, fullPage: true });
    return {};
  }
  return { error: `unknown command ${msg.cmd}` };
}

try {
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    const msg = JSON.parse(line);
    let answer;
    try {
      answer = await handle(msg);
    } catch (err) {
      answer = { error: String(err.message || err).split('\n')[0] };
    }
    process.stdout.write(`${JSON.stringify({ id: msg.id, ...answer })}\n`);
  }
} finally {
  await browser.close();
}
