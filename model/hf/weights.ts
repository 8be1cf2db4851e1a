/**
 * moecat weights <-> the tensors of a released longcat_flash checkpoint. Names are already the
 * same (BF16 and F16 weights are widened to float32 on import); the differences are
 *   - orientation: moecat computes with [in, out], HF stores Linear weights [out, in];
 *   - RoPE layout: moecat rotates halves (pair i = dims i and i + d/2), transformers' longcat_flash
 *     rotates interleaved pairs (2i, 2i + 1) of q_b_proj's and kv_a_proj_with_mqa's rope rows, so
 *     those rows are permuted (the attention scores are then identical);
 *   - the expert bias is `mlp.router.e_score_correction_bias`, F32 [N + Z].
 */
import { CheckpointError } from '../../core/errors';
import { SafeTensor, toFloat32 } from '../../core/safetensors';
import { ModelConfig } from '../config';
import { numel, paramSpecs } from '../params';
import { biasName } from '../weights';

/** moecat rope index held at interleaved index r: even r -> r/2, odd r -> d/2 + (r-1)/2. */
function ropeSource(r: number, d: number): number {
  return r % 2 === 0 ? r / 2 : d / 2 + (r - 1) / 2;
}

/**
 * Row permutation of an [out, in] weight's output rows, HF row -> moecat row, or null when the
 * tensor has no rope rows.
 */
function ropeRowMap(c: ModelConfig, name: string): Int32Array | null {
  if (c.attention.type !== 'mla') return null;
  const a = c.attention;
  const dr = a.ropeHeadDim;
  let blocks: { start: number }[];
  let rows: number;
  if (name.endsWith('.q_b_proj.weight')) {
    const dh = a.nopeHeadDim + dr;
    rows = a.nHeads * dh;
    blocks = Array.from({ length: a.nHeads }, (_, h) => ({ start: h * dh + a.nopeHeadDim }));
  } else if (name.endsWith('.kv_a_proj_with_mqa.weight')) {
    rows = a.kvLoraRank + dr;
    blocks = [{ start: a.kvLoraRank }];
  } else return null;
  const map = Int32Array.from({ length: rows }, (_, i) => i);
  for (const { start } of blocks) for (let r = 0; r < dr; r++) map[start + r] = start + ropeSource(r, dr);
  return map;
}

/** HF [out, in] with permuted rows from moecat [in, out]. */
function toOutIn(v: Float32Array, inDim: number, outDim: number, rowMap: Int32Array | null): Float32Array {
  const out = new Float32Array(v.length);
  for (let o = 0; o < outDim; o++) {
    const src = rowMap ? rowMap[o] : o;
    for (let i = 0; i < inDim; i++) out[o * inDim + i] = v[i * outDim + src];
  }
  return out;
}

/** moecat [in, out] from HF [out, in] with permuted rows (the inverse of toOutIn). */
function fromOutIn(w: Float32Array, inDim: number, outDim: number, rowMap: Int32Array | null): Float32Array {
  const out = new Float32Array(w.length);
  for (let o = 0; o < outDim; o++) {
    const dst = rowMap ? rowMap[o] : o;
    for (let i = 0; i < inDim; i++) out[i * outDim + dst] = w[o * inDim + i];
  }
  return out;
}

/** All tensors of the HF checkpoint in a fixed order (each layer's router bias after its router). */
export function toHfTensors(c: ModelConfig, values: Map<string, Float32Array>, biases: Float32Array[]): Map<string, SafeTensor> {
  const t = new Map<string, SafeTensor>();
  for (const s of paramSpecs(c)) {
    const v = values.get(s.name)!;
    if (s.linear) {
      const [inDim, outDim] = s.shape;
      t.set(s.name, { dtype: 'F32', shape: [outDim, inDim], data: toOutIn(v, inDim, outDim, ropeRowMap(c, s.name)) });
    } else t.set(s.name, { dtype: 'F32', shape: [...s.shape], data: Float32Array.from(v) });
    const m = /^model\.layers\.(\d+)\.mlp\.router\.classifier\.weight$/.exec(s.name);
    if (m) {
      const l = Number(m[1]);
      t.set(biasName(l), { dtype: 'F32', shape: [biases[l].length], data: Float32Array.from(biases[l]) });
    }
  }
  return t;
}

/**
 * moecat weights and biases from HF tensors; every expected tensor must be present with its
 * shape, and nothing else may be (an unknown tensor means an architecture moecat lacks).
 * `ignore` matches tensors that are dropped knowingly (the released checkpoints' MTP head).
 */
export function fromHfTensors(c: ModelConfig, tensors: Map<string, SafeTensor>, where: string, ignore = /^model\.mtp\./): { values: Map<string, Float32Array>; biases: Float32Array[] } {
  const values = new Map<string, Float32Array>();
  const seen = new Set<string>();
  const take = (name: string, want: number[]): Float32Array => {
    const t = tensors.get(name);
    if (!t) throw new CheckpointError(`tensor ${name} is missing`, { where, hint: 'the weights do not match config.json' });
    const data = toFloat32(t);
    if (!data || t.shape.join('x') !== want.join('x')) {
      throw new CheckpointError(`tensor ${name} is ${t.dtype}[${t.shape.join(',')}], expected [${want.join(',')}] in F32, BF16 or F16`, { where, hint: 'the weights must have the shapes config.json implies' });
    }
    seen.add(name);
    return data;
  };
  for (const s of paramSpecs(c)) {
    if (s.linear) {
      const [inDim, outDim] = s.shape;
      values.set(s.name, fromOutIn(take(s.name, [outDim, inDim]), inDim, outDim, ropeRowMap(c, s.name)));
    } else {
      const d = take(s.name, s.shape);
      if (d.length !== numel(s.shape)) throw new CheckpointError(`tensor ${s.name} has the wrong size`, { where });
      values.set(s.name, Float32Array.from(d));
    }
  }
  const E = c.moe.nExperts + c.moe.nZeroExperts;
  const biases = Array.from({ length: c.nLayers }, (_, l) => Float32Array.from(take(biasName(l), [E])));
  const extra = [...tensors.keys()].filter((k) => !seen.has(k) && !ignore.test(k)).sort();
  if (extra.length > 0) {
    throw new CheckpointError(`unsupported tensor${extra.length > 1 ? 's' : ''} ${extra.slice(0, 3).join(', ')}${extra.length > 3 ? ` and ${extra.length - 3} more` : ''}`, {
      where,
      hint: 'moecat has no parameter of that name; see docs/interop.md for what is carried',
    });
  }
  return { values, biases };
}
