/**
 * Synchronous all-to-all for code that cannot await: tfjs autodiff runs forward ops and gradient
 * functions synchronously, so the expert-parallel dispatch/combine (and their gradients) block
 * the main thread while a worker_thread does the network I/O.
 *
 * Protocol: the worker owns a second Group (its own rendezvous on `masterPort`, normally the
 * data-parallel port + 1). The main thread posts a request (id + parts) to the worker and, when
 * it needs the result, blocks in Atomics.wait on a shared Int32 counter. The worker posts the
 * received parts on a dedicated MessagePort (buffers transferred, no copy), then increments the
 * counter and notifies; the main thread reads the reply synchronously with receiveMessageOnPort.
 * (A MessagePort instead of a fixed shared data region: no capacity limit and no size header to
 * manage; the SharedArrayBuffer carries only the wake-up counter.)
 *
 * `startAllToAll` returns at once, so the main thread can compute while the worker moves the
 * data (the ScMoE overlap); `wait()` blocks. Requests are served in order, one at a time.
 * A failure in the worker (lost peer, timeout, mismatch) is answered to the pending and all
 * later requests and thrown on the main thread as ParallelError.
 */
import * as path from 'path';
import { MessageChannel, MessagePort, receiveMessageOnPort, Worker } from 'worker_threads';
import { ParallelError } from '../core/errors';

export interface SyncCommOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  /** Rendezvous port of the worker's group (must differ from the data-parallel group's). */
  masterPort: number;
  secret: string;
  /** Peer timeout of the worker's group, and the longest a blocked wait lasts (ms). */
  timeoutMs?: number;
  /** Artificial latency the worker adds before every all-to-all (benchmarks; default 0). */
  delayMs?: number;
}

export interface PendingAllToAll {
  /** Blocks until the exchange is done; recv[j] is what rank j sent here. */
  wait(): Float32Array[];
}

/** What the expert-parallel MoE needs: a world of ranks with a blocking all-to-all. */
export interface SyncAllToAll {
  rank: number;
  worldSize: number;
  startAllToAll(parts: Float32Array[]): PendingAllToAll;
  syncAllToAll(parts: Float32Array[]): Float32Array[];
}

type Reply = { id: number; parts?: Float32Array[]; error?: string };

export class SyncComm implements SyncAllToAll {
  private nextId = 1;
  private readonly done = new Map<number, Reply>();
  private failed: ParallelError | null = null;
  private closed = false;
  /** Milliseconds the main thread spent blocked in wait() (benchmarks). */
  blockedMs = 0;
  /** Payload bytes this rank has handed to the worker for other ranks (all-to-all traffic it sends). */
  bytesSent = 0;

  private constructor(
    readonly rank: number,
    readonly worldSize: number,
    private readonly worker: Worker,
    private readonly flag: Int32Array,
    private readonly port: MessagePort,
    private readonly timeoutMs: number,
  ) {}

  /** Starts the worker and forms its group; resolves when every rank's worker has joined. */
  static async create(o: SyncCommOptions): Promise<SyncComm> {
    const sab = new SharedArrayBuffer(4);
    const { port1, port2 } = new MessageChannel();
    const timeoutMs = o.timeoutMs ?? 120000;
    const worker = new Worker(path.join(__dirname, 'syncCommWorker.js'), {
      workerData: { rank: o.rank, worldSize: o.worldSize, masterAddr: o.masterAddr, masterPort: o.masterPort, secret: o.secret, timeoutMs, delayMs: o.delayMs ?? 0, flag: sab, reply: port2 },
      transferList: [port2],
    });
    await new Promise<void>((resolve, reject) => {
      const onErr = (e: Error) => reject(new ParallelError(`expert-parallel comm worker on rank ${o.rank} failed to start: ${e.message}`));
      worker.once('error', onErr);
      worker.once('exit', (code) => reject(new ParallelError(`expert-parallel comm worker on rank ${o.rank} exited (${code}) before joining`)));
      worker.on('message', function first(m: { type: string; error?: string }) {
        if (m.type === 'ready') {
          worker.off('message', first);
          worker.off('error', onErr);
          worker.removeAllListeners('exit');
          resolve();
        } else if (m.type === 'failed') {
          reject(new ParallelError(`expert-parallel group on rank ${o.rank}: ${m.error}`, { hint: `the worker rendezvous uses port ${o.masterPort}` }));
        }
      });
    });
    const c = new SyncComm(o.rank, o.worldSize, worker, new Int32Array(sab), port1, timeoutMs);
    worker.on('error', (e) => (c.failed ??= new ParallelError(`expert-parallel comm worker on rank ${o.rank} crashed: ${e.message}`)));
    return c;
  }

  /** Changes the worker's artificial per-exchange latency (benchmarks). */
  setDelay(ms: number): void {
    this.worker.postMessage({ type: 'delay', ms });
  }

  startAllToAll(parts: Float32Array[]): PendingAllToAll {
    if (this.failed) throw this.failed;
    if (this.closed) throw new ParallelError(`expert-parallel comm on rank ${this.rank} is closed`);
    if (parts.length !== this.worldSize) throw new ParallelError(`allToAll on rank ${this.rank}: ${parts.length} parts for world size ${this.worldSize}`);
    const id = this.nextId++;
    parts.forEach((p, r) => (this.bytesSent += r === this.rank ? 0 : p.byteLength));
    this.worker.postMessage({ type: 'a2a', id, parts });
    let result: Float32Array[] | null = null;
    return { wait: () => (result ??= this.waitFor(id)) };
  }

  syncAllToAll(parts: Float32Array[]): Float32Array[] {
    return this.startAllToAll(parts).wait();
  }

  private waitFor(id: number): Float32Array[] {
    const t0 = Date.now();
    for (;;) {
      // Read the counter before draining: a reply posted after this load changes it, so the
      // wait below cannot sleep through it.
      const seen = Atomics.load(this.flag, 0);
      let m;
      while ((m = receiveMessageOnPort(this.port))) {
        const r = m.message as Reply;
        this.done.set(r.id, r);
      }
      const r = this.done.get(id);
      if (r) {
        this.done.delete(id);
        this.blockedMs += Date.now() - t0;
        if (r.error !== undefined) throw (this.failed = new ParallelError(`expert-parallel all-to-all on rank ${this.rank}: ${r.error}`));
        return r.parts!;
      }
      if (this.failed) throw this.failed;
      if (Date.now() - t0 > this.timeoutMs) {
        throw (this.failed = new ParallelError(`expert-parallel all-to-all on rank ${this.rank}: no reply within ${this.timeoutMs} ms`, { hint: 'a peer is stuck or the comm worker died' }));
      }
      Atomics.wait(this.flag, 0, seen, 200);
    }
  }

  /** Leaves the worker's group cleanly and ends the worker. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const exited = new Promise<void>((r) => this.worker.once('exit', () => r()));
    const timer = setTimeout(() => void this.worker.terminate(), 5000);
    this.worker.postMessage({ type: 'close' });
    await exited;
    clearTimeout(timer);
    this.port.close();
  }
}
