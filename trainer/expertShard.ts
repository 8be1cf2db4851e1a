/**
 * Expert-sharded training state under expert parallelism (docs/ARCHITECTURE.md, "Expert
 * parallelism"). FFN expert e lives on rank owner(e) = floor(e / (N/W)) (parallel/expertParallel),
 * and with `parallel.shard: none` that rank is the only one to hold its weights, gradients and
 * Adam moments. Zero experts have no parameters, so they cost nothing anywhere.
 *
 * Rank r's flat vector (`held`) is the replicated parameters in the global spec order, then its
 * own experts' parameters in the global spec order. Only the replicated prefix goes through the
 * data-parallel gradient all-reduce; an owner's expert gradient is already the sum over every
 * source rank (the expert-parallel backward), and the replicated layout's all-reduce added the
 * non-owners' zeros to it, so the owner adds +0 (x + 0 = x, -0 + 0 = +0: the same bits).
 *
 * The gradient norm and per-group RMS are float64 loops over the global vector in spec order.
 * The global order visits, per MoE layer, replicated parameters, then the experts of rank 0,
 * 1, ..., W-1; the loop is continued across ranks in `passes`: each pass is one
 * DataParallel.chain (rank order), and the replicated runs go to whichever rank holds the
 * accumulator at that point. One pass per MoE layer, so the scalars keep their bits.
 *
 * Checkpoints and param_hash need the whole model: `gatherToRoot` sends every rank's expert
 * part to rank 0 (an all-to-all in which only rank 0 receives), which assembles the global
 * vector; no other rank ever holds more than its own experts.
 */
import { TrainingError } from '../core/errors';
import { flatLayout, FlatLayout } from '../model/flatParams';
import { numel, ParamGroup, ParamSpec } from '../model/params';
import { expertOwner } from '../parallel/expertParallel';
import { ParamSlice } from './adamw';
import { DataParallel } from './dataParallel';
import { addGroupSquares, addSquares, groupRms, paramGroups } from './stability';

export interface ExpertShard {
  rank: number;
  worldSize: number;
  /** This rank's flat layout: replicated parameters, then its own experts' (both in spec order). */
  held: FlatLayout;
  /** Elements [0, replicated) of `held` are replicated on every rank. */
  replicated: number;
  /** Per chain pass, per rank: the held slices that rank adds to the accumulator, in global order. */
  passes: ParamSlice[][][];
  /** Owner rank of each global spec (-1: replicated), in global spec order. */
  owners: number[];
}

/** The expert shard of rank `dp.rank` for the global layout of a model with `nExperts` FFN experts. */
export function expertShardOf(global: FlatLayout, nExperts: number, dp: Pick<DataParallel, 'rank' | 'worldSize'>): ExpertShard {
  const W = dp.worldSize;
  if (nExperts % W !== 0) {
    throw new TrainingError(`expert parallelism needs the FFN expert count (${nExperts}) divisible by the world size (${W})`, { hint: 'choose a world size among the divisors of model.moe.nExperts' });
  }
  const owners = global.specs.map((s) => (s.expert ? expertOwner(s.expert.index, nExperts, W) : -1));
  const rep = global.specs.filter((_, i) => owners[i] === -1);
  const mine = global.specs.filter((_, i) => owners[i] === dp.rank);
  const held = flatLayout([...rep, ...mine]);
  const replicated = rep.reduce((n, s) => n + numel(s.shape), 0);
  const passes: ParamSlice[][][] = [];
  let pass: ParamSlice[][] | null = null;
  let at = W; // rank holding the accumulator in the current pass (W: no pass open)
  global.specs.forEach((s, i) => {
    const o = owners[i];
    if (o >= 0 && o < at && at !== W) pass = null;
    if (!pass) {
      pass = Array.from({ length: W }, () => []);
      passes.push(pass);
      at = 0;
    }
    if (o >= 0) at = o;
    // Every rank holds the replicated runs; the rank holding the accumulator adds them.
    if (at === dp.rank) pass[at].push({ offset: held.offsets.get(s.name)!, size: numel(s.shape), group: s.group });
  });
  return { rank: dp.rank, worldSize: W, held, replicated, passes, owners };
}

