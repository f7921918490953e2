// Letterbox and mapping back, the JavaScript twin of src/blazeface/inference.py: resize so the long side is
// longSide (aspect kept), pad bottom/right with zeros (= the mean colour) to the model's size multiple,
// BGR minus the mean, CHW; detections are divided by the resize scale and boxes clipped to the image.

const f = Math.fround;

/** Python's round(): halves go to the even neighbour. */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Sizes for an image of width x height: {imageSize, resizedSize, inputSize}, each [width, height]. */
export function letterboxSize(width, height, longSide, multiple) {
  let rw = width, rh = height;
  if (longSide && longSide > 0) {
    const ratio = longSide / Math.max(width, height);
    rw = Math.max(1, roundHalfEven(width * ratio));
    rh = Math.max(1, roundHalfEven(height * ratio));
  }
  const pad = (v) => Math.ceil(v / multiple) * multiple;
  return { imageSize: [width, height], resizedSize: [rw, rh], inputSize: [pad(rw), pad(rh)] };
}

/** Source index and weight of the second neighbour along one axis, OpenCV INTER_LINEAR's geometry. */
function resizeAxis(src, dst) {
  const index = new Int32Array(dst), weight = new Float32Array(dst);
  const scale = src / dst;
  for (let d = 0; d < dst; d++) {
    const f = (d + 0.5) * scale - 0.5;
    let i = Math.floor(f), a = f - i;
    if (i < 0) { i = 0; a = 0; }
    if (i >= src - 1) { i = src - 1; a = 0; }
    index[d] = i;
    weight[d] = a;
  }
  return [index, weight];
}

/**
 * Bilinear resize in two passes: each source row is interpolated along x once (into R, G, B doubles) and
 * reused by the output rows that need it; emit(y, top, bottom, b) gets the two x-interpolated rows and the
 * y weight of output row y. The arithmetic is the one-pass formula's, so results are identical.
 */
function bilinearRows(rgba, srcW, srcH, dstW, dstH, emit) {
  const [xi, xa] = resizeAxis(srcW, dstW);
  const [yi, ya] = resizeAxis(srcH, dstH);
  // Per column: byte offsets of the two neighbours and their weights (1 - a and a, as the one-pass formula).
  const c0 = new Int32Array(dstW), c1 = new Int32Array(dstW);
  const w0 = new Float64Array(dstW), w1 = new Float64Array(dstW);
  for (let x = 0; x < dstW; x++) {
    c0[x] = xi[x] * 4;
    c1[x] = Math.min(xi[x] + 1, srcW - 1) * 4;
    w0[x] = 1 - xa[x];
    w1[x] = xa[x];
  }
  const rows = [new Float64Array(dstW * 3), new Float64Array(dstW * 3)];
  const rowOf = [-1, -1]; // the source row each buffer holds
  // Source row sy interpolated along x, from a buffer or computed into the one not holding row `keep`.
  const horizontal = (sy, keep) => {
    if (rowOf[0] === sy) return rows[0];
    if (rowOf[1] === sy) return rows[1];
    const slot = rowOf[0] === keep ? 1 : 0;
    const row = rows[slot];
    const base = sy * srcW * 4;
    for (let x = 0, o = 0; x < dstW; x++, o += 3) {
      const p0 = base + c0[x], p1 = base + c1[x], a0 = w0[x], a1 = w1[x];
      row[o] = rgba[p0] * a0 + rgba[p1] * a1;
      row[o + 1] = rgba[p0 + 1] * a0 + rgba[p1 + 1] * a1;
      row[o + 2] = rgba[p0 + 2] * a0 + rgba[p1 + 2] * a1;
    }
    rowOf[slot] = sy;
    return row;
  };
  for (let y = 0; y < dstH; y++) {
    const r0 = yi[y], r1 = Math.min(yi[y] + 1, srcH - 1);
    const top = horizontal(r0, r1);
    const bottom = horizontal(r1, r0);
    emit(y, top, bottom, ya[y]);
  }
}

