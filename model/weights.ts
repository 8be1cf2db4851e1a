/**
 * Model weights <-> safetensors (DESIGN.md section 6): Hugging Face names and layout, so linear
 * weights are stored [out, in] (we compute with [in, out]); expert biases are stored as
 * `model.layers.{l}.mlp.router.e_score_correction_bias`. Shared by the trainer (writes) and the
 * inference engine (reads); neither imports the other.
 */
import { decodeSafetensors, encodeSafetensors, SafeTensor } from '../core/safetensors';
import { CheckpointError } from '../core/errors';
import { ModelConfig } from './config';
import { numel, ParamSpec, paramSpecs } from './params';

function transpose2d(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c];
  return out;
}

export function biasName(l: number): string {
  return `model.layers.${l}.mlp.router.e_score_correction_bias`;
}

export function encodeModelWeights(specs: ParamSpec[], values: Map<string, Float32Array>, biases: Float32Array[], metadata: Record<string, string> = {}): Buffer {
  const t = new Map<string, SafeTensor>();
  for (const s of specs) {
    const v = values.get(s.name)!;
    if (s.linear) t.set(s.name, { dtype: 'F32', shape: [s.shape[1], s.shape[0]], data: transpose2d(v, s.shape[0], s.shape[1]) });
    else t.set(s.name, { dtype: 'F32', shape: [...s.shape], data: Float32Array.from(v) });
  }
  biases.forEach((b, l) => t.set(biasName(l), { dtype: 'F32', shape: [b.length], data: Float32Array.from(b) }));
  return encodeSafetensors(t, { format: 'pt', producer: 'moecat', ...metadata });
}

/** Decodes and checks every expected tensor's presence and shape against the config. */
export function decodeModelWeights(buf: Buffer, c: ModelConfig, where = 'model.safetensors'): { values: Map<string, Float32Array>; biases: Float32Array[] } {
  const { tensors } = decodeSafetensors(buf, where);
  const values = new Map<string, Float32Array>();
  for (const s of paramSpecs(c)) {
    const t = tensors.get(s.name);
    if (!t) throw new CheckpointError(`tensor '${s.name}' is missing`, { where, hint: 'the checkpoint does not match its config.yaml' });
    const want = s.linear ? [s.shape[1], s.shape[0]] : s.shape;
    if (t.dtype !== 'F32' || t.shape.join('x') !== want.join('x')) {
      throw new CheckpointError(`tensor '${s.name}' has ${t.dtype}[${t.shape.join(',')}], expected F32[${want.join(',')}]`, { where });
    }
    const data = t.data as Float32Array;
    values.set(s.name, s.linear ? transpose2d(data, want[0], want[1]) : data);
    if (data.length !== numel(s.shape)) throw new CheckpointError(`tensor '${s.name}' has the wrong size`, { where });
  }
  const biases: Float32Array[] = [];
  for (let l = 0; l < c.nLayers; l++) {
    const t = tensors.get(biasName(l));
    const n = c.moe.nExperts + c.moe.nZeroExperts;
    if (!t || t.data.length !== n) throw new CheckpointError(`tensor '${biasName(l)}' is missing or has the wrong size`, { where });
    biases.push(Float32Array.from(t.data as Float32Array));
  }
  return { values, biases };
}
