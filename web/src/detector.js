// The detector in the browser: an exported blazeface ONNX model run by onnxruntime-web (WebGPU where the
// browser has a GPU adapter, else multi-threaded SIMD WebAssembly), with the letterbox, decoding and NMS done
// in JavaScript (letterbox.js, priors.js, postprocess.js).
import { letterboxInput, letterboxSize, toFaces } from './letterbox.js';
import { modelConfig, onnxMetadata } from './onnxmeta.js';
import { postprocess } from './postprocess.js';
import { cachedPriorBoxes } from './priors.js';

// The import map of index.html names both builds; only the one the page uses is downloaded. The wasm-only
// build loads ort-wasm-simd-threaded.{mjs,wasm} (14 MB); the WebGPU build its own, larger, asyncify
// variant, which also runs the operators WebGPU lacks.
const BUILDS = { wasm: 'onnxruntime-web', webgpu: 'onnxruntime-web/webgpu' };

let ort = null;
// What the page asked for and what it got: {backend, threads, requested, adapter, note}.
export const runtime = { backend: null, threads: 0, requested: null, adapter: null, note: '' };

/** A hardware WebGPU adapter's description, or null (no navigator.gpu, no adapter, or only a software one). */
async function webgpuAdapter(allowSoftware) {
  if (!navigator.gpu) return { adapter: null, why: 'this browser offers no WebGPU' };
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (err) {
    return { adapter: null, why: `WebGPU adapter request failed (${err.message})` };
  }
  if (!adapter) return { adapter: null, why: 'no WebGPU adapter' };
  const info = adapter.info ?? {};
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unknown';
  // A software adapter (SwiftShader) computes on the CPU, slower than WebAssembly: only when asked for.
  if ((info.isFallbackAdapter ?? adapter.isFallbackAdapter) && !allowSoftware) {
    return { adapter: null, why: `only a software WebGPU adapter (${name})` };
  }
  return { adapter: name, why: '' };
}

/**
 * Choose and load onnxruntime-web's build: backend 'auto' (WebGPU on a hardware adapter, else wasm), 'webgpu'
 * (any adapter, software included; wasm when there is none) or 'wasm'. Files come from `wasmPath`, served by
 * `blazeface web` (never a CDN). Returns `runtime`; its `threads` is final after the first session.
 */
export async function configureRuntime({ wasmPath = '/ort/', threads = 1, backend = 'auto' } = {}) {
  runtime.requested = backend;
  let chosen = 'wasm';
  if (backend !== 'wasm') {
    const { adapter, why } = await webgpuAdapter(backend === 'webgpu');
    if (adapter) {
      chosen = 'webgpu';
      runtime.adapter = adapter;
    } else {
      runtime.note = why;
    }
  }
  ort = await import(BUILDS[chosen]);
  ort.env.wasm.wasmPaths = new URL(wasmPath, document.baseURI).href;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = 'warning';
  Object.assign(runtime, { backend: chosen, threads });
  return runtime;
}

async function createSession(bytes) {
  const options = { graphOptimizationLevel: 'all' };
  if (runtime.backend === 'webgpu') {
    try {
      return await ort.InferenceSession.create(bytes, { ...options, executionProviders: ['webgpu', 'wasm'] });
    } catch (err) { // e.g. the device was lost or refused a buffer: carry on with WebAssembly
      runtime.backend = 'wasm';
      runtime.adapter = null;
      runtime.note = `WebGPU failed (${err.message.split('\n')[0]})`;
    }
  }
  return ort.InferenceSession.create(bytes, { ...options, executionProviders: ['wasm'] });
}

export class Detector {
  constructor(session, config) {
    this.session = session;
    this.config = config; // from the ONNX metadata: model, minSizes, steps, variances, meanBgr, sizeMultiple
    this.backend = runtime.backend;
    const names = session.outputNames;
    this.outputs = ['loc', 'conf', 'landm'].every((n) => names.includes(n)) ? ['loc', 'conf', 'landm'] : names;
    this.inputName = session.inputNames[0];
    this.canvas = document.createElement('canvas');
    this.ctx = this.canvas.getContext('2d', { willReadFrequently: true });
    this.input = null; // the network input buffer, reused while the input size stays (a webcam's frames)
  }

  /** Load an exported model from a URL (or an ArrayBuffer): its metadata first, then the session. */
  static async load(source) {
    if (!ort) throw new Error('configureRuntime() must run first');
    let bytes = source;
    if (typeof source === 'string') {
      const response = await fetch(source);
      if (!response.ok) throw new Error(`${source}: HTTP ${response.status}`);
      bytes = await response.arrayBuffer();
    }
    bytes = new Uint8Array(bytes);
    const config = modelConfig(onnxMetadata(bytes));
    const session = await createSession(bytes);
    // onnxruntime-web drops to one thread when the page is not cross-origin isolated: report what it runs.
    runtime.threads = ort.env.wasm.numThreads;
    return new Detector(session, config);
  }

  /**
   * Run the network on an image source (ImageBitmap, <img>, <video>, <canvas>) of width x height.
   * Returns {box, raw, timings}; pass it to decode() for faces (cheap: re-run it to change the threshold).
   */
  async run(source, width, height, longSide) {
    const t0 = performance.now();
    const box = letterboxSize(width, height, longSide, this.config.sizeMultiple);
    const [w, h] = box.inputSize;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    // Pixels at the source's own size, then our resize: the same geometry as the Python side's cv2.resize.
    this.ctx.drawImage(source, 0, 0, width, height);
    const native = this.ctx.getImageData(0, 0, width, height).data;
    // Safe to reuse: runs are one at a time and onnxruntime-web has copied the input when run() resolves.
    this.input = letterboxInput(native, width, height, box, this.config.meanBgr, this.input);
    const t1 = performance.now();
    const feeds = { [this.inputName]: new ort.Tensor('float32', this.input, [1, 3, h, w]) };
    const results = await this.session.run(feeds);
    const [loc, conf, landm] = this.outputs.map((name) => results[name].data);
    const t2 = performance.now();
    return { box, raw: { loc, conf, landm }, timings: { preprocess: t1 - t0, inference: t2 - t1 } };
  }

  /** Raw outputs of run() -> faces in image pixels (by descending score) and the postprocess time. */
  decode(result, options = {}) {
    const t0 = performance.now();
    const [w, h] = result.box.inputSize;
    const { minSizes, steps, variances } = this.config;
    const priors = cachedPriorBoxes(minSizes, steps, w, h);
    const { loc, conf, landm } = result.raw;
    const dets = postprocess(loc, conf, landm, priors, [w, h], options, variances);
    const faces = toFaces(dets, result.box);
    return { faces, postprocess: performance.now() - t0 };
  }

  async release() {
    await this.session.release();
  }
}
