/**
 * Forward + backward of a rank's microbatches under `parallel.shard: full`, one unit of weights
 * at a time (trainer/fullShard.ts). tfjs records a tape over the whole forward, which would keep
 * every gathered layer alive until the backward; instead the step runs layer-major:
 *
 * 1. forward, no tape: gather the embedding, then each layer in turn, run it on every local
 *    microbatch and keep only the layer's input activations (rematerialisation checkpoints);
 *    drop the weights;
 * 2. head: gather the final norm and lm_head; LM loss (+ hidden z-loss) and their gradients
 *    with respect to the head weights and the last hidden states;
 * 3. backward, layers L-1 .. 0: gather the layer again, recompute it on the saved input under a
 *    tape and take the gradient of sum(out · dy) + balance · dL/dbalance with respect to the
 *    input and the layer's weights — the same ops in the same order as the whole-model tape, so
 *    the same bits; the embedding last, through its row gather;
 * 4. after each unit, its per-microbatch gradients are summed in the canonical microbatch tree
 *    (unit-sized buffers, so a rank with k microbatches holds about log2(k) + 2 of them, never
 *    a full-size gradient) and reduce-scattered onto the global shards: this rank keeps only its
 *    part, written into its shard of the reduced gradient.
 *
 * Per step and rank: two all-gathers of the weights (forward and backward) and one
 * reduce-scatter of the gradient, whatever the number of microbatches.
 */
import * as tf from '@tensorflow/tfjs';
import { readInto } from '../core/native';
import { ModelConfig } from '../model/config';
import { AttnContext } from '../model/attention';
import { gatherRows, weightedCrossEntropy } from '../model/ops';
import { MoeStats } from '../model/moe/layer';
import { scmoeLayer } from '../model/scmoeLayer';
import { forwardContext, headLogits } from '../model/transformer';
import { Batch } from '../data/batch';
import { hiddenZLoss, LossNorms, lossWeights } from './losses';
import { ShardedParams, Unit } from './fullShard';
import { TreeAccumulator } from './treeSum';

export interface FullShardMicro {
  lm: number;
  balance: number;
  z: number;
  hiddenRms: number;
  hiddenMax: number;
  moe: MoeStats[];
}

export interface FullShardResult {
  /** This rank's shard of the canonical-tree gradient. */
  grad: Float32Array;
  micro: FullShardMicro[];
}

interface MicroState {
  b: Batch;
  ctx: AttnContext;
  /** xs[l]: input of layer l (xs[L]: last hidden states). */
  xs: tf.Tensor2D[];
  balances: tf.Scalar[];
  out: FullShardMicro;
}

/** Unit-sized gradient buffers, reused within and across steps. */
export class UnitGradPool {
  private free: Float32Array[] = [];
  private all: Float32Array[] = [];
  constructor(private readonly size: number) {}
  take(n: number): Float32Array {
    const b = this.free.pop() ?? this.fresh();
    return b.subarray(0, n).fill(0);
  }
  release(v: Float32Array): void {
    this.free.push(new Float32Array(v.buffer));
  }
  reset(): void {
    this.free = [...this.all];
  }
  get bytes(): number {
    return this.all.length * this.size * 4;
  }
  private fresh(): Float32Array {
    const b = new Float32Array(this.size);
    this.all.push(b);
    return b;
  }
}

export interface FullShardArgs {
  c: ModelConfig;
  sp: ShardedParams;
  units: Unit[];
  pool: UnitGradPool;
  batches: Batch[];
  norms: LossNorms;
  /** Index of this rank's first microbatch, and the global microbatch count. */
  first: number;
  M: number;
  biases: Float32Array[];
  zLossCoef: number;
  /** This rank's shard of the reduced gradient is written here (length shard.hi - shard.lo). */
  gradOut: Float32Array;
}

/** Writes the gradients of `u`'s weights (null: not reached, zero) into a unit-relative buffer. */
function readUnitGrads(u: Unit, grads: (tf.Tensor | null)[], buf: Float32Array, offsetOf: (name: string) => number): void {
  u.specs.forEach((s, i) => {
    const g = grads[i];
    if (g) readInto(g, buf, offsetOf(s.name) - u.lo);
  });
}

