/**
 * GPU-resident optimizer state for the trainer on webgpu (issue 21 items 4 and 6). The weights
 * live in the ParamStore's variables, the Adam moments in two flat device tensors, and each
 * microbatch's gradient stays a flat device tensor summed in the canonical microbatch tree on the
 * device. Per step the host receives only the loss scalars, routing ids, the gradient's block
 * sums of squares (NORM_BLOCK elements each: the global norm and per-group RMS, combined in
 * float64 here in block order) and the router similarity partials. AdamW runs as WGSL kernels
 * (core/webgpu/optimizer.ts) in trainer/adamw.ts's formula and order.
 *
 * The host copies in TrainerState (params, opt.m, opt.v) are brought up to date only when asked
 * (param_hash, checkpoints, snapshots); resume and restore upload them. Data parallel (W > 1)
 * needs the gradient on the host for the ranks' exchange: only then the local subtree is read
 * back, summed across ranks as on the CPU path, and uploaded again.
 *
 * A spike snapshot is a device-side clone: tfjs tensors are immutable (every kernel here writes a
 * new buffer, a variable's assign swaps buffers), so holding references to the current weight,
 * moment buffers and the host scalars is a bitwise copy; restoring assigns them back.
 */
import * as tf from '@tensorflow/tfjs';
import { webgpuAdapter } from '../core/webgpu';
import { FlatLayout, views } from '../model/flatParams';
import { ParamStore, ParamGroup } from '../model/params';
import { adamwMomentsOnDevice, adamwParamOnDevice, blockSquareSumsOnDevice, normBlocks, routerSimilarityOnDevice } from '../core/webgpu/optimizer';
import { AdamWConfig, AdamWState, ParamSlice } from './adamw';
import { paramGroups, groupRms } from './stability';
import { PairwiseTree } from './treeSum';

/** A device-side copy of the weights and moments (shared immutable buffers). */
export interface DeviceSnapshot {
  params: tf.Tensor[];
  m: tf.Tensor;
  v: tf.Tensor;
}

const decayOf = (group: ParamGroup, weightDecay: number): number => (group === 'norm' || group === 'embedding' ? 0 : weightDecay);

/**
 * Why the resident path cannot run here, or null: it needs the webgpu backend, an unsharded
 * optimizer, and a flat gradient/moment buffer within the adapter's storage-binding limit.
 */
export function residentRefusal(total: number, shard: string): string | null {
  if (tf.getBackend() !== 'webgpu') return `it needs the webgpu backend (backend here: ${tf.getBackend()})`;
  if (shard !== 'none') return `it needs parallel.shard: none (here: ${shard})`;
  const limit = webgpuAdapter()?.limits.maxStorageBufferBindingSize ?? Infinity;
  if (total * 4 > limit) return `the flat gradient (${(total * 4 / 2 ** 20).toFixed(0)} MiB) exceeds the adapter's storage binding limit (${(limit / 2 ** 20).toFixed(0)} MiB)`;
  return null;
}

export class DeviceState {
  private m: tf.Tensor1D;
  private v: tf.Tensor1D;
  private readonly blockStart: tf.Tensor1D;
  private readonly blockLen: tf.Tensor1D;
  private readonly blockGroup: Int32Array;
  private readonly groups: ReturnType<typeof paramGroups>;
  /** Whether the host arrays hold the device's current weights / moments. */
  private hostParams = true;
  private hostMoments = true;

  constructor(
    private readonly layout: FlatLayout,
    private readonly store: ParamStore,
    private readonly slices: ParamSlice[],
    opt: AdamWState,
  ) {
    // Copies: tfjs keeps a host array by reference until its first upload.
    this.m = tf.tensor1d(opt.m.slice());
    this.v = tf.tensor1d(opt.v.slice());
    const blocks = normBlocks(slices);
    this.blockStart = tf.tensor1d(blocks.start, 'int32');
    this.blockLen = tf.tensor1d(blocks.len, 'int32');
    this.groups = paramGroups(slices);
    this.blockGroup = Int32Array.from(blocks.slice, (k) => this.groups.groups.indexOf(slices[k].group));
  }

  /** A fresh accumulator for the microbatch tree: device adds, left operand the lower indices. */
  tree(): PairwiseTree<tf.Tensor> {
    return new PairwiseTree<tf.Tensor>(
      (t) => t.dispose(),
      (a, b) => tf.add(a, b),
    );
  }

  /**
   * Σ g² over the whole gradient and per group, from the device's block partials (one read of
   * blocks·4 bytes) combined in float64 in block order. `scale` multiplies the group sums by
   * scale² (the clip factor, as gradRmsByGroup sees the clipped gradient).
   */
  squares(grad: tf.Tensor): { norm: number; groupRms: (scale: number) => Partial<Record<ParamGroup, number>> } {
    const t = blockSquareSumsOnDevice(grad, this.blockStart, this.blockLen);
    let partials: Float32Array;
    try {
      partials = t.dataSync() as Float32Array;
    } finally {
      t.dispose();
    }
    let total = 0;
    const sums = new Float64Array(this.groups.groups.length);
    for (let b = 0; b < partials.length; b++) {
      total += partials[b];
      sums[this.blockGroup[b]] += partials[b];
    }
    return { norm: Math.sqrt(total), groupRms: (scale) => groupRms(this.groups, sums.map((s) => s * scale * scale)) };
  }

