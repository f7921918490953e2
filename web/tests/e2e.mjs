// End-to-end check of the demo page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser download). Run by tests/test_web.py:
//
//   node web/tests/e2e.mjs '{"url": "http://127.0.0.1:PORT/", "image": "sample.jpg", "screenshot": "out.png",
//                            "threshold": 0.9, "switchTo": "slim", "webcam": true, "query": "threads=1&conf=0.5"}'
//
// Loads the page, opens the photo through the file input, waits for the detections and prints, as one JSON
// line, what the page found (window.blazeface.last); then, as asked, moves the score threshold, switches to
// another model and runs the webcam mode on Chromium's fake camera for a few frames.
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

  await page.goto(`${opts.url}?${opts.query ?? ''}`);
  await page.waitForFunction(() => ['ready', 'error'].includes(window.blazeface?.state));
  result.crossOriginIsolated = await page.evaluate(() => self.crossOriginIsolated);
  result.models = await page.evaluate(() => window.blazeface.models);
  if (await page.evaluate(() => window.blazeface.state) === 'error') {
    result.error = await page.evaluate(() => window.blazeface.error);
  } else {
    const name = opts.image.split('/').pop();
    await page.setInputFiles('#file', opts.image);
    await page.waitForFunction((n) => window.blazeface.state === 'error' ||
      (window.blazeface.state === 'done' && window.blazeface.last?.source === n), name);
    result.photo = await page.evaluate(() => window.blazeface.last);
    result.error = await page.evaluate(() => window.blazeface.error);
    result.latencyText = await page.textContent('#latency');
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
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
      await page.click('#webcam');
      await page.waitForFunction(() => window.blazeface.state === 'error' || window.blazeface.frames >= 3);
      result.webcam = await page.evaluate(() => ({ frames: window.blazeface.frames, last: window.blazeface.last,
                                                  error: window.blazeface.error }));
      await page.click('#webcam'); // stop
    }
  }
} catch (err) {
  result.error = String(err.message || err).split('\n')[0];
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
