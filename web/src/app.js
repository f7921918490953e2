// The demo page: pick a model, a photo or the webcam; detect in the browser; draw boxes, scores, landmarks.
import { configureRuntime, Detector, runtime } from './detector.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// Multi-threaded wasm needs SharedArrayBuffer, i.e. a cross-origin isolated page (`blazeface web` sends
// the COOP/COEP headers). Threads: one per logical core, at most 4. On this 2-core test machine, quiet, 2 threads
// took 0.71x the time of 1 for slim at 640 (benchmarks/bench_web.py); with a training run busy on both cores
// they were 3x slower (spinning workers compete with it), so ?threads=N overrides for a loaded machine.
const threads = Number(params.get('threads')) ||
  (self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);
// 'auto': WebGPU on a hardware adapter, else WebAssembly; ?backend=wasm or ?backend=webgpu forces one.
const backend = ['auto', 'wasm', 'webgpu'].includes(params.get('backend')) ? params.get('backend') : 'auto';
const RECENT_FRAMES = 30; // the per-frame time shown is the median of this many recent frames
const TIMED_FRAMES = 20; // the "Time 20 frames" button
const ON_LOAD_FRAMES = 5; // the sample's frames after the first, on load, so the time shown is a warm one
const DISPLAY_MIN = 800; // long side of the drawn picture: small photos are enlarged, big ones reduced
const DISPLAY_MAX = 1280;
// RGB of left eye, right eye, nose, left mouth corner, right mouth corner (as src/blazeface/draw.py).
const LANDMARK_COLOURS = ['#0000ff', '#ffff00', '#ff00ff', '#00ff00', '#ff8000'];

// Exposed for the end-to-end test (tests/test_web.py) and for curious users in the console.
const demo = { state: 'loading', models: [], last: null, frames: 0, error: null, runtime, frameMs: null,
  loaded: false, timeFrames };
window.blazeface = demo;

let models = [];
const detectors = new Map(); // model id -> Promise<Detector>
let current = null; // the still picture: {bitmap, name, width, height, result, detector}
let webcam = null; // {stream, running}
let queue = Promise.resolve(); // session runs, one at a time
// Recent per-frame times (preprocess + inference + postprocess, ms) of one model, backend and input size;
// the first frame of each (the warm-up: memory planning, WebGPU shader compilation) is kept apart.
const recent = { key: '', times: [], warmup: 0 };

function setState(state) {
  demo.state = state;
  document.body.dataset.state = state;
}

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
  if (isError) {
    demo.error = text;
    setState('error');
  }
}

function exclusive(task) {
  const run = queue.then(task, task);
  queue = run.catch(() => {});
  return run;
}

function options() {
  return { conf: Number($('threshold').value), nms: 0.4, topK: 5000, keepTopK: 750 };
}

function longSide() {
  return Number($('long-side').value);
}

function currentModel() {
  return models.find((m) => m.id === $('model').value);
}

async function detector() {
  const entry = currentModel();
  if (!detectors.has(entry.id)) {
    const loading = Detector.load(entry.url);
    detectors.set(entry.id, loading);
    loading.catch(() => detectors.delete(entry.id));
  }
  const det = await detectors.get(entry.id);
  const c = det.config;
  $('model-info').textContent = `${entry.label}: from the ONNX metadata: model ${c.model}, steps ` +
    `${JSON.stringify(c.steps)}, min sizes ${JSON.stringify(c.minSizes)}, variances ` +
    `${JSON.stringify(c.variances)}, mean (BGR) ${JSON.stringify(c.meanBgr)}, size multiple ${c.sizeMultiple}; ` +
    `onnxruntime-web ${backendLabel(det)}, cross-origin isolated: ${self.crossOriginIsolated ? 'yes' : 'no'}` +
    `${runtime.note ? ` (${runtime.note})` : ''}`;
  return det;
}

