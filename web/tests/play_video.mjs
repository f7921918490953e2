// Plays videos in headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) and reports, as
// one JSON line, whether it says it plays H.264 with AAC in MP4 and what it made of each video. Run by tests/test_video_playback.py:
//
//   node web/tests/play_video.mjs '{"url": "http://127.0.0.1:PORT/", "videos": ["a.mp4", "b.mp4"],
//                                   "chromium": "/usr/bin/chromium", "playSeconds": 0.5}'
//
// Per video: readyState after loading, videoWidth/Height, duration, currentTime after playing (muted, as
// autoplay allows), the bytes Chromium's decoders took in (webkitVideo/AudioDecodedByteCount), the media
// error code if any, the brightest channel value of a frame drawn to a canvas, and the audio track decoded
// on its own with Web Audio (channels, length, peak).
import { chromium } from 'playwright-core';

const opts = JSON.parse(process.argv[2]);
const timeout = opts.timeoutMs ?? 30000;
const result = { videos: {}, pageErrors: [] };

const browser = await chromium.launch({
  executablePath: opts.chromium ?? '/usr/bin/chromium',
  headless: true,
  timeout,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required'],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeout);
  page.on('pageerror', (err) => result.pageErrors.push(String(err)));
  await page.goto(opts.url); // same origin as the videos, so a drawn frame can be read back
  result.h264 = await page.evaluate(() => document.createElement('video')
    .canPlayType('video/mp4; codecs="avc1.42E01E, mp4a.40.2"'));
  for (const name of opts.videos) {
    result.videos[name] = await page.evaluate(async ({ name, playSeconds, waitMs }) => {
      const video = document.createElement('video');
      video.muted = true;
      video.preload = 'auto';
      document.body.append(video);
      const out = {};
      const settled = (events) => new Promise((resolve) => {
        const timer = setTimeout(() => resolve('timeout'), waitMs);
        for (const e of events) video.addEventListener(e, () => { clearTimeout(timer); resolve(e); }, { once: true });
      });
      const loading = settled(['loadeddata', 'error']);
      video.src = name;
      out.loadEvent = await loading;
      out.readyState = video.readyState;
      out.videoWidth = video.videoWidth;
      out.videoHeight = video.videoHeight;
      out.duration = Number.isFinite(video.duration) ? video.duration : null;
      if (out.loadEvent === 'loadeddata') {
        try {
          await video.play();
          const start = performance.now();
          while (video.currentTime < playSeconds && !video.ended && !video.error &&
                 performance.now() - start < waitMs) {
            await new Promise((r) => setTimeout(r, 50));
          }
          video.pause();
        } catch (err) {
          out.playError = String(err);
        }
      }
      if (video.videoWidth > 0) { // none when Chromium dropped a video track it cannot decode
        const canvas = document.createElement('canvas');
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        const context = canvas.getContext('2d');
        context.drawImage(video, 0, 0);
        const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
        let brightest = 0;
        for (let i = 0; i < pixels.length; i += 4) {
          brightest = Math.max(brightest, pixels[i], pixels[i + 1], pixels[i + 2]);
        }
        out.brightest = brightest;
      }
      out.currentTime = video.currentTime;
      out.videoDecodedBytes = video.webkitVideoDecodedByteCount;
      out.audioDecodedBytes = video.webkitAudioDecodedByteCount;
      out.error = video.error ? video.error.code : null;
      try { // the audio track alone, through the browser's own audio decoders
        const audio = await new OfflineAudioContext(1, 1, 44100)
          .decodeAudioData(await (await fetch(name)).arrayBuffer());
        const samples = audio.getChannelData(0);
        out.audio = { channels: audio.numberOfChannels, seconds: audio.duration,
                      peak: samples.reduce((m, v) => Math.max(m, Math.abs(v)), 0) };
      } catch (err) {
        out.audio = { error: String(err) };
      }
      video.remove();
      return out;
    }, { name, playSeconds: opts.playSeconds ?? 0.5, waitMs: opts.waitMs ?? 10000 });
  }
} catch (err) {
  result.error = String(err.message || err).split('\n')[0];
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
