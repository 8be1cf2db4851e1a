/**
 * A binary min-heap of (primary, secondary) number pairs ordered lexicographically. The BPE
 * trainer (max pair count, ties by pair key) and encoder (lowest merge rank, leftmost first)
 * both use it with lazy invalidation: stale entries are skipped when popped.
 */
export class PairHeap {
  private p: number[] = [];
  private q: number[] = [];

  get size(): number {
    return this.p.length;
  }

  push(primary: number, secondary: number): void {
    const { p, q } = this;
    let i = p.length;
    p.push(primary);
    q.push(secondary);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (p[parent] < primary || (p[parent] === primary && q[parent] <= secondary)) break;
      p[i] = p[parent];
      q[i] = q[parent];
      i = parent;
    }
    p[i] = primary;
    q[i] = secondary;
  }

  /** Removes the smallest entry into `out` ([primary, secondary]); false when empty. */
  pop(out: [number, number]): boolean {
    const { p, q } = this;
    const n = p.length;
    if (n === 0) return false;
    out[0] = p[0];
    out[1] = q[0];
    const lp = p.pop()!;
    const lq = q.pop()!;
    if (n === 1) return true;
    let i = 0;
    const m = n - 1;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= m) break;
      if (c + 1 < m && (p[c + 1] < p[c] || (p[c + 1] === p[c] && q[c + 1] < q[c]))) c++;
      if (lp < p[c] || (lp === p[c] && lq <= q[c])) break;
      p[i] = p[c];
      q[i] = q[c];
      i = c;
    }
    p[i] = lp;
    q[i] = lq;
    return true;
  }
}
