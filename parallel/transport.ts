/**
 * One authenticated ws connection to one peer rank (DESIGN.md section 5): sends chunked binary
 * messages with back-pressure, reassembles received frames into per-(tag, channel) mailboxes,
 * watches liveness with heartbeats, and turns every failure (socket closed, silent peer,
 * malformed or oversized frame) into one ParallelError that names the peer rank.
 *
 * Topology is a full mesh (see rendezvous.ts): every pair of ranks shares one PeerLink, so a
 * lost rank is noticed directly by every other rank and allToAll needs no relay.
 */
import WebSocket from 'ws';
import { ParallelError } from '../core/errors';
import { decodeControl, decodeFrame, DType, encodeHeader, frameChunks, MAX_CONTROL_BYTES, MsgType } from './frames';

export interface LinkOptions {
  /** Largest frame (header + payload) sent or accepted; the ws maxPayload of the receiver. */
  maxFrameBytes: number;
  /** Largest whole message a peer may announce (bounds what one message can allocate). */
  maxMessageBytes: number;
  /** How often to ping. */
  heartbeatMs: number;
  /** A peer silent (no frame, no pong) this long is declared lost. */
  timeoutMs: number;
}

export interface Received {
  dtype: DType;
  op: number;
  bytes: Uint8Array;
}

interface Incoming {
  dtype: DType;
  op: number;
  bytes: Uint8Array;
  received: number;
  done: boolean;
  waiter?: { resolve: (r: Received) => void; reject: (e: Error) => void };
}

export interface Control {
  type: MsgType;
  body: Record<string, unknown>;
}

/** Options every moecat ws client uses: zero mask (see dial), no compression. */
export function clientWsOptions(maxFrameBytes: number, handshakeTimeout: number): WebSocket.ClientOptions {
  return {
    maxPayload: maxFrameBytes,
    perMessageDeflate: false,
    handshakeTimeout,
    // RFC 6455 masking only protects browser-era proxies from cache poisoning; it adds no
    // integrity or secrecy. An all-zero mask keeps the wire format valid and lets ws skip the
    // XOR pass over every payload byte on both ends.
    generateMask: (mask: Buffer) => {
      mask.fill(0);
    },
  };
}

export class PeerLink {
  /** The peer's rank once authenticated, -1 before. */
  peerRank = -1;
  /** Called once when this link fails fatally (the group then fails every collective). */
  onFatal: (e: ParallelError) => void = () => {};
  /** Called when the peer closed cleanly (sent Bye). */
  onBye: () => void = () => {};

  private error: ParallelError | null = null;
  private lastError = '';
  private inbox = new Map<string, Incoming>();
  private controls: Control[] = [];
  private controlWaiter?: { resolve: (c: Control) => void; reject: (e: Error) => void };
  private byeReceived = false;
  private closing = false;
  private active = false;
  private timer?: NodeJS.Timeout;
  private lastSeen = Date.now();
  private lastTick = Date.now();
  /** Buffered bytes above which a sender waits for the socket to drain before the next frame. */
  private readonly highWater: number;
  private readonly closed: Promise<void>;

