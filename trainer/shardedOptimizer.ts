/**
 * `parallel.shard: optimizer` (docs/ARCHITECTURE.md, "Sharded training state"): rank r owns
 * elements shardRange(n, W, r) of the flat parameter vector. It receives only that shard of
 * the reduced gradient (the canonical tree's bits, element for element), keeps only that shard
 * of the Adam moments, updates only that shard of the weights and all-gathers the result.
 * The scalars the step needs from the whole gradient (global norm, per-group RMS) are float64
 * loops; they are continued across shards in rank order (DataParallel.chain), so they are the
 * same bits as the single loop over the full vector.
 */
import { TrainingError } from '../core/errors';
import { ParamGroup } from '../model/params';
import { shardRange } from '../parallel/tree';
import { AdamWState, ParamSlice } from './adamw';
import { DataParallel } from './dataParallel';
import { addGroupSquares, addSquares, groupRms, paramGroups } from './stability';

export type ShardMode = 'none' | 'optimizer' | 'full';

export interface Shard {
  /** Elements [lo, hi) of the flat vector belong to this rank. */
  lo: number;
  hi: number;
}

export function shardOf(total: number, dp: Pick<DataParallel, 'rank' | 'worldSize'>): Shard {
  const [lo, hi] = shardRange(total, dp.worldSize, dp.rank);
  return { lo, hi };
}

/** The parameter slices restricted to [lo, hi), offsets rebased to lo (spec order kept). */
export function slicesInShard(slices: ParamSlice[], s: Shard): ParamSlice[] {
  const out: ParamSlice[] = [];
  for (const sl of slices) {
    const a = Math.max(sl.offset, s.lo);
    const b = Math.min(sl.offset + sl.size, s.hi);
    if (b > a) out.push({ offset: a - s.lo, size: b - a, group: sl.group });
  }
  return out;
}

/** This rank's shard of full-length Adam moments (copies); already-sharded state is kept. */
export function shardAdamState(opt: AdamWState, total: number, s: Shard): AdamWState {
  if (opt.m.length === s.hi - s.lo && opt.v.length === s.hi - s.lo) return opt;
  if (opt.m.length !== total || opt.v.length !== total) {
    throw new TrainingError(`optimizer state has ${opt.m.length} elements; expected ${total} (full) or ${s.hi - s.lo} (this rank's shard [${s.lo}, ${s.hi}))`, {
      hint: 'resume from a checkpoint of this model',
    });
  }
  return { t: opt.t, m: opt.m.slice(s.lo, s.hi), v: opt.v.slice(s.lo, s.hi) };
}

/** Global gradient norm: the float64 sum of squares continued across the ranks' shards. */
export async function chainedGradNorm(dp: DataParallel, gradShard: Float32Array): Promise<number> {
  const r = await dp.chain(new Float64Array(1), (acc) => {
    acc[0] = addSquares(acc[0], gradShard);
    return acc;
  });
  return Math.sqrt(r[0]);
}

/**
 * Per-group gradient RMS (as stability.gradRmsByGroup over the full vector): one float64
 * accumulator per group, continued across shards; groups keyed in order of first appearance.
 */
export async function chainedGradRmsByGroup(dp: DataParallel, gradShard: Float32Array, allSlices: ParamSlice[], local: ParamSlice[], scale: number): Promise<Partial<Record<ParamGroup, number>>> {
  const g = paramGroups(allSlices);
  const sums = await dp.chain(new Float64Array(g.groups.length), (acc) => addGroupSquares(acc, gradShard, local, g.groups, scale));
  return groupRms(g, sums);
}
