import { chromium } from 'playwright-core';
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu'] });
const page = await browser.newPage();
page.setDefaultTimeout(200000);
await page.goto('http://127.0.0.1:8771/?' + (process.argv[2] || 'threads=1'));
await page.waitForFunction(() => ['done', 'error'].includes(window.blazeface?.state));
const r = await page.evaluate(async () => {
  const lb = await import('/src/letterbox.js');
  const bmp = await createImageBitmap(await (await fetch('/sample.jpg')).blob());
  const c = document.createElement('canvas'); c.width = 400; c.height = 210;
  const ctx = c.getContext('2d', { willReadFrequently: true });
  const t = { draw: [], resize: [], input: [] };
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    ctx.drawImage(bmp, 0, 0, 400, 210);
    const px = ctx.getImageData(0, 0, 400, 210).data;
    const t1 = performance.now();
    const r = lb.resizeBilinear(px, 400, 210, 640, 336);
    const t2 = performance.now();
    lb.toInput(r, [640, 336], [640, 336], [104, 117, 123]);
    const t3 = performance.now();
    t.draw.push(t1 - t0); t.resize.push(t2 - t1); t.input.push(t3 - t2);
  }
  const med = (a) => a.sort((x, y) => x - y)[a.length >> 1];
  const timed = await window.blazeface.timeFrames(10);
  return { draw: med(t.draw), resize: med(t.resize), input: med(t.input), frame: timed.frameMs, last: window.blazeface.last.timings };
});
console.log(JSON.stringify(r));
await browser.close();