/**
 * Bilinear resize of RGBA pixels (srcW x srcH) to dstW x dstH with OpenCV's INTER_LINEAR geometry (pixel
 * centres aligned, edges clamped), so the network sees what the Python side's cv2.resize gives it (canvas
 * scaling differs by browser and moved weak detections by several pixels). Values are rounded to integers
 * like cv2's uint8 output; its fixed-point weights can still differ by one level. (x + 0.5) | 0 is
 * Math.round for these non-negative values, several times faster in V8 here.
 */
export function resizeBilinear(rgba, srcW, srcH, dstW, dstH) {
  const out = new Uint8ClampedArray(dstW * dstH * 4);
  bilinearRows(rgba, srcW, srcH, dstW, dstH, (y, top, bottom, b) => {
    for (let x = 0, i = 0, o = y * dstW * 4; x < dstW; x++, o += 4) {
      for (let k = 0; k < 3; k++, i++) out[o + k] = ((top[i] * (1 - b) + bottom[i] * b + 0.5) | 0);
      out[o + 3] = 255;
    }
  });
  return out;
}

/**
 * The network input, Float32Array (3 * H * W), from the image's RGBA pixels (e.g. ImageData.data, srcW x srcH)
 * and its letterbox (letterboxSize()): resized as resizeBilinear() does, B, G, R planes minus meanBgr, zero
 * padding right and below. One pass, no intermediate picture; written into `out` when it is a Float32Array
 * of the right length (a frame loop reuses one buffer instead of allocating megabytes a frame).
 */
export function letterboxInput(rgba, srcW, srcH, box, meanBgr, out = null) {
  const [rw, rh] = box.resizedSize;
  const [w, h] = box.inputSize;
  const plane = w * h;
  if (!(out instanceof Float32Array) || out.length !== 3 * plane) {
    out = new Float32Array(3 * plane);
  } else { // a reused buffer: zero the padding, right of and below the picture
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < rh; y++) out.fill(0, c * plane + y * w + rw, c * plane + (y + 1) * w);
      out.fill(0, c * plane + rh * w, (c + 1) * plane);
    }
  }
  const [mb, mg, mr] = meanBgr;
  const g = plane, r = 2 * plane;
  if (rw === srcW && rh === srcH) {
    for (let y = 0; y < rh; y++) {
      for (let x = 0, src = y * rw * 4, dst = y * w; x < rw; x++, src += 4, dst++) {
        out[dst] = rgba[src + 2] - mb;
        out[g + dst] = rgba[src + 1] - mg;
        out[r + dst] = rgba[src] - mr;
      }
    }
    return out;
  }
  bilinearRows(rgba, srcW, srcH, rw, rh, (y, top, bottom, b) => {
    for (let x = 0, i = 0, dst = y * w; x < rw; x++, i += 3, dst++) {
      out[r + dst] = ((top[i] * (1 - b) + bottom[i] * b + 0.5) | 0) - mr;
      out[g + dst] = ((top[i + 1] * (1 - b) + bottom[i + 1] * b + 0.5) | 0) - mg;
      out[dst] = ((top[i + 2] * (1 - b) + bottom[i + 2] * b + 0.5) | 0) - mb;
    }
  });
  return out;
}

/**
 * Detections in network-input pixels (postprocess's output) -> faces in image pixels, by descending score:
 * [{box: [x1, y1, x2, y2], score, landmarks: [[x, y] x 5]}], boxes clipped to the image.
 */
export function toFaces(dets, box) {
  const [w, h] = box.imageSize;
  const sx = f(box.resizedSize[0] / w), sy = f(box.resizedSize[1] / h);
  const clip = (v, hi) => Math.min(Math.max(v, 0), hi);
  const faces = [];
  for (let k = 0; k < dets.scores.length; k++) {
    const b = dets.boxes.subarray(4 * k, 4 * k + 4);
    const p = dets.landmarks.subarray(10 * k, 10 * k + 10);
    faces.push({
      box: [clip(f(b[0] / sx), w), clip(f(b[1] / sy), h), clip(f(b[2] / sx), w), clip(f(b[3] / sy), h)],
      score: dets.scores[k],
      landmarks: [0, 1, 2, 3, 4].map((q) => [f(p[2 * q] / sx), f(p[2 * q + 1] / sy)]),
    });
  }
  return faces;
}
