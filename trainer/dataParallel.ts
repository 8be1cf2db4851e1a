/**
 * What the trainer needs from a data-parallel group. `parallel/` implements it over ws; the
 * single-process case is the identity. Reductions of counts are exact (integers in float64),
 * and the gradient reduction reproduces the canonical microbatch tree bit for bit.
 */
export interface DataParallel {
  rank: number;
  worldSize: number;
  /** Element-wise sum across ranks of exact values (counts, one-hot-placed scalars). */
  allReduceExact(x: Float64Array): Promise<Float64Array>;
  /**
   * Canonical tree sum across ranks: this rank holds the subtree sum over microbatches
   * [first, first + count) of `total`; every rank receives the full tree's sum.
   */
  treeAllReduceSubtree(localSubtree: Float32Array, first: number, count: number, total: number): Promise<Float32Array>;
  /**
   * As treeAllReduceSubtree, but this rank receives only its shard of the sum, elements
   * shardRange(n, worldSize, rank) (parallel/tree.ts): `parallel.shard: optimizer`; with
   * `split`, elements split[rank] (ranges tiling [0, n) in rank order): `parallel.shard: full`.
   */
  treeReduceScatterSubtree(localSubtree: Float32Array, first: number, count: number, total: number, split?: [number, number][]): Promise<Float32Array>;
  /** Concatenation of every rank's buffer in rank order. */
  allGather(x: Float32Array): Promise<Float32Array>;
  /** parts[j] goes to rank j; returns what each rank sent here, by rank (any sizes). */
  allToAll(parts: Float32Array[]): Promise<Float32Array[]>;
  /** Sequential fold in rank order (rank 0 first); every rank gets the last rank's result. */
  chain(init: Float64Array, step: (acc: Float64Array) => Float64Array): Promise<Float64Array>;
}

export const singleProcess: DataParallel = {
  rank: 0,
  worldSize: 1,
  allReduceExact: async (x) => x,
  treeAllReduceSubtree: async (x) => x,
  treeReduceScatterSubtree: async (x, _first, _count, _total, split) => (split ? x.slice(split[0][0], split[0][1]) : x),
  allGather: async (x) => Float32Array.from(x),
  allToAll: async (parts) => [Float32Array.from(parts[0])],
  chain: async (init, step) => step(Float64Array.from(init)),
};

/** The contiguous block of microbatches a rank computes (world size must divide M). */
export function localMicrobatches(rank: number, worldSize: number, M: number): { first: number; count: number } {
  const count = M / worldSize;
  return { first: rank * count, count };
}