  constructor(private ws: WebSocket, private opts: LinkOptions, readonly remote: string) {
    this.highWater = 4 * opts.maxFrameBytes;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => this.onMessage(data, isBinary));
    ws.on('pong', () => (this.lastSeen = Date.now()));
    ws.on('ping', () => (this.lastSeen = Date.now()));
    ws.on('error', (e: Error & { code?: string }) => {
      this.lastError =
        e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH'
          ? `frame larger than maxFrameBytes (${opts.maxFrameBytes}) refused`
          : e.message;
    });
    this.closed = new Promise((resolve) => ws.once('close', () => resolve()));
    ws.on('close', (code: number, reason: Buffer) => this.onClose(code, reason.toString()));
  }

  private who(): string {
    return this.peerRank >= 0 ? `rank ${this.peerRank}` : `peer ${this.remote}`;
  }

  /** After authentication: start heartbeats and accept collective data. */
  activate(peerRank: number): void {
    this.peerRank = peerRank;
    this.active = true;
    this.lastSeen = this.lastTick = Date.now();
    this.timer = setInterval(() => this.heartbeat(), this.opts.heartbeatMs);
    this.timer.unref();
  }

  private heartbeat(): void {
    const now = Date.now();
    // If our own event loop was blocked (a long synchronous compute step), the peer's pongs may
    // be sitting unread in the socket: give it a fresh window rather than blame it.
    if (now - this.lastTick > 2 * this.opts.heartbeatMs + 250) this.lastSeen = now;
    this.lastTick = now;
    if (now - this.lastSeen > this.opts.timeoutMs) {
      this.fatal(`${this.who()} lost: silent for ${now - this.lastSeen} ms (heartbeat timeout ${this.opts.timeoutMs} ms)`);
      return;
    }
    if (this.ws.readyState === WebSocket.OPEN) this.ws.ping();
  }

  private onMessage(data: WebSocket.RawData, isBinary: boolean): void {
    this.lastSeen = Date.now();
    if (this.error) return;
    if (!isBinary || !Buffer.isBuffer(data)) return this.fatal(`${this.who()} sent a malformed frame: not a single binary message`);
    let f;
    try {
      f = decodeFrame(data, this.opts.maxMessageBytes);
    } catch (e) {
      return this.fatal(`${this.who()} sent a ${(e as Error).message}`);
    }
    const { header, payload } = f;
    if (header.type === MsgType.Data) {
      if (!this.active) return this.fatal(`${this.who()} sent data before authenticating`);
      this.onData(header.tag, header.channel, header.op, header.dtype, header.byteOffset, header.totalBytes, payload);
      return;
    }
    if (payload.length > MAX_CONTROL_BYTES || header.totalBytes !== payload.length) {
      return this.fatal(`${this.who()} sent a malformed control frame (${payload.length} bytes)`);
    }
    let body: Record<string, unknown>;
    try {
      body = decodeControl(payload);
    } catch (e) {
      return this.fatal(`${this.who()} sent a ${(e as Error).message}`);
    }
    if (header.type === MsgType.Bye) {
      this.byeReceived = true;
      this.onBye();
      return;
    }
    if (header.type === MsgType.Abort) {
      return this.fatal(`${this.who()} aborted: ${String(body.reason ?? 'no reason given')}`);
    }
    const c: Control = { type: header.type, body };
    if (this.controlWaiter) {
      const w = this.controlWaiter;
      this.controlWaiter = undefined;
      w.resolve(c);
    } else this.controls.push(c);
  }

  private onData(tag: number, channel: number, op: number, dtype: DType, off: number, total: number, payload: Buffer): void {
    const key = `${tag}/${channel}`;
    let m = this.inbox.get(key);
    if (!m) {
      // Fresh, aligned storage: payload views from ws may sit at any byte offset.
      m = { dtype, op, bytes: new Uint8Array(total), received: 0, done: false };
      this.inbox.set(key, m);
    }
    if (m.done || m.dtype !== dtype || m.bytes.byteLength !== total || off !== m.received) {
      return this.fatal(`${this.who()} sent a malformed frame: out-of-order or inconsistent chunk for message ${key}`);
    }
    m.bytes.set(payload, off);
    m.received += payload.length;
    if (m.received < total) return;
    m.done = true;
    const w = m.waiter ?? this.pendingWaiters.get(key);
    if (w) {
      this.pendingWaiters.delete(key);
      this.inbox.delete(key);
      w.resolve({ dtype: m.dtype, op: m.op, bytes: m.bytes });
    }
  }

  /** Waits for the complete message (tag, channel) from this peer. */
  recv(tag: number, channel: number): Promise<Received> {
    if (this.error) return Promise.reject(this.error);
    const key = `${tag}/${channel}`;
    const m = this.inbox.get(key);
    if (m?.done) {
      this.inbox.delete(key);
      return Promise.resolve({ dtype: m.dtype, op: m.op, bytes: m.bytes });
    }
    if (this.byeReceived) return Promise.reject(new ParallelError(`${this.who()} has left the group`));
    return new Promise((resolve, reject) => {
      if (m) m.waiter = { resolve, reject };
      else this.pendingWaiters.set(key, { resolve, reject });
    });
  }

  /** Waiters for messages of which no frame has arrived yet. */
  private pendingWaiters = new Map<string, { resolve: (r: Received) => void; reject: (e: Error) => void }>();

  /** Sends one message as frames of at most maxFrameBytes; resolves once written to the socket. */
  async send(tag: number, channel: number, op: number, dtype: DType, bytes: Uint8Array): Promise<void> {
    let last: Promise<void> = Promise.resolve();
    for (const [header, payload] of frameChunks({ type: MsgType.Data, dtype, op, channel, tag }, bytes, this.opts.maxFrameBytes)) {
      if (this.error) throw this.error;
      if (this.ws.readyState !== WebSocket.OPEN) {
        // The socket ended before its close event ran: the same loss onClose would report (a
        // killed rank was named "connection is closed" instead of "lost" in that window).
        if (!this.closing) this.fatal(`${this.who()} lost: ${this.lastError || 'connection closed unexpectedly'}`);
        throw this.error ?? new ParallelError(`${this.who()}: connection is closed`);
      }
      last = new Promise<void>((resolve, reject) => {
        // Header and payload go out as two fragments of one ws message, sent back to back in
        // the same tick (nothing can interleave), so the payload is never copied here.
        this.ws.send(header, { binary: true, fin: false });
        this.ws.send(payload, { binary: true, fin: true }, (err?: Error) => {
          if (!err) return resolve();
          // A failed write is a symptom: the peer's Abort (naming the root cause) or the close
          // event usually explains it, so give those a moment to be read first.
          setTimeout(() => {
            this.fatal(`${this.who()} lost: send failed: ${err.message}`);
            reject(this.error);
          }, 200).unref();
        });
      });
      last.catch(() => {});
      // Back-pressure: never queue more than highWater bytes in user space.
      if (this.ws.bufferedAmount > this.highWater) await last;
    }
    await last;
  }

  sendControl(type: MsgType, body: unknown): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    const payload = Buffer.from(JSON.stringify(body ?? {}), 'utf8');
    const h = encodeHeader({ type, dtype: DType.Bytes, op: 0, channel: 0, tag: 0, byteOffset: 0, totalBytes: payload.length });
    this.ws.send(h, { binary: true, fin: false });
    this.ws.send(payload, { binary: true, fin: true });
  }

  /** Next control message (Hello, Auth, Table, ...), or rejects after timeoutMs. */
  nextControl(timeoutMs: number, what: string): Promise<Control> {
    if (this.controls.length > 0) return Promise.resolve(this.controls.shift()!);
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.controlWaiter = undefined;
        reject(new ParallelError(`timed out after ${timeoutMs} ms waiting for ${what} from ${this.who()}`));
      }, Math.max(1, timeoutMs));
      this.controlWaiter = {
        resolve: (c) => (clearTimeout(t), resolve(c)),
        reject: (e) => (clearTimeout(t), reject(e)),
      };
    });
  }

  private onClose(code: number, reason: string): void {
    if (this.timer) clearInterval(this.timer);
    if (this.closing || this.error) return;
    const pending = this.pendingWaiters.size > 0 || [...this.inbox.values()].some((m) => m.waiter);
    if (this.byeReceived && !pending) {
      this.fail(new ParallelError(`${this.who()} has left the group`), false);
      return;
    }
    const why = this.lastError || reason || 'connection closed unexpectedly';
    this.fatal(`${this.who()} lost: ${why} (ws close code ${code})`);
  }

  private fatal(message: string): void {
    if (this.error) return;
    this.fail(new ParallelError(message), true);
  }

  /**
   * Rejects everything waiting on this link with `e` and drops the connection. With `notify`
   * (the failure started here) the group is told; otherwise (another link failed) the peer gets
   * an Abort carrying `e`'s message first, so every rank reports the root cause, not merely
   * "rank k closed".
   */
  fail(e: ParallelError, notify = false): void {
    if (this.error) return;
    this.error = e;
    if (this.timer) clearInterval(this.timer);
    this.controlWaiter?.reject(e);
    this.controlWaiter = undefined;
    for (const w of this.pendingWaiters.values()) w.reject(e);
    this.pendingWaiters.clear();
    for (const m of this.inbox.values()) m.waiter?.reject(e);
    this.inbox.clear();
    if (!notify && this.ws.readyState === WebSocket.OPEN) {
      this.sendControl(MsgType.Abort, { reason: e.message });
      this.ws.close(1011);
      setTimeout(() => this.ws.terminate(), 1000).unref();
    } else if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    if (notify) this.onFatal(e);
  }

  /** Tells the peer we leave on purpose, then closes (bounded wait for the close handshake). */
  async close(reason?: string): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    const wasOk = !this.error;
    this.closing = true;
    if (this.ws.readyState === WebSocket.OPEN) {
      if (reason) this.sendControl(MsgType.Abort, { reason });
      else if (wasOk) this.sendControl(MsgType.Bye, {});
      this.ws.close(1000);
      const t = new Promise<void>((r) => setTimeout(r, 1000).unref());
      await Promise.race([this.closed, t]);
    }
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    if (!this.error) this.error = new ParallelError(`link to ${this.who()} is closed`);
  }

  get isFailed(): boolean {
    return this.error !== null;
  }
}
