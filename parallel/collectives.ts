/**
 * Collectives over the full mesh (DESIGN.md sections 4 and 5).
 *
 * Algorithms: with every pair of ranks directly connected, each collective is one or two
 * "direct exchange" rounds in which every rank sends its pieces to all peers at once:
 *  - allReduce (large): reduce-scatter (shard r of every rank's buffer goes to rank r, which
 *    reduces the W shards) then allGather of the reduced shards. Each rank sends and receives
 *    2·(W-1)/W of the buffer — the same volume as a ring — in 2 rounds instead of 2(W-1), and
 *    no rank gathers whole tensors it does not need. Small buffers (≤ 64 KiB) go in one round:
 *    everyone sends everything and reduces locally.
 *  - Determinism: every reduction over ranks is the canonical tree over rank index (tree.ts),
 *    applied element-wise, so results do not depend on arrival order or on which algorithm the
 *    size picked. treeAllReduceLeaves/Subtree extend this to the global microbatch index, making gradients
 *    bitwise identical across (power-of-two) world sizes.
 * Every rank must call the same collectives in the same order (SPMD): each call takes the next
 * sequence number as its tag, and a peer found in a different collective is a clear error.
 */
import { ParallelError } from '../core/errors';
import { bytesOf, DType, dtypeOf, NumArray, viewAs } from './frames';
import { GroupOptions, rendezvous } from './rendezvous';
import { PeerLink } from './transport';
import { blockNodes, canonicalTreeSum, copyOf, ReduceOp, shardRange, treeFromNodes } from './tree';

enum Op {
  AllReduce = 1,
  ReduceScatter = 2,
  AllGather = 3,
  AllToAll = 4,
  Broadcast = 5,
  Barrier = 6,
  TreeAllReduce = 7,
  TreeReduceScatter = 8,
  Chain = 9,
}

/** Buffers up to this size are all-reduced in one round (latency beats bandwidth there). */
const SMALL_BYTES = 64 * 1024;

type Ctor<T extends NumArray> = { new (n: number): T; new (b: ArrayBufferLike, off: number, n: number): T };

export class Group {
  private seq = 0;
  /** Payload bytes this rank has sent to its peers (communication-volume figures). */
  bytesSent = 0;
  private failed: ParallelError | null = null;

  private constructor(
    readonly rank: number,
    readonly worldSize: number,
    private links: (PeerLink | null)[],
    private shutdown: () => Promise<void> = async () => {},
  ) {
    for (const l of links) if (l) l.onFatal = (e) => this.failAll(e);
  }

  /** Joins (or, on rank 0, hosts) the rendezvous and returns the formed group. */
  static async init(opts: GroupOptions): Promise<Group> {
    const mesh = await rendezvous(opts);
    return new Group(opts.rank, opts.worldSize, mesh.links, mesh.shutdown);
  }

  /** A world of one: every collective is the identity (copies). */
  static single(): Group {
    return new Group(0, 1, [null]);
  }

  private failAll(e: ParallelError): void {
    if (this.failed) return;
    this.failed = e;
    for (const l of this.links) l?.fail(e);
  }

  private begin(): number {
    if (this.failed) throw this.failed;
    return ++this.seq;
  }

  private peers(): number[] {
    return [...Array(this.worldSize).keys()].filter((r) => r !== this.rank);
  }

  private async recv<T extends NumArray>(from: number, tag: number, ch: number, op: Op, like: T): Promise<T> {
    const m = await this.links[from]!.recv(tag, ch);
    if (m.op !== op) {
      const e = new ParallelError(`collective mismatch at call #${tag}: rank ${from} is in ${Op[m.op] ?? m.op}, rank ${this.rank} in ${Op[op]}`, {
        hint: 'every rank must call the same collectives in the same order',
      });
      this.failAll(e);
      throw e;
    }
    if (m.dtype !== dtypeOf(like)) {
      const e = new ParallelError(`dtype mismatch in ${Op[op]}: rank ${from} sent ${DType[m.dtype]}, rank ${this.rank} expects ${DType[dtypeOf(like)]}`);
      this.failAll(e);
      throw e;
    }
    return viewAs(m.dtype, m.bytes) as T;
  }

