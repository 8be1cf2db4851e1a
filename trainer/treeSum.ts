/**
 * Streaming canonical pairwise sum of per-microbatch gradients (DESIGN.md section 4).
 * The tree over microbatch indices [0, M): a node over n > 1 leaves splits into a left subtree
 * of p leaves (p = the largest power of two < n) and a right subtree of n − p leaves. Feeding
 * leaves in index order into a binary-counter stack (merge equal-sized neighbours) builds
 * exactly that tree while holding only O(log M) partial sums. Adds are float32 (Float32Array
 * stores), left operand always the lower indices: the same bits whoever computes which leaves.
 * The recursive form of the same tree is parallel/tree.canonicalTreeSum (the specs compare them).
 */
import { combineInto } from '../parallel/tree';

export class TreeAccumulator {
  private stack: { size: number; data: Float32Array }[] = [];
  private count = 0;

  /** `release` receives each right operand once it has been added in (its buffer may be reused). */
  constructor(private readonly release: (buf: Float32Array) => void = () => {}) {}

  push(leaf: Float32Array): void {
    let node = { size: 1, data: leaf };
    this.count++;
    // Merge while the top of the stack holds a subtree of the same size (binary carry).
    while (this.stack.length > 0 && this.stack[this.stack.length - 1].size === node.size) {
      const left = this.stack.pop()!;
      combineInto(left.data, node.data);
      this.release(node.data);
      node = { size: left.size * 2, data: left.data };
    }
    this.stack.push(node);
  }

  /** Folds the remaining stack right-to-left (smaller right subtrees first), as the tree says. */
  result(): Float32Array {
    if (this.stack.length === 0) throw new Error('TreeAccumulator: no leaves');
    let acc = this.stack[this.stack.length - 1].data;
    for (let i = this.stack.length - 2; i >= 0; i--) {
      const left = this.stack[i].data;
      combineInto(left, acc);
      this.release(acc);
      acc = left;
    }
    return acc;
  }

  get leaves(): number {
    return this.count;
  }
}
