/**
 * The kernels of the batched host decode path (hostDecode.ts): a matmul of a few rows against a
 * weight, a SwiGLU FFN of a few rows, cached attention of one sequence's rows, and CHESS's
 * selective sparse kernels. They run in the native addon (native/decode.c, native/sparse.c)
 * when it is present, else in plain JS. The choice is made once per process,
 * so everything that decodes in a process (the engine, `generate`) uses the same kernels and
 * gets the same bits. Both versions are row-independent: an output row depends only on its own
 * input row (and its own cache), so a token decodes to the same bits alone or in any batch.
 */
import { defaultAddonPath, nativeAddon, requireAddon } from '../core/native/addon';
import { jsSparseFfn, jsSparseRows } from './sparse/kernels';

let jsGate = new Float32Array(1);
let jsUp = new Float32Array(1);

const silu = (g: number) => g / (1 + Math.exp(-g));

export interface DecodeKernels {
  readonly name: 'native' | 'js';
  /** y[M,N] = x[M,K]·W[K,N], row-major. */
  matmul(x: Float32Array, W: Float32Array, y: Float32Array, M: number, K: number, N: number): void;
  /** y[M,d] = (silu(x·Wg) ⊙ (x·Wu))·Wd: the SwiGLU FFN (silu(g)·u in double, rounded once). */
  ffn(x: Float32Array, Wg: Float32Array, Wu: Float32Array, Wd: Float32Array, y: Float32Array, M: number, d: number, h: number): void;
  /**
   * attend for n rows of one sequence at positions S0..S0+n−1 (q [n, H, dk], out [n, H, dv]):
   * row r attends cached positions 0..S0+r. Each row's bits are attend's for that row alone.
   */
  attendRows(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, S0: number, n: number, H: number, Hk: number, dk: number, dv: number, scale: number): void;
  /** Softmax attention of q [H, dk] over S cached positions k [S, Hk, dk], v [S, Hk, dv] into out [H, dv]. */
  attend(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, S: number, H: number, Hk: number, dk: number, dv: number, scale: number): void;
  /** CHESS, M rows: y[r] = Σ over inputs with |x[r,i]| >= tau of x[r,i]·W[i, :]; returns the (row, input) pairs kept. */
  sparseRows(x: Float32Array, W: Float32Array, y: Float32Array, M: number, K: number, N: number, tau: number): number;
  /**
   * CHESS SwiGLU of M rows after the dense gate g [M, h] (WuT: the up projection transposed,
   * [h, d]; native/sparse.c); returns the (row, channel) pairs kept.
   */
  sparseFfn(x: Float32Array, g: Float32Array, WuT: Float32Array, Wd: Float32Array, tau: Float32Array, y: Float32Array, M: number, d: number, h: number): number;
}

interface DecodeAddon {
  sparseRows(x: Float32Array, W: Float32Array, y: Float32Array, M: number, K: number, N: number, tau: number, threads: number): number;
  sparseFfn(x: Float32Array, g: Float32Array, WuT: Float32Array, Wd: Float32Array, tau: Float32Array, y: Float32Array, M: number, d: number, h: number, threads: number): number;
  decodeMatmul(x: Float32Array, W: Float32Array, y: Float32Array, M: number, K: number, N: number, threads: number): void;
  decodeFfn(x: Float32Array, Wg: Float32Array, Wu: Float32Array, Wd: Float32Array, y: Float32Array, M: number, d: number, h: number, threads: number): void;
  decodeAttendRows(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, S0: number, n: number, H: number, Hk: number, dk: number, dv: number, scale: number, threads: number): void;
  decodeTrim(): boolean;
  decodeAttend(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, S: number, H: number, Hk: number, dk: number, dv: number, scale: number): void;
}

