/**
 * The canonical pairwise reduction tree (DESIGN.md section 4) and the element-wise ops used by
 * the collectives.
 *
 * Tree over leaf indices [lo, hi), n = hi - lo:
 *   n = 1:  the leaf itself;
 *   n > 1:  sum(lo, hi) = sum(lo, lo + p) + sum(lo + p, hi),  p = the largest power of two < n,
 * the left operand always holding the lower indices. Adds are float32 for Float32Array (every
 * intermediate is stored to a Float32Array, i.e. rounded like Math.fround). For n a power of two
 * this is the perfectly balanced tree, so rank-local subtrees over aligned power-of-two blocks
 * are nodes of it. It is the same tree as trainer/treeSum.ts builds by streaming; this is the one
 * recursive reference of it.
 */
import { ParallelError } from '../core/errors';
import { NumArray } from './frames';

export type ReduceOp = 'sum' | 'max' | 'min';

/** left[i] = left[i] op right[i], stored in left's element type. */
export function combineInto<T extends NumArray>(left: T, right: T, op: ReduceOp = 'sum'): void {
  const n = left.length;
  if (op === 'sum') for (let i = 0; i < n; i++) left[i] += right[i];
  else if (op === 'max') for (let i = 0; i < n; i++) left[i] = Math.max(left[i], right[i]);
  else for (let i = 0; i < n; i++) left[i] = Math.min(left[i], right[i]);
}

export function copyOf<T extends NumArray>(a: T): T {
  return a.slice() as T;
}

/** Split point of the canonical tree over n > 1 leaves: the largest power of two < n. */
export function leftSize(n: number): number {
  let p = 1;
  while (p * 2 < n) p *= 2;
  return p;
}

/** Canonical pairwise tree reduction of `parts` (all the same length); inputs are not modified. */
export function canonicalTreeSum<T extends NumArray>(parts: T[], op: ReduceOp = 'sum'): T {
  if (parts.length === 0) throw new ParallelError('canonicalTreeSum: no parts');
  const len = parts[0].length;
  for (const [i, p] of parts.entries()) {
    if (p.length !== len) throw new ParallelError(`canonicalTreeSum: part ${i} has ${p.length} elements, part 0 has ${len}`);
  }
  const rec = (lo: number, hi: number): T => {
    if (hi - lo === 1) return copyOf(parts[lo]);
    const mid = lo + leftSize(hi - lo);
    const left = rec(lo, mid);
    combineInto(left, rec(mid, hi), op);
    return left;
  };
  return rec(0, parts.length);
}

export interface TreeNode {
  lo: number;
  hi: number;
}

/**
 * The maximal nodes of the canonical tree over [0, total) that lie inside [first, end): the
 * pieces a rank holding that block can sum on its own. An aligned power-of-two block is one node.
 */
export function blockNodes(first: number, end: number, total: number): TreeNode[] {
  if (!(Number.isInteger(first) && Number.isInteger(end) && 0 <= first && first <= end && end <= total)) {
    throw new ParallelError(`microbatch block [${first}, ${end}) is not inside [0, ${total})`);
  }
  const out: TreeNode[] = [];
  const rec = (lo: number, hi: number): void => {
    if (hi <= first || lo >= end) return;
    if (first <= lo && hi <= end) {
      out.push({ lo, hi });
      return;
    }
    const mid = lo + leftSize(hi - lo);
    rec(lo, mid);
    rec(mid, hi);
  };
  if (total > 0 && end > first) rec(0, total);
  return out;
}

/** Sum of a contiguous range of leaves as the canonical subtree over it (a node's value). */
export function nodeSum<T extends NumArray>(leaves: T[], op: ReduceOp = 'sum'): T {
  return canonicalTreeSum(leaves, op);
}

/**
 * Evaluates the canonical tree over [0, total) from precomputed node values (keyed "lo:hi")
 * that together cover every leaf exactly once.
 */
export function treeFromNodes<T extends NumArray>(values: Map<string, T>, total: number, op: ReduceOp = 'sum'): T {
  const rec = (lo: number, hi: number): T => {
    const v = values.get(`${lo}:${hi}`);
    if (v) return v;
    if (hi - lo === 1) throw new ParallelError(`canonical tree: no rank supplied microbatch ${lo}`);
    const mid = lo + leftSize(hi - lo);
    const left = copyOfIfShared(rec(lo, mid), values, lo, mid);
    combineInto(left, rec(mid, hi), op);
    return left;
  };
  return rec(0, total);
}

/** Node values are owned by the map; copy before writing into one so inputs stay intact. */
function copyOfIfShared<T extends NumArray>(v: T, values: Map<string, T>, lo: number, hi: number): T {
  return values.get(`${lo}:${hi}`) === v ? copyOf(v) : v;
}

/** The [start, end) element range of shard `r` when n elements are split over W ranks (balanced, lower ranks take the remainder). */
export function shardRange(n: number, W: number, r: number): [number, number] {
  const base = Math.floor(n / W);
  const extra = n % W;
  const start = r * base + Math.min(r, extra);
  return [start, start + base + (r < extra ? 1 : 0)];
}