  private send(to: number, tag: number, ch: number, op: Op, a: NumArray): Promise<void> {
    this.bytesSent += a.byteLength;
    return this.links[to]!.send(tag, ch, op, dtypeOf(a), bytesOf(a));
  }

  /** One round: send outgoing(peer) to every peer, receive one message from every peer. */
  private async exchange<T extends NumArray>(tag: number, ch: number, op: Op, like: T, outgoing: (peer: number) => T | null, from = this.peers()): Promise<(T | null)[]> {
    const got: (T | null)[] = new Array(this.worldSize).fill(null);
    const sends = this.peers().flatMap((p) => {
      const a = outgoing(p);
      return a ? [this.send(p, tag, ch, op, a)] : [];
    });
    const recvs = from.map(async (p) => (got[p] = await this.recv(p, tag, ch, op, like)));
    await Promise.all([...sends, ...recvs]);
    return got;
  }

  /** Element-wise reduction across ranks (canonical tree over rank index); every rank gets it. */
  async allReduce<T extends NumArray>(buf: T, op: ReduceOp = 'sum'): Promise<T> {
    const tag = this.begin();
    if (this.worldSize === 1) return copyOf(buf);
    if (buf.byteLength <= SMALL_BYTES) {
      const got = await this.exchange(tag, 0, Op.AllReduce, buf, () => buf);
      got[this.rank] = buf;
      return canonicalTreeSum(this.sameLength(got as T[], buf.length, 'allReduce'), op);
    }
    const shard = await this.reduceScatterTagged(tag, 0, Op.AllReduce, buf, op);
    return concat(buf, (await this.allGatherTagged(tag, 1, Op.AllReduce, shard)) as T[]);
  }

  /** Exact sums of float64 values (counts, token totals): what trainer/dataParallel expects. */
  allReduceExact(x: Float64Array): Promise<Float64Array> {
    return this.allReduce(x, 'sum');
  }

  /** Reduces across ranks and returns this rank's shard, elements shardRange(n, W, rank). */
  async reduceScatter<T extends NumArray>(buf: T, op: ReduceOp = 'sum'): Promise<T> {
    const tag = this.begin();
    if (this.worldSize === 1) return copyOf(buf);
    return this.reduceScatterTagged(tag, 0, Op.ReduceScatter, buf, op);
  }

  private async reduceScatterTagged<T extends NumArray>(tag: number, ch: number, op: Op, buf: T, rop: ReduceOp): Promise<T> {
    const W = this.worldSize;
    const shard = (r: number) => {
      const [s, e] = shardRange(buf.length, W, r);
      return buf.subarray(s, e) as T;
    };
    const got = await this.exchange(tag, ch, op, buf, shard);
    got[this.rank] = shard(this.rank);
    return canonicalTreeSum(this.sameLength(got as T[], shard(this.rank).length, 'reduceScatter'), rop);
  }

  /** Concatenation of every rank's buffer in rank order (sizes may differ per rank). */
  async allGather<T extends NumArray>(buf: T): Promise<T> {
    return concat(buf, await this.allGatherParts(buf));
  }

  /** Every rank's buffer, indexed by rank (sizes may differ per rank). */
  async allGatherParts<T extends NumArray>(buf: T): Promise<T[]> {
    const tag = this.begin();
    if (this.worldSize === 1) return [copyOf(buf)];
    return this.allGatherTagged(tag, 0, Op.AllGather, buf);
  }

  private async allGatherTagged<T extends NumArray>(tag: number, ch: number, op: Op, buf: T): Promise<T[]> {
    const got = await this.exchange(tag, ch, op, buf, () => buf);
    got[this.rank] = copyOf(buf);
    return got as T[];
  }

