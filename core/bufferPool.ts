/**
 * Output-buffer pool for the native `cpu` kernels (issue 14).
 *
 * tfjs' cpu backend gives every kernel output a fresh Float32Array and drops it on dispose, so a
 * training step allocates hundreds of MB of ArrayBuffers that only the garbage collector frees.
 * Measured on configs/small: zeroing fresh pages (kernel `clear_page`, libc `memset` in calloc),
 * page faults, and V8 major GCs driven by external-memory growth took more CPU than the matMuls.
 * The pool hands the native kernels buffers that earlier, now-disposed tensors owned; a step's
 * allocation pattern repeats exactly, so after the first step nearly every output is a reuse.
 *
 * Safety rules (each one is tested in spec/native/bufferPool.spec.ts):
 *  - Only ArrayBuffers the pool created are ever recycled. A user's array handed to tf.tensor()
 *    is stored by tfjs without a copy and must never be reused.
 *  - A buffer returns to the pool only when no backend data entry refers to it any more. Entries
 *    are counted per ArrayBuffer, so views (tfjs' JS slice returns `subarray` views) and several
 *    dataIds over one buffer keep it alive.
 *  - readSync/read of a pooled buffer returns a copy: `dataSync()` results outlive `dispose()`.
 *  - Reused buffers are dirty; kernels that do not write every element ask for a zeroed one.
 * Determinism is unaffected: every kernel writes its whole output.
 */

/** The parts of tfjs' cpu backend the pool hooks. */
interface StorageLike {
  has(dataId: object): boolean;
  get(dataId: object): { values?: unknown } | undefined;
  set(dataId: object, value: { values?: unknown }): void;
  delete(dataId: object): boolean;
}
interface BackendLike {
  data: StorageLike;
  readSync(dataId: object): unknown;
}

export interface PoolStats {
  hits: number;
  misses: number;
  recycled: number;
  dropped: number;
  pooledBytes: number;
  liveBuffers: number;
}

const isView = (v: unknown): v is ArrayBufferView => ArrayBuffer.isView(v);

/**
 * Capacity class of a request for n floats: the next m·2^e ≥ n with m in 4..7, so at most 25%
 * of a buffer is slack. Mixture-of-experts layers change their expert batch sizes every step;
 * exact-size free lists then never hit (measured: 40% misses and a full pool of stale sizes).
 */
export function sizeClass(n: number): number {
  if (n <= 8) return n;
  const e = Math.floor(Math.log2(n)) - 2;
  const unit = 2 ** e;
  return Math.ceil(n / unit) * unit;
}

export class BufferPool {
  private readonly free = new Map<number, Float32Array[]>();
  /** Buffers this pool created. */
  private readonly owned = new WeakSet<ArrayBufferLike>();
  /** Owned buffers referenced by backend data entries, with the number of entries. */
  private readonly live = new Map<ArrayBufferLike, number>();
  /** Buffers now on a free list (guards against releasing one twice). */
  private readonly onFreeList = new WeakSet<ArrayBufferLike>();
  private readonly stats = { hits: 0, misses: 0, recycled: 0, dropped: 0 };
  private pooledBytes = 0;

  constructor(readonly maxBytes: number) {}

  /** A buffer of n floats with arbitrary contents (the caller writes all of it). */
  take(n: number): Float32Array {
    const cap = sizeClass(n);
    const a = this.free.get(cap)?.pop();
    if (a) {
      this.onFreeList.delete(a.buffer);
      this.pooledBytes -= a.byteLength;
      this.stats.hits++;
      return a.length === n ? a : a.subarray(0, n);
    }
    this.stats.misses++;
    if (n === 0) return new Float32Array(0);
    const buf = new Float32Array(cap);
    this.owned.add(buf.buffer);
    return cap === n ? buf : buf.subarray(0, n);
  }

  /** A buffer of n zeros. */
  takeZeroed(n: number): Float32Array {
    const before = this.stats.hits;
    const a = this.take(n);
    if (this.stats.hits !== before) a.fill(0);
    return a;
  }

  /** Returns a scratch buffer from take() that never reached backend storage. */
  give(a: Float32Array): void {
    if (this.owned.has(a.buffer) && !this.live.has(a.buffer)) this.release(a);
  }

  isPooled(v: unknown): boolean {
    return isView(v) && this.owned.has(v.buffer);
  }

  snapshot(): PoolStats {
    return { ...this.stats, pooledBytes: this.pooledBytes, liveBuffers: this.live.size };
  }

  private release(a: Float32Array): void {
    if (a.byteOffset !== 0 || a.length * 4 !== a.buffer.byteLength) a = new Float32Array(a.buffer);
    if (this.live.has(a.buffer) || this.onFreeList.has(a.buffer)) return;
    if (this.pooledBytes + a.byteLength > this.maxBytes) {
      this.stats.dropped++;
      return;
    }
    let list = this.free.get(a.length);
    if (!list) this.free.set(a.length, (list = []));
    list.push(a);
    this.onFreeList.add(a.buffer);
    this.pooledBytes += a.byteLength;
    this.stats.recycled++;
  }

  private ref(v: unknown): void {
    if (!isView(v) || !this.owned.has(v.buffer)) return;
    this.live.set(v.buffer, (this.live.get(v.buffer) ?? 0) + 1);
  }

  private unref(v: unknown): void {
    if (!isView(v) || !this.owned.has(v.buffer)) return;
    const c = (this.live.get(v.buffer) ?? 0) - 1;
    if (c > 0) {
      this.live.set(v.buffer, c);
      return;
    }
    this.live.delete(v.buffer);
    this.release(new Float32Array(v.buffer));
  }

  /**
   * Hooks a cpu backend instance: counts data entries per pooled buffer, recycles on the last
   * delete, and copies pooled buffers on readSync. Returns a function that removes the hooks.
   */
  attach(backend: BackendLike): () => void {
    const storage = backend.data;
    const origSet = storage.set;
    const origDelete = storage.delete;
    const origRead = backend.readSync;
    const pool = this;
    storage.set = function (dataId: object, value: { values?: unknown }): void {
      // The new reference first: when the old and new values share a buffer, dropping the old
      // one first would count it to zero and put a live buffer on the free list.
      const old = storage.has(dataId) ? storage.get(dataId)?.values : undefined;
      pool.ref(value?.values);
      pool.unref(old);
      origSet.call(this, dataId, value);
    };
    storage.delete = function (dataId: object): boolean {
      const values = storage.has(dataId) ? storage.get(dataId)?.values : undefined;
      const r = origDelete.call(this, dataId);
      pool.unref(values);
      return r;
    };
    backend.readSync = function (dataId: object): unknown {
      const out = origRead.call(this, dataId);
      return pool.isPooled(out) ? (out as Float32Array).slice() : out;
    };
    return () => {
      storage.set = origSet;
      storage.delete = origDelete;
      backend.readSync = origRead;
    };
  }
}