/** "wasm ×2 threads" or "WebGPU (adapter)": what onnxruntime-web really runs, not what was asked. */
function backendLabel(det) {
  if (det.backend === 'webgpu') return `WebGPU (${runtime.adapter})`;
  return `wasm ×${runtime.threads} thread${runtime.threads === 1 ? '' : 's'}`;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Note one frame's time; the median restarts when the model, backend or input size changes. */
function recordFrame(det, result, decoded) {
  const key = `${currentModel().id}|${det.backend}|${result.box.inputSize.join('x')}`;
  const { preprocess, inference } = result.timings;
  const ms = preprocess + inference + decoded.postprocess;
  if (key !== recent.key) {
    Object.assign(recent, { key, times: [], warmup: ms });
  } else {
    recent.times.push(ms);
    if (recent.times.length > RECENT_FRAMES) recent.times.shift();
  }
  demo.frames += 1;
  demo.frameMs = recent.times.length ? median(recent.times) : recent.warmup;
}

function draw(picture, width, height, faces) {
  const canvas = $('view');
  const long = Math.max(width, height);
  const scale = Math.min(DISPLAY_MAX / long, Math.max(1, DISPLAY_MIN / long));
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(picture, 0, 0, canvas.width, canvas.height);
  const size = Math.max(canvas.width, canvas.height);
  const line = Math.max(1.5, size / 500);
  ctx.lineWidth = line;
  ctx.font = `${Math.max(10, Math.round(size / 60))}px system-ui, sans-serif`;
  ctx.textBaseline = 'bottom';
  for (const face of faces) {
    const [x1, y1, x2, y2] = face.box.map((v) => v * scale);
    ctx.strokeStyle = '#ff2020';
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const label = face.score.toFixed(2);
    const tw = ctx.measureText(label).width;
    const th = parseInt(ctx.font, 10);
    ctx.fillStyle = 'rgba(255, 32, 32, 0.85)';
    ctx.fillRect(x1 - line / 2, y1 - th - 2, tw + 4, th + 2);
    ctx.fillStyle = '#fff';
    ctx.fillText(label, x1 + 2, y1 - 1);
    ctx.lineWidth = Math.max(1, line / 2);
    ctx.strokeStyle = 'rgba(0, 0, 0, 0.6)';
    face.landmarks.forEach(([x, y], q) => {
      ctx.beginPath();
      ctx.arc(x * scale, y * scale, line * 1.9, 0, 2 * Math.PI);
      ctx.fillStyle = LANDMARK_COLOURS[q];
      ctx.fill();
      ctx.stroke();
    });
    ctx.lineWidth = line;
  }
}

function report(name, det, result, decoded, extra = '') {
  const t = { ...result.timings, postprocess: decoded.postprocess };
  t.total = t.preprocess + t.inference + t.postprocess;
  const [w, h] = result.box.inputSize;
  const n = decoded.faces.length;
  const frames = recent.times.length;
  const model = currentModel().model ?? currentModel().id;
  const ms = demo.frameMs < 10 ? demo.frameMs.toFixed(1) : Math.round(demo.frameMs);
  const over = frames ? `median of ${frames} frame${frames === 1 ? '' : 's'}` : 'first frame, a warm-up';
  $('latency').textContent = `${model} · ${backendLabel(det)} · ${ms} ms/frame ` +
    `(${over}; last: preprocess ${t.preprocess.toFixed(1)}, ` +
    `inference ${t.inference.toFixed(1)}, postprocess ${t.postprocess.toFixed(1)}) · input ${w}x${h} · ` +
    `${n} face${n === 1 ? '' : 's'}${extra}`;
  demo.last = {
    source: name, model: currentModel().id, width: result.box.imageSize[0], height: result.box.imageSize[1],
    inputSize: [w, h], conf: options().conf, timings: t, backend: det.backend, threads: runtime.threads,
    frameMs: demo.frameMs, frames,
    faces: decoded.faces.map((f) => ({ box: f.box, score: f.score, landmarks: f.landmarks })),
  };
}

async function detectPicture() {
  if (!current) return;
  const picture = current;
  setState('busy');
  try {
    const det = await detector();
    const result = await exclusive(() => det.run(picture.bitmap, picture.width, picture.height, longSide()));
    if (picture !== current) return; // a newer picture arrived meanwhile
    Object.assign(picture, { result, detector: det });
    const decoded = det.decode(result, options());
    recordFrame(det, result, decoded);
    redecode(decoded);
  } catch (err) {
    setStatus(`Detection failed: ${err.message}`, true);
  }
}

/** Draw and report the current picture's faces; `decoded` when fresh, else post-process its raw outputs again. */
function redecode(decoded = null) {
  const picture = current;
  if (!picture || !picture.result) return;
  decoded = decoded ?? picture.detector.decode(picture.result, options());
  draw(picture.bitmap, picture.width, picture.height, decoded.faces);
  report(picture.name, picture.detector, picture.result, decoded);
  setStatus(`${picture.name} (${picture.width}x${picture.height}), ${currentModel().label}`);
  setState('done');
}

async function showPicture(blob, name) {
  stopWebcam();
  setStatus(`Reading ${name}…`);
  let bitmap;
  try {
    // Orientation from EXIF and no colour management: what cv2.imread gives the Python side.
    bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image', colorSpaceConversion: 'none' });
  } catch (err) {
    setStatus(`${name}: not an image the browser can read`, true);
    return;
  }
  current = { bitmap, name, width: bitmap.width, height: bitmap.height, result: null };
  await detectPicture();
}

async function startWebcam() {
  if (!navigator.mediaDevices?.getUserMedia) {
    setStatus('This browser gives no camera access here (it needs localhost or https)', true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (err) {
    setStatus(`No webcam: ${err.message || err.name}`, true);
    return;
  }
  current = null;
  const video = $('video');
  video.srcObject = stream;
  await video.play();
  webcam = { stream, running: true };
  $('webcam').textContent = 'Stop webcam';
  $('time').disabled = true; // the webcam's own frames are timed
  setStatus('Webcam: detecting live');
  setState('webcam');
  webcamLoop(webcam);
}

async function webcamLoop(session) {
  const video = $('video');
  const times = [];
  while (session.running) {
    await new Promise((resolve) => requestAnimationFrame(resolve));
    if (!session.running || video.readyState < 2 || !video.videoWidth) continue;
    try {
      const det = await detector();
      const frame = await createImageBitmap(video);
      const result = await exclusive(() => det.run(frame, frame.width, frame.height, longSide()));
      if (!session.running) break;
      const decoded = det.decode(result, options());
      draw(frame, frame.width, frame.height, decoded.faces);
      frame.close();
      const now = performance.now();
      times.push(now);
      while (times.length > 1 && now - times[0] > 2000) times.shift();
      const fps = times.length > 1 ? (times.length - 1) / ((now - times[0]) / 1000) : 0;
      recordFrame(det, result, decoded);
      report('webcam', det, result, decoded, fps ? ` · ${fps.toFixed(1)} frames/s` : '');
    } catch (err) {
      setStatus(`Webcam detection failed: ${err.message}`, true);
      stopWebcam();
    }
  }
}

/**
 * Run the current picture `count` more times (the "Time 20 frames" button; benchmarks/bench_web.py calls it
 * too) and return {frameMs, times, stages}: the median and every frame's time (ms), as the page shows them,
 * and each frame's preprocess, inference and postprocess times.
 */
async function timeFrames(count = TIMED_FRAMES) {
  const picture = current;
  if (!picture) throw new Error('no picture to time: open a photo first');
  const model = $('model').value;
  const det = await detector();
  const times = [];
  const stages = { preprocess: [], inference: [], postprocess: [] };
  setState('busy');
  $('time').disabled = true;
  try {
    // Stops early when another picture, the webcam or another model takes over.
    for (let i = 0; i < count && picture === current && $('model').value === model; i += 1) {
      const result = await exclusive(() => det.run(picture.bitmap, picture.width, picture.height, longSide()));
      const decoded = det.decode(result, options());
      recordFrame(det, result, decoded);
      times.push(result.timings.preprocess + result.timings.inference + decoded.postprocess);
      stages.preprocess.push(result.timings.preprocess);
      stages.inference.push(result.timings.inference);
      stages.postprocess.push(decoded.postprocess);
      Object.assign(picture, { result, detector: det });
    }
  } finally {
    $('time').disabled = Boolean(webcam);
  }
  if (picture === current && $('model').value === model) redecode();
  return { frameMs: median(times), times, stages };
}

function stopWebcam() {
  if (!webcam) return;
  webcam.running = false;
  webcam.stream.getTracks().forEach((track) => track.stop());
  $('video').srcObject = null;
  webcam = null;
  $('webcam').textContent = 'Start webcam';
  $('time').disabled = false;
  if (demo.state === 'webcam') setState('ready');
}

async function showSample() {
  const response = await fetch('sample.jpg');
  await showPicture(await response.blob(), 'sample.jpg');
}

async function init() {
  try {
    await configureRuntime({ threads, backend });
  } catch (err) {
    setStatus(`Cannot load ONNX Runtime Web: ${err.message}`, true);
    return;
  }
  let response;
  try {
    response = await fetch('models.json');
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    models = await response.json();
  } catch (err) {
    setStatus(`Cannot list the models (${err.message}): start the page with 'blazeface web'`, true);
    return;
  }
  if (!models.length) {
    setStatus('No models are served: start the page with blazeface web --model M --weights FILE', true);
    return;
  }
  demo.models = models;
  for (const m of models) $('model').add(new Option(m.label, m.id));
  if (params.get('model') && models.some((m) => m.id === params.get('model'))) $('model').value = params.get('model');
  if (params.get('conf')) $('threshold').value = params.get('conf');
  if (params.get('long')) $('long-side').value = params.get('long');
  $('threshold-value').textContent = Number($('threshold').value).toFixed(2);

  $('threshold').addEventListener('input', () => {
    $('threshold-value').textContent = Number($('threshold').value).toFixed(2);
    redecode(); // still pictures: only the post-processing runs again
  });
  $('model').addEventListener('change', () => detectPicture());
  $('long-side').addEventListener('change', () => detectPicture());
  $('file').addEventListener('change', (event) => {
    const file = event.target.files[0];
    if (file) showPicture(file, file.name);
  });
  $('sample').addEventListener('click', showSample);
  $('webcam').addEventListener('click', () => (webcam ? stopWebcam() : startWebcam()));
  $('time').addEventListener('click', () => {
    if (current) timeFrames().catch((err) => setStatus(`Timing failed: ${err.message}`, true));
  });
  const stage = $('stage');
  stage.addEventListener('dragover', (event) => event.preventDefault());
  stage.addEventListener('drop', (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) showPicture(file, file.name);
  });

  setStatus(`Loading ${currentModel().label}…`);
  try {
    await detector();
  } catch (err) {
    setStatus(`Cannot load ${currentModel().label}: ${err.message}`, true);
    return;
  }
  setState('ready');
  // The sample at once, so the page shows what it does before any click, then a few more frames of it so
  // the time shown is a warm one (unless the user has opened something else meanwhile).
  await showSample();
  if (demo.state === 'done' && current?.name === 'sample.jpg') await timeFrames(ON_LOAD_FRAMES);
  if (demo.state === 'done') {
    $('status').textContent += ' · open a photo, drop one on the picture or start the webcam';
  }
  demo.loaded = true;
}

init();