export async function fullShardGradients(a: FullShardArgs): Promise<FullShardResult> {
  const { c, sp, units, pool } = a;
  const L = c.nLayers;
  const offsetOf = (name: string) => sp.layout.offsets.get(name)!;
  const embed = units[0];
  const head = units[units.length - 1];
  const layer = (l: number) => units[1 + l];
  pool.reset();
  const mbs: MicroState[] = a.batches.map((b) => ({
    b,
    ctx: forwardContext(c, b.batchSize, b.seqLen, { ropeBase: b.ropeBase, segmentIds: b.segmentIds }),
    xs: [],
    balances: [],
    out: { lm: 0, balance: 0, z: 0, hiddenRms: 0, hiddenMax: 0, moe: [] },
  }));
  // dL/dbalance_l: the whole-model tape's div(dy = 1, globalSeqs), the same kernel.
  const gBal = tf.tidy(() => tf.div(tf.scalar(1), tf.scalar(a.norms.globalSeqs)) as tf.Scalar);
  const dys: (tf.Tensor2D | null)[] = [];

  /** Sums a unit's per-microbatch gradients (perMicro fills buffer i) in the canonical microbatch tree. */
  const accumulate = (u: Unit, perMicro: (i: number, buf: Float32Array) => void): Float32Array => {
    const acc = new TreeAccumulator((b) => pool.release(b));
    for (let i = 0; i < mbs.length; i++) {
      const buf = pool.take(u.hi - u.lo);
      perMicro(i, buf);
      acc.push(buf);
    }
    return acc.result();
  };
  /** Reduce-scatters a unit's local subtree onto the global shards; this rank keeps its part. */
  const scatter = async (u: Unit, sub: Float32Array) => {
    const part = await sp.dp.treeReduceScatterSubtree(sub, a.first, mbs.length, a.M, sp.split(u.lo, u.hi));
    pool.release(sub);
    if (part.length > 0) a.gradOut.set(part, Math.max(u.lo, sp.shard.lo) - sp.shard.lo);
  };

  try {
    // 1. Forward without a tape, keeping each layer's input.
    await sp.withUnit(embed, (P) => {
      for (const m of mbs) m.xs.push(tf.tidy(() => gatherRows(P('model.embed_tokens.weight') as tf.Tensor2D, m.b.inputs)));
    });
    for (let l = 0; l < L; l++) {
      await sp.withUnit(layer(l), (P) => {
        for (const m of mbs) {
          const [out, bal] = tf.tidy(() => {
            const r = scmoeLayer(c, P, l, m.xs[l], m.ctx, a.biases[l], { balance: true });
            m.out.moe.push(r.moe.stats);
            return r.moe.balance ? [r.out, r.moe.balance] : [r.out];
          }) as [tf.Tensor2D, tf.Scalar | undefined];
          m.xs.push(out);
          if (bal) m.balances.push(bal);
        }
      });
    }
    for (const m of mbs) {
      tf.tidy(() => {
        const h = m.xs[L];
        m.out.hiddenRms = Math.sqrt(tf.mean(tf.square(h)).dataSync()[0]);
        m.out.hiddenMax = tf.max(tf.abs(h)).dataSync()[0];
        if (m.balances.length > 0) m.out.balance = tf.div(tf.addN(m.balances), a.norms.globalSeqs).dataSync()[0];
      });
    }

    // 2. Head: LM loss (+ z-loss), gradients for the head weights and the last hidden states.
    const headSub = await sp.withUnit(head, (P, ts) =>
      accumulate(head, (i, buf) => {
        const m = mbs[i];
        const xL = m.xs[L];
        const w = lossWeights(m.b, a.norms);
        const { value, grads } = tf.engine().gradients(
          () => {
            const lm = weightedCrossEntropy(headLogits(c, P, xL), m.b.targets, w);
            m.out.lm = lm.dataSync()[0];
            let total: tf.Scalar = lm;
            if (a.zLossCoef > 0) {
              const z = hiddenZLoss(xL, w, a.zLossCoef);
              m.out.z = z.dataSync()[0];
              total = tf.add(total, z) as tf.Scalar;
            }
            return total;
          },
          [xL, ...ts],
          undefined,
          true,
        );
        readUnitGrads(head, grads.slice(1), buf, offsetOf);
        tf.dispose([value, ...grads.slice(1)]);
        dys[i] = grads[0] as tf.Tensor2D;
      }),
    );
    await scatter(head, headSub);

    // 3. Layers, last to first: recompute under a tape, gradients for the input and the weights.
    for (let l = L - 1; l >= 0; l--) {
      const sub = await sp.withUnit(layer(l), (P, ts) =>
        accumulate(layer(l), (i, buf) => {
          const m = mbs[i];
          const dy = dys[i]!;
          const { value, grads } = tf.engine().gradients(
            () => {
              const r = scmoeLayer(c, P, l, m.xs[l], m.ctx, a.biases[l], { balance: true });
              let s = tf.sum(tf.mul(r.out, dy)) as tf.Scalar;
              if (r.moe.balance) s = tf.add(s, tf.mul(r.moe.balance, gBal)) as tf.Scalar;
              return s;
            },
            [m.xs[l], ...ts],
            undefined,
            true,
          );
          readUnitGrads(layer(l), grads.slice(1), buf, offsetOf);
          tf.dispose([value, ...grads.slice(1), dy, m.xs[l + 1]]);
          dys[i] = grads[0] as tf.Tensor2D;
        }),
      );
      await scatter(layer(l), sub);
    }

    // 4. Embedding: the row gather's gradient of dL/dx0.
    const embSub = await sp.withUnit(embed, (P, ts) =>
      accumulate(embed, (i, buf) => {
        const m = mbs[i];
        const dy = dys[i]!;
        const { value, grads } = tf.engine().gradients(() => tf.sum(tf.mul(gatherRows(ts[0] as tf.Tensor2D, m.b.inputs), dy)) as tf.Scalar, ts, undefined, true);
        readUnitGrads(embed, grads, buf, offsetOf);
        tf.dispose([value, ...grads, dy]);
        dys[i] = null;
      }),
    );
    await scatter(embed, embSub);
    return { grad: a.gradOut, micro: mbs.map((m) => m.out) };
  } finally {
    for (const m of mbs) {
      tf.dispose(m.xs);
      tf.dispose(m.balances);
      tf.dispose([m.ctx.cos, m.ctx.sin, ...(m.ctx.mask ? [m.ctx.mask] : [])]);
    }
    tf.dispose(dys.filter((d): d is tf.Tensor2D => d !== null));
    gBal.dispose();
  }
}
