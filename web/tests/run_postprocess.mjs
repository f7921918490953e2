// Runs the page's JavaScript modules (priors, post-processing, letterbox, ONNX metadata) under Node on cases
// prepared by tests/test_web_postprocess.py, which compares the answers with the Python implementation.
//
//   node web/tests/run_postprocess.mjs cases.json   ->  one JSON array of results on stdout
//
// Raw arrays are little-endian float32 files (numpy's tofile).
import { readFileSync, writeFileSync } from 'node:fs';

import { letterboxInput, letterboxSize, resizeBilinear, toFaces } from '../src/letterbox.js';
import { modelConfig, onnxMetadata } from '../src/onnxmeta.js';
import { nms, postprocess } from '../src/postprocess.js';
import { priorBoxes } from '../src/priors.js';

const f32 = (path) => {
  const buf = readFileSync(path);
  return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
};

const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const results = cases.map((c) => {
  switch (c.kind) {
    case 'priors': {
      const priors = priorBoxes(c.minSizes, c.steps, c.width, c.height);
      writeFileSync(c.out, Buffer.from(priors.buffer));
      return { count: priors.length / 4 };
    }
    case 'postprocess': {
      const priors = priorBoxes(c.minSizes, c.steps, c.width, c.height);
      const dets = postprocess(f32(c.loc), f32(c.conf), f32(c.landm), priors, [c.width, c.height], c.config,
                               c.variances);
      const out = { boxes: Array.from(dets.boxes), scores: Array.from(dets.scores),
                    landmarks: Array.from(dets.landmarks), indices: dets.indices };
      if (c.letterbox) out.faces = toFaces(dets, c.letterbox);
      return out;
    }
    case 'nms': {
      const boxes = f32(c.boxes), scores = f32(c.scores);
      const order = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a]); // stable: ties by index
      return nms(boxes, order, c.threshold);
    }
    case 'resize': {
      const buf = readFileSync(c.rgba);
      const out = resizeBilinear(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), c.width, c.height,
                                 c.dstWidth, c.dstHeight);
      writeFileSync(c.out, Buffer.from(out.buffer));
      return { bytes: out.length };
    }
    case 'input': { // the network input the page builds, into a reused buffer of stale values when asked
      const buf = readFileSync(c.rgba);
      const box = letterboxSize(c.width, c.height, c.longSide, c.multiple);
      const [w, h] = box.inputSize;
      const stale = c.reuse ? new Float32Array(3 * w * h).fill(-7) : null;
      const out = letterboxInput(new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength), c.width, c.height,
                                 box, c.meanBgr, stale);
      writeFileSync(c.out, Buffer.from(out.buffer, out.byteOffset, out.byteLength));
      return { inputSize: box.inputSize, reused: out === stale };
    }
    case 'letterbox':
      return c.sizes.map(([w, h, longSide, multiple]) => letterboxSize(w, h, longSide, multiple));
    case 'metadata': {
      const meta = onnxMetadata(readFileSync(c.onnx));
      let config = null, error = null;
      try {
        config = modelConfig(meta);
      } catch (err) {
        error = err.message;
      }
      return { meta, config, error };
    }
    default:
      throw new Error(`unknown case kind ${c.kind}`);
  }
});
console.log(JSON.stringify(results));
