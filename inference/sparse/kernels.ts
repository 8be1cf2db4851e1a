/**
 * CHESS's selective sparse kernels in plain JS (arXiv 2409.01366, section 3.4): the twins of
 * native/sparse.c that decodeKernels.ts uses where the addon is not built. Weights are row-major
 * [in, out] (our params' layout), except the FFN up projection, which is pre-transposed to
 * [hidden, in] so a kept channel is one contiguous row:
 *  - `matVecRows`: y = Σ over the listed input rows i of x_i·W[i, :] (the paper's vmmsp: sparse
 *    input vector times dense matrix), in ascending order, so it equals the dense product of
 *    the masked input bitwise (adding +0 never changes a float).
 *  - `rowDotsSparse`: y_j = W^T[j, :]·x only for the listed output channels (the paper's spvmm
 *    for the up projection, whose output is needed only where a_g is kept).
 */

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

const silu = (g: number) => g / (1 + Math.exp(-g));

let jsIdx = new Int32Array(1);
let jsUp = new Float32Array(1);
let jsAct = new Float32Array(1);

/**
 * native/sparse.c's sparseRows in JS: y[r] = Σ over inputs with |x[r,i]| >= tau of
 * x[r,i]·W[i, :], row by row; returns the (row, input) pairs kept.
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
 * native/sparse.c's sparseFfn in JS: the SwiGLU of M rows after the dense gate g [M, h]; row r
 * keeps channel c iff |silu(g[r,c])| >= tau[c] and runs the up projection (WuT, [h, d]) and the
 * down projection (Wd, [h, d]) for kept channels only. Returns the (row, channel) pairs kept.
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
