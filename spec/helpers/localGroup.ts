/**
 * An in-process data-parallel group for tests: W trainers in one process exchange through
 * promises. Reductions follow the same rules as parallel/: exact sums in rank order, and the
 * canonical tree over contiguous microbatch blocks.
 */
import { DataParallel } from '../../trainer/dataParallel';
import { canonicalTreeSum, shardRange } from '../../parallel/tree';

export class LocalGroup {
  private pending = new Map<string, { parts: unknown[]; resolvers: ((v: unknown) => void)[]; arrived: number }>();
  private seq: number[];

  constructor(readonly worldSize: number) {
    this.seq = new Array(worldSize).fill(0);
  }

  private exchange<T, R>(rank: number, value: T, combine: (all: T[]) => R): Promise<R> {
    const key = String(this.seq[rank]++);
    let e = this.pending.get(key);
    if (!e) {
      e = { parts: new Array(this.worldSize), resolvers: new Array(this.worldSize), arrived: 0 };
      this.pending.set(key, e);
    }
    const entry = e;
    entry.parts[rank] = value;
    entry.arrived++;
    return new Promise<R>((resolve) => {
      entry.resolvers[rank] = resolve as (v: unknown) => void;
      if (entry.arrived === this.worldSize) {
        this.pending.delete(key);
        const r = combine(entry.parts as T[]);
        entry.resolvers.forEach((res) => res(r));
      }
    });
  }

  member(rank: number): DataParallel {
    return {
      rank,
      worldSize: this.worldSize,
      allReduceExact: (x) =>
        this.exchange(rank, x, (all) => {
          const out = new Float64Array(x.length);
          for (const a of all) for (let i = 0; i < out.length; i++) out[i] += a[i];
          return out;
        }),
      treeAllReduceSubtree: (x) => this.exchange(rank, x, (all) => canonicalTreeSum(all)),
      treeReduceScatterSubtree: async (x, _first, _count, _total, split) => {
        const sum = await this.exchange(rank, x, (all) => canonicalTreeSum(all));
        return sum.slice(...(split ? split[rank] : shardRange(sum.length, this.worldSize, rank)));
      },
      allGather: (x) =>
        this.exchange(rank, x, (all) => {
          const out = new Float32Array(all.reduce((n, a) => n + a.length, 0));
          let off = 0;
          for (const a of all) (out.set(a, off), (off += a.length));
          return out;
        }).then((r) => Float32Array.from(r)),
      allToAll: (parts) => this.exchange(rank, parts, (all) => all).then((all) => all.map((p) => Float32Array.from(p[rank]))),
      chain: (init, step) =>
        // Each rank's fold step runs in rank order once all have arrived.
        this.exchange(rank, step, (steps) => steps.reduce<Float64Array>((acc, f) => f(acc), Float64Array.from(init))).then((r) => Float64Array.from(r)),
    };
  }
}
