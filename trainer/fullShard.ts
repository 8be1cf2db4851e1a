/**
 * `parallel.shard: full` (docs/ARCHITECTURE.md, "Sharded training state"): rank r persistently
 * holds only elements shardRange(n, W, r) of the flat weights, as it does of the Adam moments
 * under `optimizer`. The model is cut into units — the embedding, each layer, the head (final
 * norm + lm_head) — that are contiguous ranges of the flat spec-order layout; a unit's weights
 * are all-gathered from the ranks whose shards overlap it just before use and dropped after
 * (trainer/fullShardStep.ts runs the step unit by unit). This file holds the sharded weights:
 * their initialisation without the full vector, unit and range gathers, the param_hash streamed
 * one parameter at a time, and the gathered copy a checkpoint writer needs.
 */
import { createHash } from 'crypto';
import * as tf from '@tensorflow/tfjs';
import { bytesOf } from '../core/hash';
import { TrainingError } from '../core/errors';
import { ModelConfig } from '../model/config';
import { FlatLayout } from '../model/flatParams';
import { InitScales, initParam, numel, ParamSpec } from '../model/params';
import { shardRange } from '../parallel/tree';
import { DataParallel } from './dataParallel';
import { Shard } from './shardedOptimizer';

/** A contiguous range [lo, hi) of the flat layout gathered as one piece. */
export interface Unit {
  name: string;
  lo: number;
  hi: number;
  specs: ParamSpec[];
}

function unitKey(name: string): string {
  if (name === 'model.embed_tokens.weight') return 'embed';
  const m = /^model\.layers\.(\d+)\./.exec(name);
  return m ? `layer.${m[1]}` : 'head';
}

/** The model's units in layout order: embed, layer.0 .. layer.{L-1}, head. */
export function paramUnits(layout: FlatLayout): Unit[] {
  const out: Unit[] = [];
  for (const s of layout.specs) {
    const key = unitKey(s.name);
    const lo = layout.offsets.get(s.name)!;
    const last = out[out.length - 1];
    if (last && last.name === key) {
      last.hi = lo + numel(s.shape);
      last.specs.push(s);
      continue;
    }
    if (out.some((u) => u.name === key)) throw new TrainingError(`parallel.shard: full: the parameters of ${key} are not contiguous in the layout (${s.name})`);
    out.push({ name: key, lo, hi: lo + numel(s.shape), specs: [s] });
  }
  return out;
}

/** This rank's shard of the initial weights: each overlapping parameter drawn from its own stream, the rest never built. */
export function initParamShard(c: ModelConfig, layout: FlatLayout, shard: Shard, seed: number, scales: InitScales): Float32Array {
  const out = new Float32Array(shard.hi - shard.lo);
  for (const s of layout.specs) {
    const o = layout.offsets.get(s.name)!;
    const a = Math.max(o, shard.lo);
    const b = Math.min(o + numel(s.shape), shard.hi);
    if (b <= a) continue;
    out.set(initParam(c, s, seed, scales).subarray(a - o, b - o), a - shard.lo);
  }
  return out;
}

export interface GatherStats {
  /** Peak bytes of one gathered unit: its host copy plus its tensors (counted as a second copy). */
  peakBytes: number;
}

export class ShardedParams {
  readonly stats: GatherStats = { peakBytes: 0 };

  constructor(
    readonly layout: FlatLayout,
    readonly dp: DataParallel,
    readonly shard: Shard,
    /** The current shard (the trainer swaps state objects on restore, so this reads through). */
    private readonly local: () => Float32Array,
  ) {}

  /** Elements [a, b) of the full weights: every rank contributes its overlap, in rank order. */
  async gather(a: number, b: number): Promise<Float32Array> {
    const { lo, hi } = this.shard;
    const s = Math.max(a, lo);
    const e = Math.min(b, hi);
    const mine = e > s ? this.local().subarray(s - lo, e - lo) : new Float32Array(0);
    const all = await this.dp.allGather(mine);
    if (all.length !== b - a) throw new TrainingError(`parallel.shard: full: gathering [${a}, ${b}) gave ${all.length} elements`);
    return all;
  }

  /** Per rank, its part of [a, b) (relative to a): the split of a reduce-scatter onto the global shards. */
  split(a: number, b: number): [number, number][] {
    const W = this.dp.worldSize;
    return Array.from({ length: W }, (_, r) => {
      const [lo, hi] = shardRange(this.layout.total, W, r);
      const s = Math.min(Math.max(lo, a), b);
      const e = Math.min(Math.max(hi, a), b);
      return [s - a, e - a] as [number, number];
    });
  }

  /**
   * A unit's weights as tensors for `fn`, disposed when it returns (the gathered host copy is
   * dropped with them). The getter refuses names outside the unit.
   */
  async withUnit<T>(u: Unit, fn: (P: (name: string) => tf.Tensor, tensors: tf.Tensor[]) => T): Promise<T> {
    const flat = await this.gather(u.lo, u.hi);
    const byName = new Map<string, tf.Tensor>();
    const tensors = u.specs.map((s) => {
      const o = this.layout.offsets.get(s.name)! - u.lo;
      const t = tf.tensor(flat.subarray(o, o + numel(s.shape)), s.shape, 'float32');
      byName.set(s.name, t);
      return t;
    });
    this.stats.peakBytes = Math.max(this.stats.peakBytes, 2 * flat.byteLength);
    try {
      return fn((name) => {
        const t = byName.get(name);
        if (!t) throw new TrainingError(`parallel.shard: full: ${name} is not in the gathered unit ${u.name}`);
        return t;
      }, tensors);
    } finally {
      tf.dispose(tensors);
    }
  }

  /**
   * sha256 over all weights in sorted-name order (model/params.paramHash's bytes), gathering
   * one parameter at a time: every rank calls it and gets the hash.
   */
  async paramHash(): Promise<string> {
    const h = createHash('sha256');
    const specs = new Map(this.layout.specs.map((s) => [s.name, s]));
    for (const name of [...specs.keys()].sort()) {
      const s = specs.get(name)!;
      const o = this.layout.offsets.get(name)!;
      const data = await this.gather(o, o + numel(s.shape));
      h.update(`${name}:${s.shape.join('x')};`);
      h.update(bytesOf(data));
    }
    return h.digest('hex');
  }

  /**
   * The full weights on ranks with `keep` (a checkpoint writer), gathered unit by unit; the
   * others see each unit once and drop it. Every rank must call it.
   */
  async gatherAll(units: Unit[], keep: boolean): Promise<Float32Array | null> {
    const out = keep ? new Float32Array(this.layout.total) : null;
    for (const u of units) {
      const part = await this.gather(u.lo, u.hi);
      out?.set(part, u.lo);
    }
    return out;
  }
}
