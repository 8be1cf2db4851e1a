/**
 * Expert parallelism (DESIGN.md sections 2 and 5): FFN expert e is computed by rank
 * owner(e) = floor(e / (N/W)); routing stays local (host-side, as in model/moe/layer.ts).
 *
 * Per layer and microbatch, in the same op order as moeLayer so a single-process run and an EP
 * run record the same tape around u (bitwise gradients, see below):
 *   probs, routing, plan, gates, xs = gatherRows(u, rowToken) — rows in (expert, slot) order,
 *   so the rows for owner s are one contiguous block; zero-expert slots never travel;
 *   dispatch   — all-to-all of [per-expert counts ; rows] to the owners (started, not awaited);
 *   expertOp   — on the owner, each expert runs separately on every source rank's segment
 *                (same shapes as the single-process layer on that rank's microbatch: same bits);
 *   combine    — all-to-all of the outputs back to the sources;
 *   source = concat([ys, u]), gates and the weighted K-sum locally.
 * Gradients: combine's gradient sends dY rows to the owners; expertOp's gradient computes dX and
 * dW per (source, expert) with tf.grads on the same swiglu (the ops autodiff would run), sends
 * dX back (the reverse all-to-all) and returns dW as the canonical tree sum over source ranks
 * (parallel/tree.ts: lower rank on the left, zeros for sources that sent no rows). With one
 * microbatch per rank per step (M = W) that is exactly the single-process microbatch tree's
 * value for expert e; the non-owners return nothing (zero) for e, and the data-parallel
 * treeAllReduceSubtree then yields the same sum bit for bit (0 + x = x).
 *
 * This file reads only the owned experts' weights (P(name) for e in this rank's block), so the
 * trainer may hold just those: trainer/expertShard.ts keeps each rank's own experts' weights,
 * gradients and Adam moments (the default with `parallel.shard: none`), and the replicated
 * layout (every rank holds every expert; non-owners' gradients are zero) gives the same bits.
 *
 * ScMoE overlap: the MoeFn returns a PendingMoe; scmoeLayer calls mid() after FFN0 (wait for
 * dispatch, compute the owned experts, start combine) and finish() after FFN1 (wait for
 * combine, weighted sum). u's identity branch is cloned at start so u's consumers stay in the
 * single-process tape order. The backward all-to-alls are blocking (tfjs runs gradient
 * functions synchronously, one after another).
 */
import * as tf from '@tensorflow/tfjs';
import { customGradVariadic, engineTapeState } from '../core/tfjsInternals';
import { ParallelError } from '../core/errors';
import { MoeOutput, routeTokens } from '../model/moe/layer';
import { gatherRows, moeCombine, swiglu } from '../model/ops';
import { balanceLoss } from '../model/moe/balanceLoss';
import { MoeCall, MoeFn, PendingMoe } from '../model/scmoeLayer';
import { PendingAllToAll, SyncAllToAll } from './syncComm';
import { canonicalTreeSum } from './tree';

export interface ExpertParallelOptions {
  /** Return a pending MoE so ScMoE overlaps communication with FFN0/Attn1/FFN1 (default true). */
  overlap?: boolean;
}

/** Rank that computes FFN expert e when N experts are spread over W ranks. */
export function expertOwner(e: number, N: number, W: number): number {
  return Math.floor(e / (N / W));
}

type GradFn = (dy: tf.Tensor) => tf.Tensor[];
function customOp(inputs: tf.Tensor[], fwd: () => { value: tf.Tensor; gradFunc: GradFn }): tf.Tensor {
  return customGradVariadic(() => fwd())(...inputs);
}

interface Segment {
  src: number;
  /** Local index of the owned expert (e = rank·npr + j). */
  j: number;
  n: number;
  rows: Float32Array;
}

export class ExpertParallel {
  readonly overlap: boolean;
  /** Per-layer MoE override for ForwardOptions.moe / TrainerOptions.moe. */
  readonly moe: (layer: number) => MoeFn;

  constructor(
    readonly comm: SyncAllToAll,
    opts: ExpertParallelOptions = {},
  ) {
    this.overlap = opts.overlap ?? true;
    const fn: MoeFn = (u, call) => {
      const p = this.start(u, call);
      return this.overlap ? p : p.finish();
    };
    this.moe = () => fn;
  }

