/**
 * Streaming canonical pairwise sum of per-microbatch gradients (DESIGN.md section 4).
 * The tree over microbatch indices [0, M): a node over n > 1 leaves splits into a left subtree
 * of p leaves (p = the largest power of two < n) and a right subtree of n − p leaves. Feeding
 * leaves in index order into a binary-counter stack (merge equal-sized neighbours) builds
 * exactly that tree while holding only O(log M) partial sums. Adds are float32 (Float32Array
 * stores), left operand always the lower indices: the same bits whoever computes which leaves.
 * The recursive form of the same tree is parallel/tree.canonicalTreeSum (the specs compare them).
 * The leaves are host arrays (added in place into the left operand) or, on the GPU-resident
 * path, device tensors (trainer/deviceState.ts: `combine` returns a new tensor, same pairing).
 */
import { combineInto } from '../parallel/tree';

/** The canonical tree over leaves of any kind; `combine(left, right)` returns left + right. */
export class PairwiseTree<T> {
  private stack: { size: number; data: T }[] = [];
  private count = 0;

  /** `release` receives each operand once it has been added in and is not the result (its buffer may be reused). */
  constructor(
    private readonly release: (buf: T) => void,
    private readonly combine: (left: T, right: T) => T,
  ) {}

  private merge(left: T, right: T): T {
    const sum = this.combine(left, right);
    if (right !== sum) this.release(right);
    if (left !== sum) this.release(left);
    return sum;
  }

  push(leaf: T): void {
    let node = { size: 1, data: leaf };
    this.count++;
    // Merge while the top of the stack holds a subtree of the same size (binary carry).
    while (this.stack.length > 0 && this.stack[this.stack.length - 1].size === node.size) {
      const left = this.stack.pop()!;
      node = { size: left.size * 2, data: this.merge(left.data, node.data) };
    }
    this.stack.push(node);
  }

  /** Folds the remaining stack right-to-left (smaller right subtrees first), as the tree says. */
  result(): T {
    if (this.stack.length === 0) throw new Error('TreeAccumulator: no leaves');
    let acc = this.stack[this.stack.length - 1].data;
    for (let i = this.stack.length - 2; i >= 0; i--) acc = this.merge(this.stack[i].data, acc);
    return acc;
  }

  get leaves(): number {
    return this.count;
  }
}

/** Host gradients: left += right in place (float32 stores), the left buffer is the result. */
export class TreeAccumulator extends PairwiseTree<Float32Array> {
  /** `release` receives each right operand once it has been added in (its buffer may be reused). */
  constructor(release: (buf: Float32Array) => void = () => {}) {
    super(release, (left, right) => {
      combineInto(left, right);
      return left;
    });
  }
}
