// The one post-processing path, ported from src/blazeface/postprocess.py (and box_coding.py):
// confidence threshold -> top-k -> decode -> exact greedy NMS (+1 pixel IoU) -> keep-top-k.
//
// Python computes in float32; every step here rounds to float32 with Math.fround at the same places, so
// the kept set is the same and coordinates agree to float32 rounding (tests/test_web_postprocess.py runs
// this file under Node against the Python function). No DOM: it runs in the browser and in Node alike.

const f = Math.fround;

export const DEFAULT_CONFIG = Object.freeze({
  conf: 0.5, // keep candidates with face score > conf
  nms: 0.4, // suppress boxes whose IoU with a better kept box is > nms
  topK: 5000, // best candidates entering NMS
  keepTopK: 750, // detections kept after NMS
});

/**
 * Exact greedy NMS, the classic loop of postprocess.py's _greedy_loop: take the best remaining box,
 * drop every later box whose float32 IoU (+1 pixel convention) is not <= threshold, repeat.
 * boxes: Float32Array (n * 4) x1 y1 x2 y2; order: candidate indices by descending score, ties by index.
 * Returns the kept indices in that order.
 */
export function nms(boxes, order, threshold) {
  const n = order.length;
  const t = f(threshold);
  const areas = new Float32Array(n);
  const x1 = new Float32Array(n), y1 = new Float32Array(n), x2 = new Float32Array(n), y2 = new Float32Array(n);
  for (let r = 0; r < n; r++) {
    const b = order[r] * 4;
    x1[r] = boxes[b]; y1[r] = boxes[b + 1]; x2[r] = boxes[b + 2]; y2[r] = boxes[b + 3];
    areas[r] = f(f(f(x2[r] - x1[r]) + 1) * f(f(y2[r] - y1[r]) + 1));
  }
  const suppressed = new Uint8Array(n);
  const keep = [];
  for (let i = 0; i < n; i++) {
    if (suppressed[i]) continue;
    keep.push(order[i]);
    for (let j = i + 1; j < n; j++) {
      if (suppressed[j]) continue;
      const w = Math.max(0, f(f(Math.min(x2[i], x2[j]) - Math.max(x1[i], x1[j])) + 1));
      const h = Math.max(0, f(f(Math.min(y2[i], y2[j]) - Math.max(y1[i], y1[j])) + 1));
      const inter = f(w * h);
      const iou = f(inter / f(f(areas[i] + areas[j]) - inter));
      if (!(iou <= t)) suppressed[j] = 1; // NaN suppresses, as in the loop
    }
  }
  return keep;
}

/**
 * Raw outputs of one image -> detections in network-input pixels, sorted by descending score.
 *
 * loc: Float32Array (P * 4); conf: Float32Array (P * 2), softmax, column 1 = face; landm: (P * 10);
 * priors: Float32Array (P * 4) normalised (cx, cy, w, h); inputSize: [width, height] of the network input.
 * Returns {boxes: Float32Array (K * 4), scores: Float32Array (K), landmarks: Float32Array (K * 10),
 * indices: the prior index of each detection}.
 */
export function postprocess(loc, conf, landm, priors, inputSize, config = {}, variances = [0.1, 0.2]) {
  const cfg = { ...DEFAULT_CONFIG, ...config };
  const count = priors.length / 4;
  if (loc.length !== count * 4 || conf.length !== count * 2 || landm.length !== count * 10) {
    throw new Error(`outputs do not match ${count} priors (loc ${loc.length / 4}, conf ${conf.length / 2}, ` +
                    `landm ${landm.length / 10})`);
  }
  const threshold = f(cfg.conf);
  let candidates = [];
  for (let p = 0; p < count; p++) if (conf[2 * p + 1] > threshold) candidates.push(p);
  // Stable: ties keep prior order, like numpy's argsort(-scores, kind="stable").
  candidates.sort((a, b) => conf[2 * b + 1] - conf[2 * a + 1]);
  if (candidates.length > cfg.topK) candidates = candidates.slice(0, Math.max(0, cfg.topK));
  const n = candidates.length;

  const [width, height] = inputSize;
  const sw = f(width), sh = f(height);
  const v0 = f(variances[0]), v1 = f(variances[1]);
  const boxes = new Float32Array(n * 4);
  const points = new Float32Array(n * 10);
  for (let k = 0; k < n; k++) {
    const p = candidates[k];
    const pcx = priors[4 * p], pcy = priors[4 * p + 1], pw = priors[4 * p + 2], ph = priors[4 * p + 3];
    const l = 4 * p;
    // box_coding.decode_boxes: centre = prior_c + loc * v0 * prior_wh; size = prior_wh * exp(loc * v1)
    const cx = f(pcx + f(f(loc[l] * v0) * pw));
    const cy = f(pcy + f(f(loc[l + 1] * v0) * ph));
    const w = f(pw * f(Math.exp(f(loc[l + 2] * v1))));
    const h = f(ph * f(Math.exp(f(loc[l + 3] * v1))));
    const hw = f(w / 2), hh = f(h / 2);
    boxes[4 * k] = f(f(cx - hw) * sw);
    boxes[4 * k + 1] = f(f(cy - hh) * sh);
    boxes[4 * k + 2] = f(f(cx + hw) * sw);
    boxes[4 * k + 3] = f(f(cy + hh) * sh);
    // box_coding.decode_landmarks: point = landm * (v0 * prior_wh) + prior_c
    const ux = f(v0 * pw), uy = f(v0 * ph);
    for (let q = 0; q < 5; q++) {
      points[10 * k + 2 * q] = f(f(f(landm[10 * p + 2 * q] * ux) + pcx) * sw);
      points[10 * k + 2 * q + 1] = f(f(f(landm[10 * p + 2 * q + 1] * uy) + pcy) * sh);
    }
  }
  const order = Array.from({ length: n }, (_, k) => k); // already by descending score, ties by index
  const keep = nms(boxes, order, cfg.nms).slice(0, Math.max(0, cfg.keepTopK));

  const out = {
    boxes: new Float32Array(keep.length * 4),
    scores: new Float32Array(keep.length),
    landmarks: new Float32Array(keep.length * 10),
    indices: keep.map((k) => candidates[k]),
  };
  keep.forEach((k, r) => {
    out.boxes.set(boxes.subarray(4 * k, 4 * k + 4), 4 * r);
    out.scores[r] = conf[2 * candidates[k] + 1];
    out.landmarks.set(points.subarray(10 * k, 10 * k + 10), 10 * r);
  });
  return out;
}