  /** Routes locally, starts the dispatch, and returns the pending layer output. */
  start(u: tf.Tensor2D, call: MoeCall): PendingMoe {
    const { c, P, prefix, bias, shape } = call;
    const [T, d] = u.shape;
    const N = c.moe.nExperts;
    const K = c.moe.topK;
    const W = this.comm.worldSize;
    const me = this.comm.rank;
    if (N % W !== 0) throw new ParallelError(`expert parallelism needs the FFN expert count (${N}) divisible by the world size (${W})`, { hint: 'choose --world-size among the divisors of model.moe.nExperts' });
    const npr = N / W;

    // Same op order as moeLayer: router, routing (host), gates, row gather, identity branch.
    const { probs, routing, plan, gates } = routeTokens(c, P, prefix, u, bias);
    const nRows = plan.rowToken.length;
    const xs = nRows > 0 ? gatherRows(u, plan.rowToken) : (tf.zeros([0, d]) as tf.Tensor2D);
    const uId = tf.clone(u);
    const balance = call.balance && c.moe.balanceAlpha > 0 ? balanceLoss(c, probs, routing.idx, shape.B, shape.S) : undefined;

    // Dispatch: to owner s, [counts of its npr experts ; their rows].
    const blockLo = (s: number) => plan.expertOffsets[s * npr];
    const xsData = xs.dataSync() as Float32Array;
    const parts: Float32Array[] = [];
    for (let s = 0; s < W; s++) {
      const lo = blockLo(s);
      const hi = blockLo(s + 1);
      const part = new Float32Array(npr + (hi - lo) * d);
      for (let j = 0; j < npr; j++) part[j] = plan.expertOffsets[s * npr + j + 1] - plan.expertOffsets[s * npr + j];
      part.set(xsData.subarray(lo * d, hi * d), npr);
      parts.push(part);
    }
    const dispatch = this.comm.startAllToAll(parts);

    const owned: tf.Tensor[] = [];
    for (let j = 0; j < npr; j++) {
      const e = me * npr + j;
      for (const w of ['gate_proj', 'up_proj', 'down_proj']) owned.push(P(`${prefix}.experts.${e}.${w}.weight`));
    }

    let recvOut: tf.Tensor2D | null = null;
    let segs: Segment[] = [];
    let combine: PendingAllToAll | null = null;
    const mid = () => {
      if (recvOut) return;
      segs = parseDispatch(dispatch.wait(), npr, d);
      recvOut = this.expertOp(xs, owned, segs, plan.expertOffsets, npr, d);
      // Combine: outputs back to their sources (segments are grouped by source).
      const out = recvOut.dataSync() as Float32Array;
      const back: Float32Array[] = Array.from({ length: W }, () => new Float32Array(0));
      let row = 0;
      for (let s = 0; s < W; s++) {
        const n = segs.filter((g) => g.src === s).reduce((a, g) => a + g.n, 0);
        back[s] = out.slice(row * d, (row + n) * d);
        row += n;
      }
      combine = this.comm.startAllToAll(back);
    };

    const finish = (): MoeOutput => {
      mid();
      const R = segs.reduce((a, g) => a + g.n, 0);
      const pad = nRows === 0 ? 1 : 0;
      const comb = combine!;
      const ys = customOp([recvOut!], () => {
        const got = comb.wait();
        const data = new Float32Array((nRows + pad) * d);
        let off = 0;
        for (const g of got) {
          data.set(g, off);
          off += g.length;
        }
        if (off !== nRows * d) throw new ParallelError(`expert-parallel combine on rank ${me}: got ${off / d} rows back, sent ${nRows}`);
        return {
          value: tf.tensor2d(data, [nRows + pad, d]),
          // dY rows go to their owners, where they line up with the received segments.
          gradFunc: (dy: tf.Tensor) => {
            const dyData = dy.dataSync() as Float32Array;
            const toOwners = Array.from({ length: W }, (_, s) => dyData.slice(blockLo(s) * d, blockLo(s + 1) * d));
            const recv = this.comm.syncAllToAll(toOwners);
            const dr = new Float32Array(Math.max(R, 1) * d);
            let o = 0;
            for (const g of recv) {
              dr.set(g, o);
              o += g.length;
            }
            return [tf.tensor2d(dr, [Math.max(R, 1), d])];
          },
        };
      }) as tf.Tensor2D;
      // With no local FFN rows ys is one dummy row, kept in the graph so every rank runs the
      // same gradient all-to-alls; slots index past it.
      const slotSource = pad ? plan.slotSource.map((v) => v + pad) : plan.slotSource;
      const source = tf.concat([ys, uId], 0) as tf.Tensor2D;
      const outT = moeCombine(source, slotSource, gates, T, K);
      const result: MoeOutput = {
        out: outT,
        probs,
        routing,
        stats: { tokens: T, ffnCounts: routing.ffnCounts, ffnRows: nRows, zeroSlots: routing.zeroSlots },
      };
      if (balance) result.balance = balance;
      return result;
    };
    return { pending: true, mid, finish };
  }