  /** sendParts[j] goes to rank j; returns recv[j] = what rank j sent here (any sizes). */
  async allToAll<T extends NumArray>(sendParts: T[]): Promise<T[]> {
    const tag = this.begin();
    if (sendParts.length !== this.worldSize) {
      throw new ParallelError(`allToAll on rank ${this.rank}: ${sendParts.length} parts for world size ${this.worldSize}`);
    }
    if (this.worldSize === 1) return [copyOf(sendParts[0])];
    const got = await this.exchange(tag, 0, Op.AllToAll, sendParts[0], (p) => sendParts[p]);
    got[this.rank] = copyOf(sendParts[this.rank]);
    return got as T[];
  }

  /**
   * Root's buffer on every rank. Non-root ranks pass any buffer of the right type (its contents
   * and length are ignored). Large buffers go scatter + allGather so the root sends each byte once.
   */
  async broadcast<T extends NumArray>(buf: T, root: number): Promise<T> {
    const tag = this.begin();
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) throw new ParallelError(`broadcast: root ${root} out of range for world size ${this.worldSize}`);
    if (this.worldSize === 1) return copyOf(buf);
    const me = this.rank;
    if (buf.byteLength <= SMALL_BYTES && buf.length > 0 && me === root) {
      // Root decides the algorithm (only it knows the size) and announces it on channel 0.
      await this.exchange(tag, 0, Op.Broadcast, buf, () => buf, []);
      return copyOf(buf);
    }
    if (me === root) {
      const flag = new (buf.constructor as Ctor<T>)(0);
      const W = this.worldSize;
      const shard = (r: number) => buf.subarray(...shardRange(buf.length, W, r)) as T;
      // Channel 0 carries an empty "scatter follows" marker, channel 1 this rank's shard.
      await Promise.all([
        this.exchange(tag, 0, Op.Broadcast, buf, () => flag, []),
        this.exchange(tag, 1, Op.Broadcast, buf, (p) => shard(p), []),
        this.exchange(tag, 2, Op.Broadcast, buf, () => shard(root), []),
      ]);
      return copyOf(buf);
    }
    const head = await this.recv(root, tag, 0, Op.Broadcast, buf);
    if (head.length > 0) return head;
    // Scatter: my shard from root; then allGather among non-roots (root sends its own shard).
    const mine = await this.recv(root, tag, 1, Op.Broadcast, buf);
    const got = await this.exchange(tag, 2, Op.Broadcast, buf, (p) => (p === root ? null : mine), this.peers());
    got[me] = mine;
    return concat(buf, got as T[]);
  }

  /** Resolves once every rank has entered the barrier. */
  async barrier(): Promise<void> {
    const tag = this.begin();
    if (this.worldSize === 1) return;
    const empty = new Int32Array(0);
    await this.exchange(tag, 0, Op.Barrier, empty, () => empty);
  }

  /**
   * Canonical-tree sum of per-microbatch gradients across ranks (DESIGN.md section 4). This rank
   * holds microbatches [first, first + localParts.length) of `total` as their leaves; the blocks
   * of all ranks must tile [0, total). Every rank gets exactly canonicalTreeSum(all leaves), bit
   * for bit, whatever the world size.
   * Bandwidth: reduce-scatter style — shard s of every node value goes to rank s, which
   * evaluates the top of the tree for its shard; then the shards are all-gathered.
   */
  async treeAllReduceLeaves(localParts: Float32Array[], first: number, total: number): Promise<Float32Array> {
    const end = first + localParts.length;
    const nodes = blockNodes(first, end, total);
    return this.treeAllReduceNodes(nodes.map((n) => canonicalTreeSum(localParts.slice(n.lo - first, n.hi - first))), null, first, end, total);
  }

  /**
   * As treeAllReduceLeaves, when this rank's block [first, first + count) is one node of the
   * canonical tree (aligned power-of-two blocks) and it holds that node's subtree sum.
   */
  async treeAllReduceSubtree(localSubtree: Float32Array, first: number, count: number, total: number): Promise<Float32Array> {
    const end = first + count;
    const nodes = blockNodes(first, end, total);
    if (nodes.length > 1) {
      throw new ParallelError(`treeAllReduceSubtree: microbatches [${first}, ${end}) are not one node of the canonical tree over ${total}`, {
        hint: 'pass the per-microbatch gradients to treeAllReduceLeaves instead',
      });
    }
    return this.treeAllReduceNodes(nodes.length ? [localSubtree] : [], localSubtree, first, end, total);
  }

  /**
   * The reduce-scatter half of treeAllReduceSubtree (sharded optimizer state): this rank gets
   * only elements shardRange(n, W, rank) of the canonical tree's sum — the same bits, element
   * for element, as the all-reduce gives there — and nothing is all-gathered. `split[s]`, when
   * given, is the element range rank s receives instead (ranges tiling [0, n) in rank order;
   * `parallel.shard: full` reduces one layer's gradient at a time onto the global shards).
   */
  async treeReduceScatterSubtree(localSubtree: Float32Array, first: number, count: number, total: number, split?: [number, number][]): Promise<Float32Array> {
    const end = first + count;
    const nodes = blockNodes(first, end, total);
    if (nodes.length > 1) {
      throw new ParallelError(`treeReduceScatterSubtree: microbatches [${first}, ${end}) are not one node of the canonical tree over ${total}`, {
        hint: 'give each rank an aligned power-of-two block of microbatches',
      });
    }
    if (split && (split.length !== this.worldSize || split.some(([lo, hi], r) => lo !== (r === 0 ? 0 : split[r - 1][1]) || hi < lo) || split[split.length - 1][1] !== localSubtree.length)) {
      throw new ParallelError(`treeReduceScatterSubtree: split ${JSON.stringify(split)} does not tile [0, ${localSubtree.length}) over ${this.worldSize} ranks`);
    }
    return this.treeAllReduceNodes(nodes.length ? [localSubtree] : [], localSubtree, first, end, total, false, split);
  }

  /**
   * A sequential fold over ranks in rank order: rank 0 applies `step` to `init`, passes the
   * result to rank 1, and so on; every rank gets the last rank's result. Used to continue one
   * float64 accumulation across the shards of a vector, so the result equals the single loop's
   * bits (W - 1 hops of a few bytes, then one broadcast).
   */
  async chain(init: Float64Array, step: (acc: Float64Array) => Float64Array): Promise<Float64Array> {
    const tag = this.begin();
    if (this.worldSize === 1) return step(copyOf(init));
    const W = this.worldSize;
    const me = this.rank;
    let acc = copyOf(init);
    if (me > 0) acc = await this.recv(me - 1, tag, 0, Op.Chain, init);
    const out = step(acc);
    if (out.length !== init.length) throw new ParallelError(`chain: rank ${me} produced ${out.length} values where ${init.length} were expected`);
    if (me < W - 1) {
      await this.send(me + 1, tag, 0, Op.Chain, out);
      return this.recv(W - 1, tag, 1, Op.Chain, init);
    }
    await Promise.all(this.peers().map((p) => this.send(p, tag, 1, Op.Chain, out)));
    return out;
  }

  /** The ranks' node values (in blockNodes order) reduced to the whole tree's sum. `input`: copy if returned as is. */
  private async treeAllReduceNodes(values: Float32Array[], input: Float32Array | null, first: number, end: number, total: number, gather = true, split?: [number, number][]): Promise<Float32Array> {
    const tag = this.begin();
    const nodes = blockNodes(first, end, total);
    if (this.worldSize === 1) {
      if (first !== 0 || end !== total) throw new ParallelError(`treeAllReduce: a world of one must hold all ${total} microbatches, got [${first}, ${end})`);
      const r = treeFromNodes(new Map(nodes.map((n, i) => [`${n.lo}:${n.hi}`, values[i]])), total);
      if (split) return r.slice(split[0][0], split[0][1]);
      return r === input ? copyOf(r) : r;
    }
    const op = gather ? Op.TreeAllReduce : Op.TreeReduceScatter;
    const W = this.worldSize;
    const n = values.length ? values[0].length : 0;
    const piece = (s: number) => {
      const [lo, hi] = split ? split[s] : shardRange(n, W, s);
      const out = new Float32Array((hi - lo) * values.length);
      values.forEach((v, i) => out.set(v.subarray(lo, hi), i * (hi - lo)));
      return out;
    };
    const meta = new Int32Array([first, end, total]);
    const metas = await this.exchange(tag, 0, op, meta, () => meta);
    metas[this.rank] = meta;
    const pieces = await this.exchange(tag, 1, op, new Float32Array(0), piece);
    pieces[this.rank] = piece(this.rank);
    const shard = this.topOfTree(metas as Int32Array[], pieces as Float32Array[], total);
    if (!gather) return shard;
    return concat(new Float32Array(0), await this.allGatherTagged(tag, 2, Op.TreeAllReduce, shard));
  }

  /** Checks that the ranks' blocks tile [0, total) and evaluates the tree on this rank's shard. */
  private topOfTree(metas: Int32Array[], pieces: Float32Array[], total: number): Float32Array {
    const blocks = metas.map((m, r) => ({ r, first: m[0], end: m[1], total: m[2] })).sort((x, y) => x.first - y.first || x.end - y.end);
    let at = 0;
    for (const b of blocks) {
      if (b.total !== total) throw new ParallelError(`treeAllReduce: rank ${b.r} says ${b.total} microbatches in all, rank ${this.rank} says ${total}`);
      if (b.first === b.end) continue;
      if (b.first !== at) throw new ParallelError(`treeAllReduce: microbatch blocks overlap or leave a gap at index ${at} (rank ${b.r} holds [${b.first}, ${b.end}))`);
      at = b.end;
    }
    if (at !== total) throw new ParallelError(`treeAllReduce: microbatches [${at}, ${total}) are held by no rank`);
    const values = new Map<string, Float32Array>();
    let shardLen = -1;
    for (const b of blocks) {
      const ns = blockNodes(b.first, b.end, total);
      if (ns.length === 0) continue;
      const len = pieces[b.r].length / ns.length;
      if (shardLen >= 0 && len !== shardLen) throw new ParallelError(`treeAllReduce: rank ${b.r} sent gradients of a different length than the others`);
      shardLen = len;
      ns.forEach((nd, i) => values.set(`${nd.lo}:${nd.hi}`, pieces[b.r].subarray(i * len, (i + 1) * len)));
    }
    return treeFromNodes(values, total);
  }

  private sameLength<T extends NumArray>(parts: T[], n: number, what: string): T[] {
    parts.forEach((p, r) => {
      if (p.length !== n) throw new ParallelError(`${what}: rank ${r} contributed ${p.length} elements where ${n} were expected (all ranks must pass equal-length buffers)`);
    });
    return parts;
  }

  /** Leaves the group cleanly (peers see a Bye, not a lost rank). */
  async close(): Promise<void> {
    if (!this.failed) this.failed = new ParallelError(`group on rank ${this.rank} is closed`);
    await Promise.all(this.links.map((l) => l?.close()));
    await this.shutdown();
  }
}

function concat<T extends NumArray>(like: T, parts: T[]): T {
  const out = new (like.constructor as Ctor<T>)(parts.reduce((s, p) => s + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p as ArrayLike<number>, off);
    off += p.length;
  }
  return out;
}
