// End-to-end check of the demo page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser download). Run by tests/test_web.py:
//
//   node web/tests/e2e.mjs '{"url": "http://127.0.0.1:PORT/", "image": "sample.jpg", "screenshot": "out.png",
//                            "threshold": 0.9, "switchTo": "slim", "webcam": true, "timeFrames": 3,
//                            "query": "threads=2&conf=0.5"}'
//
// Loads the page and waits for the sample it detects on load (what the page found, window.blazeface.last;
// the backend it runs; the latency line; the colours on its canvas); opens the photo through the file input
// and waits for those detections; then, as asked, times a few more frames with the page's timer, moves the
// score threshold, switches to another model, runs the webcam mode on Chromium's fake camera for a few
// frames and opens the page once more with secondQuery (e.g. "backend=webgpu" where there is no GPU).
// Prints one JSON line.
import { chromium } from 'playwright-core';

const opts = JSON.parse(process.argv[2]);
const timeout = opts.timeoutMs ?? 60000;
const result = { console: [], pageErrors: [] };

const browser = await chromium.launch({
  executablePath: opts.chromium ?? '/usr/bin/chromium',
  headless: true,
  timeout,
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 880, height: 640 }, deviceScaleFactor: 1 });
  await context.grantPermissions(['camera']);
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('console', (msg) => { if (msg.type() === 'error') result.console.push(msg.text()); });
  page.on('pageerror', (err) => result.pageErrors.push(String(err)));
  // Anything not served by the demo server is a failure: the page must need nothing from the internet.
  const origin = new URL(opts.url).origin;
  result.foreignRequests = [];
  page.on('request', (req) => {
    if (!req.url().startsWith(origin) && !req.url().startsWith('data:') && !req.url().startsWith('blob:')) {
      result.foreignRequests.push(req.url());
    }
  });
  // onnxruntime-web's own files as served: the threaded SIMD build must arrive with its MIME types.
  result.ortFiles = {};
  page.on('response', (res) => {
    const path = new URL(res.url()).pathname;
    if (path.startsWith('/ort/')) result.ortFiles[path.slice(5)] = [res.status(), res.headers()['content-type']];
  });

  await page.goto(`${opts.url}?${opts.query ?? ''}`);
  // No click: the page detects its sample on load (and times a few more frames of it).
  await page.waitForFunction(() => window.blazeface?.state === 'error' || window.blazeface?.loaded);
  result.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  result.models = await page.evaluate(() => window.blazeface.models);
  result.runtime = await page.evaluate(() => window.blazeface.runtime);
  result.workers = page.workers().length; // onnxruntime-web's wasm threads are Web Workers
  if (await page.evaluate(() => window.blazeface.state) === 'error') {
    result.error = await page.evaluate(() => window.blazeface.error);
  } else {
    result.onLoad = await page.evaluate(() => window.blazeface.last);
    result.onLoadText = await page.textContent('#latency');
    result.onLoadStatus = await page.textContent('#status');
    // What the canvas shows: the picture (not black), the boxes' red and the five landmark colours.
    result.canvas = await page.evaluate(() => {
      const canvas = document.getElementById('view');
      const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      const colours = { box: [255, 32, 32], leftEye: [0, 0, 255], rightEye: [255, 255, 0], nose: [255, 0, 255],
        leftMouth: [0, 255, 0], rightMouth: [255, 128, 0] };
      const counts = Object.fromEntries(Object.keys(colours).map((k) => [k, 0]));
      let bright = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i] + data[i + 1] + data[i + 2] > 96) bright += 1;
        for (const [k, [r, g, b]] of Object.entries(colours)) {
          if (Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 24) counts[k] += 1;
        }
      }
      return { width: canvas.width, height: canvas.height, brightFraction: bright / (data.length / 4), counts };
    });
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
    const before = await page.evaluate(() => window.blazeface.frames);
    const name = opts.image.split('/').pop();
    await page.setInputFiles('#file', opts.image);
    await page.waitForFunction(([n, k]) => window.blazeface.state === 'error' || (window.blazeface.state === 'done' &&
      window.blazeface.last?.source === n && window.blazeface.frames > k), [name, before]);
    result.photo = await page.evaluate(() => window.blazeface.last);
    result.error = await page.evaluate(() => window.blazeface.error);
    result.latencyText = await page.textContent('#latency');
    if (opts.timeFrames && !result.error) { // the page's own timer ("Time 20 frames" runs it with 20)
      result.timed = await page.evaluate((n) => window.blazeface.timeFrames(n), opts.timeFrames);
      result.timedText = await page.textContent('#latency');
      result.timedLast = await page.evaluate(() => window.blazeface.last);
    }
    if (opts.threshold) { // only the post-processing runs again, on the same raw outputs
      await page.$eval('#threshold', (el, v) => {
        el.value = v;
        el.dispatchEvent(new Event('input'));
      }, String(opts.threshold));
      await page.waitForFunction((v) => window.blazeface.last?.conf === v, opts.threshold);
      result.thresholded = await page.evaluate(() => window.blazeface.last);
    }
    if (opts.switchTo) {
      await page.selectOption('#model', opts.switchTo);
      await page.waitForFunction((id) => window.blazeface.state === 'error' ||
        (window.blazeface.state === 'done' && window.blazeface.last?.model === id), opts.switchTo);
      result.switched = await page.evaluate(() => window.blazeface.last);
      result.error = await page.evaluate(() => window.blazeface.error);
    }
    if (opts.webcam && !result.error) {
      const stills = await page.evaluate(() => window.blazeface.frames);
      await page.click('#webcam');
      await page.waitForFunction((k) => window.blazeface.state === 'error' || window.blazeface.frames >= k + 3,
        stills);
      result.webcam = await page.evaluate((k) => ({ frames: window.blazeface.frames - k, last: window.blazeface.last,
                                                   error: window.blazeface.error }), stills);
      result.webcamText = await page.textContent('#latency');
      await page.click('#webcam'); // stop
    }
    if (opts.secondQuery && !result.error) { // the same page opened again with other settings
      const other = await context.newPage();
      other.setDefaultTimeout(timeout);
      other.on('pageerror', (err) => result.pageErrors.push(String(err)));
      await other.goto(`${opts.url}?${opts.secondQuery}`);
      await other.waitForFunction(() => window.blazeface?.state === 'error' || window.blazeface?.loaded);
      result.second = await other.evaluate(() => ({ runtime: window.blazeface.runtime, last: window.blazeface.last,
                                                   error: window.blazeface.error }));
      result.secondText = await other.textContent('#latency');
    }
  }
} catch (err) {
  result.error = String(err.message || err).split('\n')[0];
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
