/**
 * Batch-1 matrix-vector kernels in plain JS over Float32Arrays (CHESS, arXiv 2409.01366,
 * section 3.4). Weights are row-major [in, out] (our params' layout), except the FFN up
 * projection, which is pre-transposed to [hidden, in] so an active channel is one contiguous
 * row. The dense kernels are written in the same style as the sparse ones, so a speed
 * comparison measures skipped work, not a different loop shape:
 *  - `matVec`/`matVecRows`: y = x·W as a sum of rows x_i·W[i, :]; the sparse version visits only
 *    the listed rows (the paper's vmmsp: sparse input vector times dense matrix).
 *  - `rowDots`/`rowDotsSparse`: y_j = W^T[j, :]·x for all / only the listed output channels
 *    (the paper's spvmm for the up projection, whose output is needed only where a_g is kept).
 * Summation order is the same in both versions, so a sparse kernel equals the dense kernel on
 * the masked input bitwise (adding +0 never changes a float).
 */

/** y[0..out) = x·W, W row-major [in, out]. */
export function matVec(x: Float32Array, W: Float32Array, inDim: number, outDim: number, y: Float32Array): Float32Array {
  y.fill(0, 0, outDim);
  for (let i = 0; i < inDim; i++) {
    const xi = x[i];
    const row = i * outDim;
    for (let j = 0; j < outDim; j++) y[j] += xi * W[row + j];
  }
  return y;
}

/** y = sum over the `n` listed rows i of x_i·W[i, :] (inactive inputs skipped). */
export function matVecRows(x: Float32Array, W: Float32Array, rows: Int32Array, n: number, outDim: number, y: Float32Array): Float32Array {
  y.fill(0, 0, outDim);
  for (let r = 0; r < n; r++) {
    const i = rows[r];
    const xi = x[i];
    const row = i * outDim;
    for (let j = 0; j < outDim; j++) y[j] += xi * W[row + j];
  }
  return y;
}

/** y[j] = WT[j, :]·x for every output channel j; WT row-major [out, in]. */
export function rowDots(x: Float32Array, WT: Float32Array, inDim: number, outDim: number, y: Float32Array): Float32Array {
  for (let j = 0; j < outDim; j++) {
    const row = j * inDim;
    let s = 0;
    for (let i = 0; i < inDim; i++) s += x[i] * WT[row + i];
    y[j] = s;
  }
  return y;
}

/** y[j] = WT[j, :]·x only for the `n` listed channels; other entries are set to 0. */
export function rowDotsSparse(x: Float32Array, WT: Float32Array, inDim: number, outDim: number, cols: Int32Array, n: number, y: Float32Array): Float32Array {
  y.fill(0, 0, outDim);
  for (let r = 0; r < n; r++) {
    const j = cols[r];
    const row = j * inDim;
    let s = 0;
    for (let i = 0; i < inDim; i++) s += x[i] * WT[row + i];
    y[j] = s;
  }
  return y;
}

/** Indices i with |x_i| >= tau (layer-wise threshold, CATS and CHESS attention); returns the count. */
export function activeByThreshold(x: Float32Array, n: number, tau: number, out: Int32Array): number {
  let k = 0;
  for (let i = 0; i < n; i++) if (Math.abs(x[i]) >= tau) out[k++] = i;
  return k;
}

/** Indices i with |x_i| >= tau_i (CHESS channel-wise thresholds, eq. for tau_i); returns the count. */
export function activeByChannel(x: Float32Array, n: number, tau: Float32Array, out: Int32Array): number {
  let k = 0;
  for (let i = 0; i < n; i++) if (Math.abs(x[i]) >= tau[i]) out[k++] = i;
  return k;
}

const silu = (g: number) => g / (1 + Math.exp(-g));

/** Scratch buffers one FFN evaluation needs (reused across calls). */
export interface FfnScratch {
  ag: Float32Array;
  au: Float32Array;
  act: Float32Array;
  idx: Int32Array;
}

export function ffnScratch(maxHidden: number): FfnScratch {
  return { ag: new Float32Array(maxHidden), au: new Float32Array(maxHidden), act: new Float32Array(maxHidden), idx: new Int32Array(maxHidden) };
}

