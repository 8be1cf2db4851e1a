/**
 * Router with zero-computation experts (DESIGN.md section 2):
 *   logits = x·Wr (float32, no bias), s = softmax(logits) over N+Z experts,
 *   idx = topK(s + b, K) with b the non-trainable expert bias (selection only),
 *   g = s[idx] · routed_scaling_factor (no top-k renormalisation).
 * Selection runs on the host: tfjs has no TopK gradient (TFJS-NOTES), and the selection is a
 * constant for the backward pass anyway. Ties break toward the lower expert index.
 */

export interface Routing {
  T: number;
  K: number;
  /** Selected expert per slot, slot = t·K + k, in descending order of s + b per token. */
  idx: Int32Array;
  /** FFN slots per expert (length N) and zero-expert slots in total. */
  ffnCounts: Int32Array;
  zeroSlots: number;
}

/** Top-K selection on s + b for each token; probs is [T, E] row-major. */
export function selectExperts(probs: Float32Array, bias: Float32Array, T: number, E: number, K: number, nFfn: number): Routing {
  const idx = new Int32Array(T * K);
  const ffnCounts = new Int32Array(nFfn);
  let zeroSlots = 0;
  const score = new Float64Array(E);
  const taken = new Uint8Array(E);
  for (let t = 0; t < T; t++) {
    for (let e = 0; e < E; e++) {
      score[e] = probs[t * E + e] + bias[e];
      taken[e] = 0;
    }
    for (let k = 0; k < K; k++) {
      let best = -1;
      for (let e = 0; e < E; e++) if (!taken[e] && (best < 0 || score[e] > score[best])) best = e;
      taken[best] = 1;
      idx[t * K + k] = best;
      if (best < nFfn) ffnCounts[best]++;
      else zeroSlots++;
    }
  }
  return { T, K, idx, ffnCounts, zeroSlots };
}

/**
 * Dispatch plan: FFN slots sorted by (expert, slot), so each expert runs once on a contiguous
 * block of rows; zero-expert slots get no rows (they never run a matmul).
 */
export interface DispatchPlan {
  /** Token index for each dispatched row (sorted by expert). */
  rowToken: Int32Array;
  /** Row offset of each FFN expert's block (length N+1). */
  expertOffsets: Int32Array;
  /**
   * For each slot, the row of the combined source [expert outputs (rows) ; x (T rows)]:
   * FFN slots point at their expert output row, zero-expert slots at nRows + t (identity).
   */
  slotSource: Int32Array;
}

export function planDispatch(r: Routing, nFfn: number): DispatchPlan {
  const { T, K, idx, ffnCounts } = r;
  const expertOffsets = new Int32Array(nFfn + 1);
  for (let e = 0; e < nFfn; e++) expertOffsets[e + 1] = expertOffsets[e] + ffnCounts[e];
  const nRows = expertOffsets[nFfn];
  const cursor = expertOffsets.slice(0, nFfn);
  const rowToken = new Int32Array(nRows);
  const slotSource = new Int32Array(T * K);
  for (let slot = 0; slot < T * K; slot++) {
    const e = idx[slot];
    const t = Math.floor(slot / K);
    if (e < nFfn) {
      const row = cursor[e]++;
      rowToken[row] = t;
      slotSource[slot] = row;
    } else {
      slotSource[slot] = nRows + t;
    }
  }
  return { rowToken, expertOffsets, slotSource };
}
