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

/**
 * Per destination index along one axis: the two source neighbours (clamped to the image) and their weights in
 * OpenCV's 11-bit fixed point, computed as cv2.resize computes them for INTER_LINEAR (pixel centres aligned,
 * the position in float32, weights rounded half to even; at the edges both neighbours are the edge pixel).
 */
function resizeAxis(src, dst) {
  const i0 = new Int32Array(dst), i1 = new Int32Array(dst), w0 = new Int32Array(dst), w1 = new Int32Array(dst);
  const scale = 1 / (dst / src); // OpenCV divides by its inverse scale: the same double, to the last bit
  for (let d = 0; d < dst; d++) {
    const pos = f((d + 0.5) * scale - 0.5);
    const i = Math.floor(pos), a = f(pos - i);
    i0[d] = Math.min(Math.max(i, 0), src - 1);
    i1[d] = Math.min(Math.max(i + 1, 0), src - 1);
    w0[d] = roundHalfEven(f(1 - a) * 2048);
    w1[d] = roundHalfEven(a * 2048);
  }
  return { i0, i1, w0, w1 };
}

/**
 * cv2.resize's INTER_LINEAR for 8-bit pictures, bit for bit, in two passes, one output row at a time: each
 * source row is interpolated along x once (integers, R G B per output column, kept >> 4 as OpenCV's vertical
 * pass reads them) and reused by the output rows that need it; after advance(y), `top` and `bottom` hold
 * output row y's two source rows and `b0`, `b1` its y weights. value() is OpenCV's vertical step (its SIMD
 * form, which it uses for every pixel): 16-bit multiplies keeping the high half, then a rounding shift by 2.
 * A class the callers loop over rather than a per-row callback: V8 optimises the callers' inner loops then.
 */
class BilinearRows {
  constructor(rgba, srcW, srcH, dstW, dstH) {
    const x = resizeAxis(srcW, dstW);
    this.y = resizeAxis(srcH, dstH);
    this.c0 = x.i0.map((i) => i * 4); // byte offsets of the two neighbours in an RGBA row
    this.c1 = x.i1.map((i) => i * 4);
    this.w0 = x.w0;
    this.w1 = x.w1;
    Object.assign(this, { rgba, srcW, topRow: -1, bottomRow: -1, b0: 0, b1: 0 });
    this.top = new Int32Array(dstW * 3);
    this.bottom = new Int32Array(dstW * 3);
  }

  advance(y) {
    const r0 = this.y.i0[y], r1 = this.y.i1[y];
    if (this.topRow !== r0) {
      if (this.bottomRow === r0) { // one source row down: the old bottom row is the new top row
        [this.top, this.bottom] = [this.bottom, this.top];
        this.bottomRow = -1;
      } else {
        this.interpolate(r0, this.top);
      }
      this.topRow = r0;
    }
    if (this.bottomRow !== r1) {
      this.interpolate(r1, this.bottom);
      this.bottomRow = r1;
    }
    this.b0 = this.y.w0[y];
    this.b1 = this.y.w1[y];
  }

  interpolate(sy, row) {
    const { rgba, c0, c1, w0, w1 } = this;
    const base = sy * this.srcW * 4;
    for (let x = 0, o = 0, n = c0.length; x < n; x++, o += 3) {
      const p0 = base + c0[x], p1 = base + c1[x], a0 = w0[x], a1 = w1[x];
      row[o] = (rgba[p0] * a0 + rgba[p1] * a1) >> 4;
      row[o + 1] = (rgba[p0 + 1] * a0 + rgba[p1 + 1] * a1) >> 4;
      row[o + 2] = (rgba[p0 + 2] * a0 + rgba[p1 + 2] * a1) >> 4;
    }
  }
}

/**
 * Resize RGBA pixels (srcW x srcH) to dstW x dstH exactly as cv2.resize(..., interpolation=cv2.INTER_LINEAR)
 * resizes the same BGR picture, so the network sees what the Python side gives it (canvas scaling differs by
 * browser and moved weak detections by several pixels). Alpha comes out 255.
 */
export function resizeBilinear(rgba, srcW, srcH, dstW, dstH) {
  const out = new Uint8ClampedArray(dstW * dstH * 4);
  const rows = new BilinearRows(rgba, srcW, srcH, dstW, dstH);
  for (let y = 0; y < dstH; y++) {
    rows.advance(y);
    const { top, bottom, b0, b1 } = rows;
    for (let x = 0, i = 0, o = y * dstW * 4; x < dstW; x++, o += 4) {
      for (let k = 0; k < 3; k++, i++) out[o + k] = (((top[i] * b0) >> 16) + ((bottom[i] * b1) >> 16) + 2) >> 2;
      out[o + 3] = 255;
    }
  }
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
  const rows = new BilinearRows(rgba, srcW, srcH, rw, rh);
  for (let y = 0; y < rh; y++) {
    rows.advance(y);
    const { top, bottom, b0, b1 } = rows;
    for (let x = 0, i = 0, dst = y * w; x < rw; x++, i += 3, dst++) {
      out[r + dst] = ((((top[i] * b0) >> 16) + ((bottom[i] * b1) >> 16) + 2) >> 2) - mr;
      out[g + dst] = ((((top[i + 1] * b0) >> 16) + ((bottom[i + 1] * b1) >> 16) + 2) >> 2) - mg;
      out[dst] = ((((top[i + 2] * b0) >> 16) + ((bottom[i + 2] * b1) >> 16) + 2) >> 2) - mb;
    }
  }
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
