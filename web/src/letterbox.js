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
 * Bilinear resize of RGBA pixels (srcW x srcH) to dstW x dstH with OpenCV's INTER_LINEAR geometry (pixel
 * centres aligned, edges clamped), so the network sees what the Python side's cv2.resize gives it (canvas
 * scaling differs by browser and moved weak detections by several pixels). Values are rounded to integers
 * like cv2's uint8 output; its fixed-point weights can still differ by one level.
 */
export function resizeBilinear(rgba, srcW, srcH, dstW, dstH) {
  const axis = (src, dst) => {
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
  };
  const [xi, xa] = axis(srcW, dstW);
  const [yi, ya] = axis(srcH, dstH);
  const out = new Uint8ClampedArray(dstW * dstH * 4);
  for (let y = 0; y < dstH; y++) {
    const r0 = yi[y] * srcW * 4, r1 = Math.min(yi[y] + 1, srcH - 1) * srcW * 4, b = ya[y];
    for (let x = 0; x < dstW; x++) {
      const c0 = xi[x] * 4, c1 = Math.min(xi[x] + 1, srcW - 1) * 4, a = xa[x];
      const o = (y * dstW + x) * 4;
      for (let k = 0; k < 3; k++) {
        const top = rgba[r0 + c0 + k] * (1 - a) + rgba[r0 + c1 + k] * a;
        const bottom = rgba[r1 + c0 + k] * (1 - a) + rgba[r1 + c1 + k] * a;
        out[o + k] = Math.round(top * (1 - b) + bottom * b);
      }
      out[o + 3] = 255;
    }
  }
  return out;
}

/**
 * RGBA pixels of the resized image (e.g. ImageData.data, rw x rh) -> Float32Array (3 * H * W) network input:
 * B, G, R planes minus meanBgr, zero padding right and below.
 */
export function toInput(rgba, resizedSize, inputSize, meanBgr) {
  const [rw, rh] = resizedSize;
  const [w, h] = inputSize;
  const plane = w * h;
  const out = new Float32Array(3 * plane); // zeros: the padding
  const [mb, mg, mr] = meanBgr;
  for (let y = 0; y < rh; y++) {
    let src = y * rw * 4;
    let dst = y * w;
    for (let x = 0; x < rw; x++, src += 4, dst++) {
      out[dst] = rgba[src + 2] - mb;
      out[plane + dst] = rgba[src + 1] - mg;
      out[2 * plane + dst] = rgba[src] - mr;
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
