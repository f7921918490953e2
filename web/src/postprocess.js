// The one post-processing path, ported from src/blazeface/postprocess.py (and box_coding.py):
// confidence threshold -> top-k -> decode -> exact greedy NMS (+1 pixel IoU) -> keep-top-k -> landmark vote.
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
  // landmarks averaged over the candidates overlapping a kept box by IoU > this (null: its own only)
  landmarkVote: 0.7,
});
// The candidates that vote: those scoring above this, whatever conf is (defaults.LANDMARK_VOTERS).
export const LANDMARK_VOTERS = 0.5;

// Box columns in the given order, with the +1 pixel areas (postprocess.py's _columns and areas).
function columns(boxes, order) {
  const n = order.length;
  const x1 = new Float32Array(n), y1 = new Float32Array(n), x2 = new Float32Array(n), y2 = new Float32Array(n);
  const areas = new Float32Array(n);
  for (let r = 0; r < n; r++) {
    const b = order[r] * 4;
    x1[r] = boxes[b]; y1[r] = boxes[b + 1]; x2[r] = boxes[b + 2]; y2[r] = boxes[b + 3];
    areas[r] = f(f(f(x2[r] - x1[r]) + 1) * f(f(y2[r] - y1[r]) + 1));
  }
  return { x1, y1, x2, y2, areas };
}

// float32 IoU of rows i and j (+1 pixel convention): geometry.paired_iou_pixel, operand for operand.
function pairIou(c, i, j) {
  const w = Math.max(0, f(f(Math.min(c.x2[i], c.x2[j]) - Math.max(c.x1[i], c.x1[j])) + 1));
  const h = Math.max(0, f(f(Math.min(c.y2[i], c.y2[j]) - Math.max(c.y1[i], c.y1[j])) + 1));
  const inter = f(w * h);
  return f(inter / f(f(c.areas[i] + c.areas[j]) - inter));
}

/**
 * Exact greedy NMS, the classic loop of postprocess.py's _greedy_loop: take the best remaining box,
 * drop every later box whose float32 IoU (+1 pixel convention) is not <= threshold, repeat.
 * boxes: Float32Array (n * 4) x1 y1 x2 y2; order: candidate indices by descending score, ties by index.
 * Returns the kept indices in that order.
 */
export function nms(boxes, order, threshold) {
  const n = order.length;
  const t = f(threshold);
  const c = columns(boxes, order);
  const suppressed = new Uint8Array(n);
  const keep = [];
  for (let i = 0; i < n; i++) {
    if (suppressed[i]) continue;
    keep.push(order[i]);
    for (let j = i + 1; j < n; j++) {
      if (suppressed[j]) continue;
      if (!(pairIou(c, i, j) <= t)) suppressed[j] = 1; // NaN suppresses, as in the loop
    }
  }
  return keep;
}

/**
 * postprocess.py's vote_landmarks: the landmarks of each kept candidate, the score-weighted mean over every
 * candidate scoring > voters whose box overlaps its box by IoU > threshold, its own included.
 * Returns Float32Array (K * 10).
 */
export function voteLandmarks(boxes, scores, points, keep, threshold, voters = LANDMARK_VOTERS) {
  const n = scores.length;
  const t = f(threshold);
  const v = f(voters);
  const c = columns(boxes, Array.from({ length: n }, (_, k) => k));
  const voter = [];
  for (let j = 0; j < n; j++) if (scores[j] > v) voter.push(j); // only the confident few vote
  const out = new Float32Array(keep.length * 10);
  const sum = new Float64Array(10);
  keep.forEach((k, r) => {
    let total = scores[k];
    for (let q = 0; q < 10; q++) sum[q] = points[10 * k + q] * scores[k];
    for (const j of voter) {
      if (j === k || !(pairIou(c, k, j) > t)) continue;
      total += scores[j];
      for (let q = 0; q < 10; q++) sum[q] += points[10 * j + q] * scores[j];
    }
    for (let q = 0; q < 10; q++) out[10 * r + q] = f(sum[q] / Math.max(total, Number.MIN_VALUE));
  });
  return out;
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
  const vote = cfg.landmarkVote !== null && cfg.landmarkVote !== undefined;
  const threshold = f(cfg.conf);
  // With the vote, the candidates go down to its voters (postprocess.py: they cannot change NMS above conf).
  const floor = vote ? f(Math.min(cfg.conf, LANDMARK_VOTERS)) : threshold;
  let candidates = [];
  for (let p = 0; p < count; p++) if (conf[2 * p + 1] > floor) candidates.push(p);
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
  const keep = nms(boxes, order, cfg.nms)
    .filter((k) => conf[2 * candidates[k] + 1] > threshold)
    .slice(0, Math.max(0, cfg.keepTopK));

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
  if (vote) {
    const scores = Float32Array.from(candidates, (p) => conf[2 * p + 1]);
    out.landmarks = voteLandmarks(boxes, scores, points, keep, cfg.landmarkVote);
  }
  return out;
}