  /**
   * The owner's expert compute as one op over all received segments: value [R, d] (one dummy
   * zero row when nothing arrived); gradient = dX back to the sources (all-to-all) and, per owned
   * expert, dW as the canonical tree sum over source ranks.
   */
  private expertOp(xs: tf.Tensor2D, owned: tf.Tensor[], segs: Segment[], offsets: Int32Array, npr: number, d: number): tf.Tensor2D {
    const W = this.comm.worldSize;
    const me = this.comm.rank;
    const R = segs.reduce((a, g) => a + g.n, 0);
    const nLocal = xs.shape[0];
    const w = (j: number) => owned.slice(3 * j, 3 * j + 3) as [tf.Tensor, tf.Tensor, tf.Tensor];
    return customOp([xs, ...owned], () => {
      const outs = segs.filter((g) => g.n > 0).map((g) => swiglu(tf.tensor2d(g.rows, [g.n, d]), ...w(g.j)));
      const value = R === 0 ? (tf.zeros([1, d]) as tf.Tensor2D) : outs.length === 1 ? outs[0] : (tf.concat(outs, 0) as tf.Tensor2D);
      return {
        value,
        gradFunc: (dy: tf.Tensor) => {
          const dyData = dy.dataSync() as Float32Array;
          const dxTo: Float32Array[] = Array.from({ length: W }, () => new Float32Array(0));
          const leaves: Float32Array[][][] = Array.from({ length: npr }, () => Array.from({ length: 3 }, () => new Array<Float32Array>(W)));
          const f = (x: tf.Tensor, a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => swiglu(x as tf.Tensor2D, a, b, c);
          const grads = nestedGrads(f as (...a: tf.Tensor[]) => tf.Tensor);
          let row = 0;
          for (let s = 0; s < W; s++) {
            const mine = segs.filter((g) => g.src === s);
            const n = mine.reduce((a, g) => a + g.n, 0);
            const dx = new Float32Array(n * d);
            let o = 0;
            for (const g of mine) {
              if (g.n === 0) continue;
              const [gx, ga, gb, gc] = tf.tidy(() => grads([tf.tensor2d(g.rows, [g.n, d]), ...w(g.j)], tf.tensor2d(dyData.subarray(row * d, (row + g.n) * d), [g.n, d])).map((t) => t.dataSync() as Float32Array));
              dx.set(gx, o);
              o += g.n * d;
              row += g.n;
              leaves[g.j][0][s] = ga;
              leaves[g.j][1][s] = gb;
              leaves[g.j][2][s] = gc;
            }
            dxTo[s] = dx;
          }
          const back = this.comm.syncAllToAll(dxTo);
          const dxs = new Float32Array(Math.max(nLocal, 0) * d);
          let off = 0;
          for (const b of back) {
            dxs.set(b, off);
            off += b.length;
          }
          if (off !== nLocal * d) throw new ParallelError(`expert-parallel backward on rank ${me}: got ${off / d} dX rows, sent ${nLocal}`);
          void offsets;
          const dW = owned.map((t, i) => {
            const l = leaves[Math.floor(i / 3)][i % 3];
            const size = t.size;
            for (let s = 0; s < W; s++) l[s] ??= new Float32Array(size);
            return tf.tensor(canonicalTreeSum(l), t.shape);
          });
          return [tf.tensor2d(dxs, [nLocal, d]), ...dW];
        },
      };
    }) as tf.Tensor2D;
  }
}

/**
 * tf.grads called from inside a gradient function: the engine keeps a single active tape and a
 * nested gradients() call replaces it and then nulls it, so the outer backward pass (which
 * still walks its tape to free saved tensors) must get its tape back afterwards.
 */
function nestedGrads(f: (...a: tf.Tensor[]) => tf.Tensor): (xs: tf.Tensor[], dy: tf.Tensor) => tf.Tensor[] {
  const g = tf.grads(f);
  return (xs, dy) => {
    const state = engineTapeState();
    const outer = state.activeTape;
    try {
      return g(xs, dy);
    } finally {
      state.activeTape = outer;
    }
  };
}

function parseDispatch(recv: Float32Array[], npr: number, d: number): Segment[] {
  const segs: Segment[] = [];
  recv.forEach((part, src) => {
    let off = npr;
    for (let j = 0; j < npr; j++) {
      const n = part[j];
      segs.push({ src, j, n, rows: part.slice(off, off + n * d) });
      off += n * d;
    }
    if (off !== part.length) throw new ParallelError(`expert-parallel dispatch from rank ${src}: ${part.length} values, header says ${off}`);
  });
  return segs;
}
