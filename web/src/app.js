// The demo page: pick a model, a photo or the webcam; detect in the browser; draw boxes, scores, landmarks.
import { configureRuntime, Detector } from './detector.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
// Multi-threaded wasm needs SharedArrayBuffer, i.e. a cross-origin isolated page (`blazeface web` sends
// the COOP/COEP headers); ?threads=N overrides.
const threads = Number(params.get('threads')) ||
  (self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1);
const DISPLAY_MIN = 800; // long side of the drawn picture: small photos are enlarged, big ones reduced
const DISPLAY_MAX = 1280;
// RGB of left eye, right eye, nose, left mouth corner, right mouth corner (as src/blazeface/draw.py).
const LANDMARK_COLOURS = ['#0000ff', '#ffff00', '#ff00ff', '#00ff00', '#ff8000'];

// Exposed for the end-to-end test (tests/test_web.py) and for curious users in the console.
const demo = { state: 'loading', models: [], last: null, frames: 0, error: null };
window.blazeface = demo;

let models = [];
const detectors = new Map(); // model id -> Promise<Detector>
let current = null; // the still picture: {bitmap, name, width, height, result, detector}
let webcam = null; // {stream, running}
let queue = Promise.resolve(); // session runs, one at a time

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
    `onnxruntime-web wasm, ${threads} thread(s), cross-origin isolated: ${self.crossOriginIsolated ? 'yes' : 'no'}`;
  return det;
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

function report(name, result, decoded, extra = '') {
  const t = { ...result.timings, postprocess: decoded.postprocess };
  t.total = t.preprocess + t.inference + t.postprocess;
  const [w, h] = result.box.inputSize;
  const n = decoded.faces.length;
  $('latency').textContent = `${t.total.toFixed(1)} ms per frame (preprocess ${t.preprocess.toFixed(1)}, ` +
    `inference ${t.inference.toFixed(1)}, postprocess ${t.postprocess.toFixed(1)}) · input ${w}x${h} · ` +
    `${n} face${n === 1 ? '' : 's'}${extra}`;
  demo.last = {
    source: name, model: currentModel().id, width: result.box.imageSize[0], height: result.box.imageSize[1],
    inputSize: [w, h], conf: options().conf, timings: t,
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
    redecode();
  } catch (err) {
    setStatus(`Detection failed: ${err.message}`, true);
  }
}

function redecode() {
  const picture = current;
  if (!picture || !picture.result) return;
  const decoded = picture.detector.decode(picture.result, options());
  draw(picture.bitmap, picture.width, picture.height, decoded.faces);
  report(picture.name, picture.result, decoded);
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
      demo.frames += 1;
      report('webcam', result, decoded, fps ? ` · ${fps.toFixed(1)} frames/s` : '');
    } catch (err) {
      setStatus(`Webcam detection failed: ${err.message}`, true);
      stopWebcam();
    }
  }
}

function stopWebcam() {
  if (!webcam) return;
  webcam.running = false;
  webcam.stream.getTracks().forEach((track) => track.stop());
  $('video').srcObject = null;
  webcam = null;
  $('webcam').textContent = 'Start webcam';
  if (demo.state === 'webcam') setState('ready');
}

async function init() {
  configureRuntime({ threads });
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
  $('sample').addEventListener('click', async () => {
    const response = await fetch('sample.jpg');
    showPicture(await response.blob(), 'sample.jpg');
  });
  $('webcam').addEventListener('click', () => (webcam ? stopWebcam() : startWebcam()));
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
  setStatus('Ready: open a photo, drop one on the picture, try the sample or start the webcam.');
  setState('ready');
}

init();