export interface FfnWeights {
  /** gate [d, h] */
  gate: Float32Array;
  /** up, pre-transposed: [h, d] */
  upT: Float32Array;
  /** down [h, d] */
  down: Float32Array;
  d: number;
  h: number;
}

/** Dense SwiGLU: down(silu(x·Wg) ⊙ (x·Wu)), in the same loop style as `ffnSparse`. */
export function ffnDense(w: FfnWeights, x: Float32Array, s: FfnScratch, y: Float32Array): Float32Array {
  matVec(x, w.gate, w.d, w.h, s.ag);
  for (let j = 0; j < w.h; j++) s.ag[j] = silu(s.ag[j]);
  rowDots(x, w.upT, w.d, w.h, s.au);
  for (let j = 0; j < w.h; j++) s.act[j] = s.ag[j] * s.au[j];
  return matVec(s.act, w.down, w.h, w.d, y);
}

/**
 * Thresholded SwiGLU: a_g = silu(x·Wg) densely, then keep channel j iff |a_g,j| >= tau_j; the
 * up projection runs only for kept channels and the down projection adds only their rows.
 * Returns the number of kept channels (for realised sparsity).
 */
export function ffnSparse(w: FfnWeights, x: Float32Array, tau: Float32Array, s: FfnScratch, y: Float32Array): number {
  matVec(x, w.gate, w.d, w.h, s.ag);
  for (let j = 0; j < w.h; j++) s.ag[j] = silu(s.ag[j]);
  const n = activeByChannel(s.ag, w.h, tau, s.idx);
  rowDotsSparse(x, w.upT, w.d, w.h, s.idx, n, s.au);
  for (let r = 0; r < n; r++) {
    const j = s.idx[r];
    s.act[j] = s.ag[j] * s.au[j];
  }
  matVecRows(s.act, w.down, s.idx, n, w.d, y);
  return n;
}

let jsIdx = new Int32Array(1);
let jsUp = new Float32Array(1);
let jsAct = new Float32Array(1);

/**
 * The JS twin of native/sparse.c's sparseRows (decodeKernels.ts uses it where the addon is not
 * built): y[r] = Σ over inputs with |x[r,i]| >= tau of x[r,i]·W[i, :], row by row; returns the
 * (row, input) pairs kept.
 */
export function jsSparseRows(x: Float32Array, W: Float32Array, y: Float32Array, M: number, K: number, N: number, tau: number): number {
  if (jsIdx.length < K) jsIdx = new Int32Array(K);
  let kept = 0;
  for (let r = 0; r < M; r++) {
    const xr = x.subarray(r * K, (r + 1) * K);
    const n = activeByThreshold(xr, K, tau, jsIdx);
    matVecRows(xr, W, jsIdx, n, N, y.subarray(r * N, (r + 1) * N));
    kept += n;
  }
  return kept;
}

/**
 * The JS twin of native/sparse.c's sparseFfn: the SwiGLU of M rows after the dense gate
 * g [M, h]; row r keeps channel c iff |silu(g[r,c])| >= tau[c] and runs the up projection (WuT,
 * [h, d]) and the down projection (Wd, [h, d]) for kept channels only. Returns the (row,
 * channel) pairs kept.
 */
export function jsSparseFfn(x: Float32Array, g: Float32Array, WuT: Float32Array, Wd: Float32Array, tau: Float32Array, y: Float32Array, M: number, d: number, h: number): number {
  if (jsIdx.length < h) jsIdx = new Int32Array(h);
  if (jsUp.length < h) [jsUp, jsAct] = [new Float32Array(h), new Float32Array(h)];
  let kept = 0;
  for (let r = 0; r < M; r++) {
    const xr = x.subarray(r * d, (r + 1) * d);
    let n = 0;
    for (let c = 0; c < h; c++) if (Math.abs(Math.fround(silu(g[r * h + c]))) >= tau[c]) jsIdx[n++] = c;
    rowDotsSparse(xr, WuT, d, h, jsIdx, n, jsUp);
    for (let k = 0; k < n; k++) jsAct[jsIdx[k]] = silu(g[r * h + jsIdx[k]]) * jsUp[jsIdx[k]];
    matVecRows(jsAct, Wd, jsIdx, n, d, y.subarray(r * d, (r + 1) * d));
    kept += n;
  }
  return kept;
}