/** Rank r's held vector taken from a global one (a checkpoint's weights or moments). */
export function heldFromGlobal(sh: ExpertShard, global: FlatLayout, flat: Float32Array): Float32Array {
  if (flat.length === sh.held.total) return flat;
  if (flat.length !== global.total) throw new TrainingError(`a state vector has ${flat.length} elements; expected ${global.total} (all experts) or ${sh.held.total} (rank ${sh.rank}'s experts)`, { hint: 'resume from a checkpoint of this model' });
  const out = new Float32Array(sh.held.total);
  for (const s of sh.held.specs) {
    const g = global.offsets.get(s.name)!;
    out.set(flat.subarray(g, g + numel(s.shape)), sh.held.offsets.get(s.name)!);
  }
  return out;
}

/**
 * The global vector on rank 0 (null elsewhere): replicated parameters from rank 0's own copy,
 * every expert from its owner. Every rank must call it.
 */
export async function gatherToRoot(dp: DataParallel, sh: ExpertShard, global: FlatLayout, held: Float32Array): Promise<Float32Array | null> {
  const W = sh.worldSize;
  const empty = new Float32Array(0);
  const part = held.subarray(sh.replicated);
  const recv = await dp.allToAll(Array.from({ length: W }, (_, r) => (r === 0 && sh.rank !== 0 ? part : empty)));
  if (sh.rank !== 0) return null;
  recv[0] = part;
  const out = new Float32Array(global.total);
  const at = new Array<number>(W).fill(0);
  global.specs.forEach((s: ParamSpec, i) => {
    const n = numel(s.shape);
    const o = sh.owners[i];
    const dst = global.offsets.get(s.name)!;
    if (o < 0) {
      const src = sh.held.offsets.get(s.name)!;
      out.set(held.subarray(src, src + n), dst);
      return;
    }
    if (at[o] + n > recv[o].length) throw new TrainingError(`rank ${o} sent ${recv[o].length} expert values; its experts need more`, { hint: 'every rank must run the same model and world size' });
    out.set(recv[o].subarray(at[o], at[o] + n), dst);
    at[o] += n;
  });
  return out;
}

/** Runs `add` over this rank's slices of every pass, continuing one accumulator across ranks. */
async function chainPasses(dp: DataParallel, sh: ExpertShard, init: Float64Array, add: (acc: Float64Array, slices: ParamSlice[]) => Float64Array): Promise<Float64Array> {
  let acc = init;
  for (const pass of sh.passes) acc = await dp.chain(acc, (a) => add(a, pass[sh.rank]));
  return acc;
}

/** The global gradient norm (the float64 loop over the global vector, in its order). */
export async function expertChainedGradNorm(dp: DataParallel, sh: ExpertShard, grad: Float32Array): Promise<number> {
  const r = await chainPasses(dp, sh, new Float64Array(1), (acc, slices) => {
    for (const s of slices) acc[0] = addSquares(acc[0], grad.subarray(s.offset, s.offset + s.size));
    return acc;
  });
  return Math.sqrt(r[0]);
}

/** Per-group gradient RMS as stability.gradRmsByGroup over the global vector. */
export async function expertChainedGradRms(dp: DataParallel, sh: ExpertShard, grad: Float32Array, globalSlices: ParamSlice[], scale: number): Promise<Partial<Record<ParamGroup, number>>> {
  const g = paramGroups(globalSlices);
  const sums = await chainPasses(dp, sh, new Float64Array(g.groups.length), (acc, slices) => addGroupSquares(acc, grad, slices, g.groups, scale));
  return groupRms(g, sums);
}

/**
 * The step's gradient from this rank's local subtree sum: the replicated prefix all-reduced in
 * the canonical tree, the expert part + 0 (see the file comment). Works in place on `local`.
 */
export async function reduceExpertSharded(dp: DataParallel, sh: ExpertShard, local: Float32Array, first: number, count: number, total: number): Promise<Float32Array> {
  const rep = await dp.treeAllReduceSubtree(local.subarray(0, sh.replicated), first, count, total);
  local.set(rep, 0);
  for (let i = sh.replicated; i < local.length; i++) local[i] += 0;
  return local;
}

/** Rank 0's sha256 hex digest on every rank (32 bytes through an exact all-reduce). */
export async function hashToAll(dp: DataParallel, hex: string | null): Promise<string> {
  const bytes = new Float64Array(32);
  if (dp.rank === 0) {
    if (!hex || !/^[0-9a-f]{64}$/.test(hex)) throw new TrainingError('hashToAll: rank 0 has no sha256 digest to share');
    for (let i = 0; i < 32; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  }
  const all = await dp.allReduceExact(bytes);
  return Array.from(all, (b) => b.toString(16).padStart(2, '0')).join('');
}
