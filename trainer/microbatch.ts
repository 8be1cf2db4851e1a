/**
 * Forward + backward of one microbatch: returns the flat gradient (spec order, zeros for
 * experts that received no tokens) and the scalar parts read inside the tape.
 */
import * as tf from '@tensorflow/tfjs';
import { readInto } from '../core/native';
import { readAllInto } from '../core/webgpu/readBatch';
import { ModelConfig } from '../model/config';
import { FlatLayout } from '../model/flatParams';
import { ParamStore } from '../model/params';
import { MoeStats } from '../model/moe/layer';
import { ForwardOptions } from '../model/transformer';
import { LossNorms, microbatchLoss } from './losses';
import { Batch } from '../data/batch';

export interface MicrobatchResult {
  grad: Float32Array;
  lm: number;
  balance: number;
  z: number;
  moe: MoeStats[];
  hiddenRms: number;
  hiddenMax: number;
}

type MicrobatchOpts = { biases: Float32Array[]; zLossCoef: number; moe?: ForwardOptions['moe']; gradOut?: Float32Array };
type Scalars = Omit<MicrobatchResult, 'grad'>;

/** The tape: loss parts read inside it, and the gradient of every variable that received one. */
function runTape(c: ModelConfig, store: ParamStore, layout: FlatLayout, mb: Batch, norms: LossNorms, opts: MicrobatchOpts): { value: tf.Scalar; grads: tf.NamedTensorMap; scalars: Scalars } {
  let lm = 0;
  let balance = 0;
  let z = 0;
  let hiddenRms = 0;
  let hiddenMax = 0;
  let moe: MoeStats[] = [];
  const vars = layout.specs.map((s) => store.get(s.name));
  const { value, grads } = tf.variableGrads(() => {
    const parts = microbatchLoss(c, store.getter, mb, norms, opts);
    // Scalars are read inside the tape: intermediates are released when it closes.
    if (tf.getBackend() === 'webgpu') {
      // One GPU round trip for all five (an exact copy of each value, so the same numbers).
      const zero = tf.zeros([1]);
      const parts5 = [parts.lm, parts.balance ?? zero, parts.z ?? zero, tf.mean(tf.square(parts.hidden)), tf.max(tf.abs(parts.hidden))];
      const v = tf.concat(parts5.map((t) => tf.reshape(t, [1])), 0).dataSync();
      [lm, balance, z, hiddenRms, hiddenMax] = [v[0], v[1], v[2], Math.sqrt(v[3]), v[4]];
    } else {
      lm = parts.lm.dataSync()[0];
      balance = parts.balance ? parts.balance.dataSync()[0] : 0;
      z = parts.z ? parts.z.dataSync()[0] : 0;
      hiddenRms = Math.sqrt(tf.mean(tf.square(parts.hidden)).dataSync()[0]);
      hiddenMax = tf.max(tf.abs(parts.hidden)).dataSync()[0];
    }
    moe = parts.moe;
    return parts.total;
  }, vars);
  return { value, grads, scalars: { lm, balance, z, moe, hiddenRms, hiddenMax } };
}

export function microbatchGrad(c: ModelConfig, store: ParamStore, layout: FlatLayout, mb: Batch, norms: LossNorms, opts: MicrobatchOpts): MicrobatchResult {
  const { value, grads, scalars } = runTape(c, store, layout, mb, norms, opts);
  // A caller's buffer (zeroed here) saves a fresh 4·params-byte allocation per microbatch, whose
  // first touch page-faults every page.
  const grad = opts.gradOut?.length === layout.total ? opts.gradOut.fill(0) : new Float32Array(layout.total);
  const parts = layout.specs.flatMap((s) => (grads[store.get(s.name).name] ? [{ t: grads[store.get(s.name).name], offset: layout.offsets.get(s.name)! }] : []));
  if (!readAllInto(parts, grad)) for (const p of parts) readInto(p.t, grad, p.offset);
  tf.dispose(value);
  tf.dispose(grads);
  return { grad, ...scalars };
}

/**
 * As microbatchGrad, with the flat gradient left on the device (GPU-resident training): one
 * exact concatenation of the parameter gradients in spec order, zeros where a parameter got
 * none (an expert without tokens). Only the scalars and routing ids come back to the host.
 */
export function microbatchGradOnDevice(c: ModelConfig, store: ParamStore, layout: FlatLayout, mb: Batch, norms: LossNorms, opts: MicrobatchOpts): Scalars & { grad: tf.Tensor1D } {
  const { value, grads, scalars } = runTape(c, store, layout, mb, norms, opts);
  const grad = tf.tidy(() =>
    tf.concat(
      layout.specs.map((s) => {
        const g = grads[store.get(s.name).name];
        return g ? tf.reshape(g, [-1]) : tf.zeros([s.shape.reduce((a, b) => a * b, 1)]);
      }),
      0,
    ),
  ) as tf.Tensor1D;
  tf.dispose(value);
  tf.dispose(grads);
  return { grad, ...scalars };
}
