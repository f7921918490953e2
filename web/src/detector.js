// The detector in the browser: an exported blazeface ONNX model run by onnxruntime-web (WebAssembly), with
// the letterbox, decoding and NMS done in JavaScript (letterbox.js, priors.js, postprocess.js).
import * as ort from 'onnxruntime-web';

import { letterboxSize, resizeBilinear, toFaces, toInput } from './letterbox.js';
import { modelConfig, onnxMetadata } from './onnxmeta.js';
import { postprocess } from './postprocess.js';
import { cachedPriorBoxes } from './priors.js';

/** Point onnxruntime-web at its files served by `blazeface web` (never a CDN) and set its threads. */
export function configureRuntime({ wasmPath = '/ort/', threads = 1 } = {}) {
  ort.env.wasm.wasmPaths = new URL(wasmPath, document.baseURI).href;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = 'warning';
}

export class Detector {
  constructor(session, config) {
    this.session = session;
    this.config = config; // from the ONNX metadata: model, minSizes, steps, variances, meanBgr, sizeMultiple
    const names = session.outputNames;
    this.outputs = ['loc', 'conf', 'landm'].every((n) => names.includes(n)) ? ['loc', 'conf', 'landm'] : names;
    this.inputName = session.inputNames[0];
    this.canvas = document.createElement('canvas');
    this.ctx = this.canvas.getContext('2d', { willReadFrequently: true });
  }

  /** Load an exported model from a URL (or an ArrayBuffer): its metadata first, then the session. */
  static async load(source) {
    let bytes = source;
    if (typeof source === 'string') {
      const response = await fetch(source);
      if (!response.ok) throw new Error(`${source}: HTTP ${response.status}`);
      bytes = await response.arrayBuffer();
    }
    bytes = new Uint8Array(bytes);
    const config = modelConfig(onnxMetadata(bytes));
    const session = await ort.InferenceSession.create(bytes, {
      executionProviders: ['wasm'],
      graphOptimizationLevel: 'all',
    });
    return new Detector(session, config);
  }

  /**
   * Run the network on an image source (ImageBitmap, <img>, <video>, <canvas>) of width x height.
   * Returns {box, raw, timings}; pass it to decode() for faces (cheap: re-run it to change the threshold).
   */
  async run(source, width, height, longSide) {
    const t0 = performance.now();
    const box = letterboxSize(width, height, longSide, this.config.sizeMultiple);
    const [rw, rh] = box.resizedSize;
    const [w, h] = box.inputSize;
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    // Pixels at the source's own size, then our resize: the same geometry as the Python side's cv2.resize.
    this.ctx.drawImage(source, 0, 0, width, height);
    const native = this.ctx.getImageData(0, 0, width, height).data;
    const pixels = rw === width && rh === height ? native : resizeBilinear(native, width, height, rw, rh);
    const input = toInput(pixels, box.resizedSize, box.inputSize, this.config.meanBgr);
    const t1 = performance.now();
    const feeds = { [this.inputName]: new ort.Tensor('float32', input, [1, 3, h, w]) };
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