export const jsKernels: DecodeKernels = {
  name: 'js',
  matmul(x, W, y, M, K, N) {
    for (let r = 0; r < M; r++) {
      const yo = r * N;
      y.fill(0, yo, yo + N);
      for (let k = 0; k < K; k++) {
        const xi = x[r * K + k];
        const row = k * N;
        for (let j = 0; j < N; j++) y[yo + j] += xi * W[row + j];
      }
    }
  },
  ffn(x, Wg, Wu, Wd, y, M, d, h) {
    if (jsGate.length < M * h) {
      jsGate = new Float32Array(M * h);
      jsUp = new Float32Array(M * h);
    }
    jsKernels.matmul(x, Wg, jsGate, M, d, h);
    jsKernels.matmul(x, Wu, jsUp, M, d, h);
    for (let i = 0; i < M * h; i++) jsGate[i] = silu(jsGate[i]) * jsUp[i];
    jsKernels.matmul(jsGate, Wd, y, M, h, d);
  },
  attendRows(q, k, v, out, S0, n, H, Hk, dk, dv, scale) {
    for (let r = 0; r < n; r++) jsKernels.attend(q.subarray(r * H * dk, (r + 1) * H * dk), k, v, out.subarray(r * H * dv, (r + 1) * H * dv), S0 + r + 1, H, Hk, dk, dv, scale);
  },
  attend(q, k, v, out, S, H, Hk, dk, dv, scale) {
    const g = H / Hk;
    const scores = new Float32Array(S);
    for (let h = 0; h < H; h++) {
      const kh = Math.floor(h / g);
      let max = -Infinity;
      for (let t = 0; t < S; t++) {
        let s = 0;
        const kb = (t * Hk + kh) * dk;
        for (let i = 0; i < dk; i++) s += q[h * dk + i] * k[kb + i];
        s *= scale;
        scores[t] = s;
        if (s > max) max = s;
      }
      let z = 0;
      for (let t = 0; t < S; t++) z += scores[t] = Math.exp(scores[t] - max);
      const o = h * dv;
      out.fill(0, o, o + dv);
      for (let t = 0; t < S; t++) {
        const p = scores[t] / z;
        const vb = (t * Hk + kh) * dv;
        for (let i = 0; i < dv; i++) out[o + i] += p * v[vb + i];
      }
    }
  },
  sparseRows: jsSparseRows,
  sparseFfn: jsSparseFfn,
};

function nativeKernels(a: DecodeAddon): DecodeKernels {
  return {
    name: 'native',
    matmul: (x, W, y, M, K, N) => a.decodeMatmul(x, W, y, M, K, N, 0),
    ffn: (x, Wg, Wu, Wd, y, M, d, h) => a.decodeFfn(x, Wg, Wu, Wd, y, M, d, h, 0),
    attendRows: (q, k, v, out, S0, n, H, Hk, dk, dv, scale) => a.decodeAttendRows(q, k, v, out, S0, n, H, Hk, dk, dv, scale, 0),
    attend: (q, k, v, out, S, H, Hk, dk, dv, scale) => a.decodeAttend(q, k, v, out, S, H, Hk, dk, dv, scale),
    sparseRows: (x, W, y, M, K, N, tau) => a.sparseRows(x, W, y, M, K, N, tau, 0),
    sparseFfn: (x, g, WuT, Wd, tau, y, M, d, h) => a.sparseFfn(x, g, WuT, Wd, tau, y, M, d, h, 0),
  };
}

function loadNative(): DecodeAddon | null {
  let a: unknown = nativeAddon();
  if (!a) {
    try {
      a = requireAddon(defaultAddonPath());
    } catch {
      return null; // not built here: the JS kernels serve
    }
  }
  const d = a as Partial<DecodeAddon>;
  return typeof d.decodeMatmul === 'function' && typeof d.sparseFfn === 'function' && typeof d.decodeFfn === 'function' && typeof d.decodeAttendRows === 'function' && typeof d.decodeTrim === 'function' ? (d as DecodeAddon) : null;
}

let chosen: DecodeKernels | null = null;

/** The process's decode kernels: native when the addon (with decode.c) loads, else JS. */
export function decodeKernels(): DecodeKernels {
  if (!chosen) {
    const a = loadNative();
    chosen = a ? nativeKernels(a) : jsKernels;
  }
  return chosen;
}

/** Forces a kernel set (tests and benchmarks compare both); returns the previous one. */
export function setDecodeKernels(which: 'native' | 'js'): DecodeKernels {
  const prev = decodeKernels();
  if (which === 'js') chosen = jsKernels;
  else {
    const a = loadNative();
    if (!a) throw new Error('the native addon with the decode kernels is not built (node native/build.js)');
    chosen = nativeKernels(a);
  }
  return prev;
}

/** Restores a kernel set returned by setDecodeKernels. */
export function restoreDecodeKernels(k: DecodeKernels): void {
  chosen = k;
}

/**
 * Hands the C heap's free pages back to the system (the addon's decodeTrim: glibc malloc_trim)
 * when the addon is built; false otherwise. Typed arrays freed by V8 after a load go back to
 * glibc's free lists, which keep them (RSS stays at the load's peak) until trimmed.
 */
export function trimHostHeap(): boolean {
  const a = loadNative();
  return a ? a.decodeTrim() : false;
}
