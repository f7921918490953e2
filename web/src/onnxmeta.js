// Reads an ONNX file's metadata_props (the export's prior configuration, mean, size multiple) straight from
// the protobuf bytes. onnxruntime-web's InferenceSession exposes input/output metadata but not the model's
// custom metadata, so the page reads it here: the ONNX file stays the single source of truth.
//
// ModelProto: field 14 = repeated StringStringEntryProto metadata_props {1: key, 2: value}. Only the top
// level is walked; other fields (the graph with its weights) are skipped by their length.

function readVarint(bytes, state) {
  let result = 0, scale = 1, byte;
  do {
    if (state.pos >= bytes.length) throw new Error('truncated ONNX file');
    byte = bytes[state.pos++];
    result += (byte & 0x7f) * scale; // no bit operations beyond 31 bits: lengths can exceed 2^31
    scale *= 128;
  } while (byte & 0x80);
  return result;
}

function skip(bytes, state, wireType) {
  if (wireType === 0) readVarint(bytes, state);
  else if (wireType === 1) state.pos += 8;
  else if (wireType === 2) {
    const len = readVarint(bytes, state); // not `state.pos += readVarint(...)`: that reads pos first
    state.pos += len;
  }
  else if (wireType === 5) state.pos += 4;
  else throw new Error(`not an ONNX file (protobuf wire type ${wireType})`);
  if (state.pos > bytes.length) throw new Error('truncated ONNX file');
}

function readEntry(bytes, start, end, decoder) {
  const state = { pos: start };
  const entry = { key: '', value: '' };
  while (state.pos < end) {
    const tag = readVarint(bytes, state);
    const field = Math.floor(tag / 8), wireType = tag % 8;
    if ((field === 1 || field === 2) && wireType === 2) {
      const len = readVarint(bytes, state);
      const text = decoder.decode(bytes.subarray(state.pos, state.pos + len));
      state.pos += len;
      if (field === 1) entry.key = text; else entry.value = text;
    } else {
      skip(bytes, state, wireType);
    }
  }
  return entry;
}

/** {key: value} of an ONNX model's metadata_props (strings, as stored). */
export function onnxMetadata(buffer) {
  const bytes = buffer instanceof Uint8Array ? buffer : new Uint8Array(buffer);
  const decoder = new TextDecoder();
  const state = { pos: 0 };
  const meta = {};
  while (state.pos < bytes.length) {
    const tag = readVarint(bytes, state);
    const field = Math.floor(tag / 8), wireType = tag % 8;
    if (field === 14 && wireType === 2) {
      const len = readVarint(bytes, state);
      const { key, value } = readEntry(bytes, state.pos, state.pos + len, decoder);
      meta[key] = value;
      state.pos += len;
    } else {
      skip(bytes, state, wireType);
    }
  }
  return meta;
}

/**
 * The decoding configuration in a blazeface export's metadata (see src/blazeface/export/metadata.py):
 * {model, minSizes, steps, variances, meanBgr, sizeMultiple, metadata}. Throws a one-line error when the
 * file lacks it.
 */
export function modelConfig(meta) {
  const json = (key) => {
    if (!(key in meta)) {
      throw new Error(`the ONNX file has no '${key}' in its metadata: export it with 'blazeface export'`);
    }
    try {
      return JSON.parse(meta[key]);
    } catch (err) {
      throw new Error(`the ONNX metadata '${key}' is not valid JSON (${err.message})`);
    }
  };
  const config = {
    model: meta.model || 'unknown',
    minSizes: json('min_sizes'),
    steps: json('steps'),
    variances: json('variances'),
    meanBgr: json('mean_bgr'),
    sizeMultiple: Number(json('size_multiple')),
    metadata: meta,
  };
  if (!Array.isArray(config.minSizes) || !Array.isArray(config.steps) || config.minSizes.length !== config.steps.length) {
    throw new Error('the ONNX metadata needs one min_sizes entry per step');
  }
  if (!(config.sizeMultiple >= 1)) throw new Error('the ONNX metadata has no valid size_multiple');
  return config;
}