  /** One AdamW update on the device: moments, then each parameter, as trainer/adamw.ts. */
  adamw(grad: tf.Tensor, state: AdamWState, lr: number, cfg: AdamWConfig, lrScale: Partial<Record<ParamGroup, number>>, gradScale: number): void {
    state.t += 1;
    const c1 = 1 - Math.pow(cfg.beta1, state.t);
    const c2 = 1 - Math.pow(cfg.beta2, state.t);
    const [m, v] = adamwMomentsOnDevice(grad, this.m, this.v, { beta1: cfg.beta1, beta2: cfg.beta2, scale: gradScale });
    this.m.dispose();
    this.v.dispose();
    this.m = m as tf.Tensor1D;
    this.v = v as tf.Tensor1D;
    this.layout.specs.forEach((s, k) => {
      const sl = this.slices[k];
      const variable = this.store.get(s.name);
      const next = adamwParamOnDevice(variable, m, v, { offset: sl.offset, lr: lr * (lrScale[sl.group] ?? 1), wd: decayOf(sl.group, cfg.weightDecay), c1, c2, eps: cfg.eps });
      variable.assign(next);
      next.dispose();
    });
    this.hostParams = false;
    this.hostMoments = false;
  }

  /** Mean pairwise cosine similarity of each layer's router columns, computed on the device. */
  routerSimilarity(names: string[]): number[] {
    if (names.length === 0) return [];
    const flat = tf.tidy(() => tf.concat(names.map((n) => routerSimilarityOnDevice(this.store.get(n))), 0));
    let partials: Float32Array;
    try {
      partials = flat.dataSync() as Float32Array;
    } finally {
      flat.dispose();
    }
    const E = partials.length / names.length;
    const pairs = (E * (E - 1)) / 2;
    return names.map((_, l) => {
      let s = 0;
      for (let e = 0; e < E; e++) s += partials[l * E + e];
      return pairs ? s / pairs : 0;
    });
  }

  /** The gradient as a host array (data parallel over ws: the only full read of a step). */
  download(grad: tf.Tensor): Float32Array {
    return Float32Array.from(grad.dataSync() as Float32Array);
  }

  upload(grad: Float32Array): tf.Tensor1D {
    return tf.tensor1d(grad.slice());
  }

  /** Brings the host weights up to date (one read of all variables). */
  syncParams(params: Float32Array): void {
    if (this.hostParams) return;
    const flat = tf.tidy(() => tf.concat(this.layout.specs.map((s) => tf.reshape(this.store.get(s.name), [-1])), 0));
    try {
      params.set(flat.dataSync() as Float32Array);
    } finally {
      flat.dispose();
    }
    this.hostParams = true;
  }

  /** Brings the host moments up to date. */
  syncMoments(opt: AdamWState): void {
    if (this.hostMoments) return;
    opt.m.set(this.m.dataSync() as Float32Array);
    opt.v.set(this.v.dataSync() as Float32Array);
    this.hostMoments = true;
  }

  /** Uploads host weights and moments (resume, restoreState). */
  load(params: Float32Array, opt: AdamWState): void {
    // Copies, as for the moments: the host mirror is written again by syncParams().
    const copies = new Map([...views(this.layout, params)].map(([name, v]) => [name, v.slice()]));
    this.store.assign(copies);
    this.m.dispose();
    this.v.dispose();
    this.m = tf.tensor1d(opt.m.slice());
    this.v = tf.tensor1d(opt.v.slice());
    this.hostParams = true;
    this.hostMoments = true;
  }

  /** A device-side snapshot of the weights and moments: no bytes move. */
  snapshot(): DeviceSnapshot {
    return { params: this.layout.specs.map((s) => tf.clone(this.store.get(s.name))), m: tf.clone(this.m), v: tf.clone(this.v) };
  }

  /** Restores a snapshot (which stays valid for another restore). */
  restore(s: DeviceSnapshot): void {
    this.layout.specs.forEach((spec, k) => this.store.get(spec.name).assign(s.params[k]));
    this.m.dispose();
    this.v.dispose();
    this.m = tf.clone(s.m) as tf.Tensor1D;
    this.v = tf.clone(s.v) as tf.Tensor1D;
    this.hostParams = false;
    this.hostMoments = false;
  }

  static disposeSnapshot(s: DeviceSnapshot | null): void {
    if (s) tf.dispose([...s.params, s.m, s.v]);
  }

  dispose(): void {
    tf.dispose([this.m, this.v, this.blockStart, this.blockLen]);
  }
}
