// Prior (anchor) boxes: the JavaScript twin of src/blazeface/priors.py.
//
// Per detection level k with stride s_k: a ceil(H / s_k) x ceil(W / s_k) grid, row-major; per cell one
// prior per min size m: (cx, cy, w, h) = ((j + 0.5) s_k / W, (i + 0.5) s_k / H, m / W, m / H), no clipping.
// Computed in float64 and stored as float32, exactly as the Python side does.

/** Number of priors for an input of width x height. */
export function numPriors(minSizes, steps, width, height) {
  let n = 0;
  steps.forEach((step, k) => {
    n += Math.ceil(height / step) * Math.ceil(width / step) * minSizes[k].length;
  });
  return n;
}

/** Float32Array (P * 4) of normalised priors (cx, cy, w, h), level by level, cell by cell, size by size. */
export function priorBoxes(minSizes, steps, width, height) {
  if (minSizes.length !== steps.length) throw new Error('min_sizes and steps need one entry per level');
  const out = new Float32Array(numPriors(minSizes, steps, width, height) * 4);
  let p = 0;
  steps.forEach((step, k) => {
    const fh = Math.ceil(height / step);
    const fw = Math.ceil(width / step);
    const sizes = minSizes[k];
    for (let i = 0; i < fh; i++) {
      const cy = ((i + 0.5) * step) / height;
      for (let j = 0; j < fw; j++) {
        const cx = ((j + 0.5) * step) / width;
        for (const m of sizes) {
          out[p++] = cx;
          out[p++] = cy;
          out[p++] = m / width;
          out[p++] = m / height;
        }
      }
    }
  });
  return out;
}

const cache = new Map();

/** priorBoxes, cached per configuration and input size (a few entries: one per input size in use). */
export function cachedPriorBoxes(minSizes, steps, width, height) {
  const key = JSON.stringify([minSizes, steps, width, height]);
  let priors = cache.get(key);
  if (!priors) {
    if (cache.size >= 16) cache.delete(cache.keys().next().value);
    priors = priorBoxes(minSizes, steps, width, height);
    cache.set(key, priors);
  }
  return priors;
}
