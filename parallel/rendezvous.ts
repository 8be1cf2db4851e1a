/**
 * Rendezvous and full-mesh formation (DESIGN.md section 5).
 *
 * 1. Rank 0 listens on MASTER_ADDR:MASTER_PORT. Every other rank first opens its own listener
 *    (ephemeral port), then dials rank 0 and authenticates (handshake.ts), announcing where it
 *    listens. Wrong secrets, out-of-range / duplicate ranks and world-size mismatches are refused
 *    and logged; rank 0 keeps waiting for the right peer until the join timeout, which fails
 *    with the list of missing ranks.
 * 2. Rank 0 sends everyone the address table. Rank i dials every rank j with 0 < i < j, so each
 *    pair shares exactly one authenticated link: a full mesh (allToAll and lost-rank detection
 *    need no relay through rank 0).
 * 3. Each rank reports Ready to rank 0 once its W-1 links are up; rank 0 answers Go. Listeners
 *    close then: a late or hostile connection cannot reach a formed group.
 */
import * as net from 'net';
import * as http from 'http';
import WebSocket, { WebSocketServer } from 'ws';
import { ParallelError, errorMessage } from '../core/errors';
import { DEFAULT_MAX_FRAME_BYTES, MsgType } from './frames';
import { acceptHandshake, dialHandshake } from './handshake';
import { clientWsOptions, LinkOptions, PeerLink } from './transport';

export interface GroupOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  /** Shared secret (the launcher passes MOECAT_SECRET); proved by HMAC, never sent. */
  secret: string;
  /** Bound on the whole rendezvous (default 60 s). */
  joinTimeoutMs?: number;
  heartbeatMs?: number;
  /** A peer silent this long is declared lost (default 5 s). Raise it if steps block the event loop longer. */
  timeoutMs?: number;
  maxFrameBytes?: number;
  maxMessageBytes?: number;
  /** Interface to listen on; default: the master address if it is loopback, else all interfaces. */
  bindHost?: string;
  /** Address other ranks should dial; default: our end of the connection to rank 0. */
  advertiseHost?: string;
  log?: (msg: string) => void;
}

export interface Mesh {
  links: (PeerLink | null)[];
  opts: LinkOptions;
  /** Stops this rank's listener (call after closing the links). */
  shutdown: () => Promise<void>;
}

export function linkOptions(o: GroupOptions): LinkOptions {
  const maxFrameBytes = o.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  return {
    maxFrameBytes,
    maxMessageBytes: o.maxMessageBytes ?? 2 ** 31,
    heartbeatMs: o.heartbeatMs ?? 1000,
    timeoutMs: o.timeoutMs ?? 5000,
  };
}

function validate(o: GroupOptions): void {
  if (!Number.isInteger(o.worldSize) || o.worldSize < 1) throw new ParallelError(`world size must be a positive integer, got ${o.worldSize}`);
  if (!Number.isInteger(o.rank) || o.rank < 0 || o.rank >= o.worldSize) throw new ParallelError(`rank ${o.rank} is out of range for world size ${o.worldSize}`);
  if (o.worldSize > 1 && !o.secret) throw new ParallelError('no shared secret', { hint: 'set MOECAT_SECRET (the launcher does this) or pass secret' });
  if (o.worldSize > 1 && (!Number.isInteger(o.masterPort) || o.masterPort <= 0 || o.masterPort > 65535)) throw new ParallelError(`invalid master port ${o.masterPort}`);
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host.startsWith('127.') || host === '::1';
}

function hostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A connection that has not completed its upgrade request by then is dropped (node's default: 60 s). */
const UPGRADE_TIMEOUT_MS = 10_000;

function listen(host: string, port: number, maxPayload: number): Promise<WebSocketServer> {
  return new Promise((resolve, reject) => {
    // Our own http server, so a peer that sends a partial request and stalls is cut off soon.
    const server = http.createServer((_req, res) => {
      res.writeHead(426, { 'Content-Type': 'text/plain', Connection: 'close' });
      res.end('a moecat rank speaks WebSocket only\n');
    });
    // An idle timeout until the upgrade: ws clears it (setTimeout(0)) once the socket is a WebSocket.
    server.on('connection', (sock: net.Socket) => sock.setTimeout(UPGRADE_TIMEOUT_MS, () => sock.destroy()));
    const wss = new WebSocketServer({ server, maxPayload, perMessageDeflate: false });
    server.once('listening', () => resolve(wss));
    server.once('error', (e) => reject(new ParallelError(`cannot listen on ${hostPort(host, port)}: ${e.message}`)));
    server.listen(port, host);
  });
}

/** Closes the listener; bounded, since the http server's callback waits for its connections. */
function closeServer(wss: WebSocketServer): Promise<void> {
  return new Promise((r) => {
    const t = setTimeout(r, 2000);
    t.unref();
    const server = wss.options.server as http.Server | undefined;
    wss.close(() => {
      if (!server) return (clearTimeout(t), r());
      server.close(() => (clearTimeout(t), r()));
      server.closeAllConnections();
    });
    for (const c of wss.clients) c.terminate();
  });
}

/** Dials `url` until it opens, retrying refused connections (the target may start later). */
async function dial(url: string, lo: LinkOptions, deadline: number): Promise<{ link: PeerLink; localAddress: string }> {
  let last = '';
  while (Date.now() < deadline) {
    try {
      return await new Promise((resolve, reject) => {
        const ws = new WebSocket(url, clientWsOptions(lo.maxFrameBytes, Math.max(1, deadline - Date.now())));
        let localAddress = '';
        ws.once('upgrade', (res) => (localAddress = res.socket.localAddress ?? ''));
        ws.once('open', () => {
          ws.removeAllListeners('error');
          resolve({ link: new PeerLink(ws, lo, url), localAddress });
        });
        ws.once('error', (e) => {
          ws.terminate();
          reject(e);
        });
      });
    } catch (e) {
      last = errorMessage(e);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new ParallelError(`could not reach ${url} before the join timeout: ${last || 'timed out'}`);
}

/** Forms the group; resolves with one authenticated link per peer rank (null at our own rank). */
export async function rendezvous(o: GroupOptions): Promise<Mesh> {
  validate(o);
  const lo = linkOptions(o);
  const links: (PeerLink | null)[] = new Array(o.worldSize).fill(null);
  if (o.worldSize === 1) return { links, opts: lo, shutdown: async () => {} };
  const log = o.log ?? ((m: string) => process.stderr.write(`[moecat rank ${o.rank}] ${m}\n`));
  const deadline = Date.now() + (o.joinTimeoutMs ?? 60_000);
  const left = () => Math.max(1, deadline - Date.now());
  const bindHost = o.bindHost ?? (isLoopback(o.masterAddr) ? o.masterAddr : '0.0.0.0');
  const wss = await listen(bindHost, o.rank === 0 ? o.masterPort : 0, lo.maxFrameBytes);
  // The listener stays open (refusing newcomers) until the group closes: closing ws's internal
  // http server waits for, and on some Node versions drops, the upgraded connections.
  try {
    if (o.rank === 0) await formAsMaster(o, lo, wss, links, log, deadline);
    else await formAsWorker(o, lo, wss, links, log, deadline, left);
    return { links, opts: lo, shutdown: () => closeServer(wss) };
  } catch (e) {
    await Promise.all(links.map((l) => l?.close(errorMessage(e))));
    await closeServer(wss);
    throw e;
  }
}

async function formAsMaster(
  o: GroupOptions,
  lo: LinkOptions,
  wss: WebSocketServer,
  links: (PeerLink | null)[],
  log: (m: string) => void,
  deadline: number,
): Promise<void> {
  const W = o.worldSize;
  const table: string[] = new Array(W).fill('');
  let tableSent = false;
  let allJoined!: () => void;
  const joinedAll = new Promise<void>((r) => (allJoined = r));
  const count = () => links.filter((l) => l).length;
  wss.on('connection', (ws, req) => {
    const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const link = new PeerLink(ws, lo, remote);
    const claim = (r: number, w: number): string | null => {
      if (tableSent) return 'the group is already formed';
      if (w !== W) return `world size mismatch: rank ${r} says ${w}, rank 0 has ${W}`;
      if (r <= 0 || r >= W) return `rank ${r} is out of range (1..${W - 1} may join rank 0)`;
      if (links[r]) return `rank ${r} has already joined (duplicate rank)`;
      links[r] = link;
      return null;
    };
    acceptHandshake(link, o.secret, Math.min(10_000, Math.max(1, deadline - Date.now())), claim).then(
      ({ rank, listen }) => {
        link.activate(rank);
        table[rank] = listen ?? '';
        // A rank that drops before the table goes out may rejoin (e.g. restarted by its scheduler).
        link.onFatal = (e) => {
          if (!tableSent && links[rank] === link) {
            links[rank] = null;
            log(`rank ${rank} dropped out while joining: ${e.message}`);
          }
        };
        log(`rank ${rank} joined from ${remote} (${count()}/${W - 1})`);
        if (count() === W - 1) allJoined();
      },
      (e) => log(errorMessage(e)),
    );
  });
  const timedOut = await Promise.race([
    joinedAll.then(() => false),
    new Promise<boolean>((r) => setTimeout(() => r(true), Math.max(1, deadline - Date.now())).unref()),
  ]);
  if (timedOut) {
    const missing = [...Array(W).keys()].filter((r) => r > 0 && !links[r]);
    throw new ParallelError(`rendezvous timed out after ${o.joinTimeoutMs ?? 60_000} ms: missing rank(s) ${missing.join(', ')} of world size ${W}`, {
      where: hostPort(o.masterAddr, o.masterPort),
      hint: 'check that every rank started, uses the same MASTER_ADDR/MASTER_PORT, WORLD_SIZE and secret',
    });
  }
  tableSent = true;
  for (let r = 1; r < W; r++) links[r]!.sendControl(MsgType.Table, { listen: table });
  await Promise.all(
    links.map(async (l, r) => {
      if (!l) return;
      const c = await l.nextControl(Math.max(1, deadline - Date.now()), 'Ready');
      if (c.type !== MsgType.Ready) throw new ParallelError(`rank ${r} sent message type ${c.type} instead of Ready`);
    }),
  );
  for (const l of links) l?.sendControl(MsgType.Go, {});
}

async function formAsWorker(
  o: GroupOptions,
  lo: LinkOptions,
  wss: WebSocketServer,
  links: (PeerLink | null)[],
  log: (m: string) => void,
  deadline: number,
  left: () => number,
): Promise<void> {
  const W = o.worldSize;
  const me = o.rank;
  let formed = false;
  // Lower ranks (other than 0) dial us; accept exactly those.
  let lowerDone!: () => void;
  const lowersJoined = new Promise<void>((r) => (lowerDone = r));
  const lowers = () => links.filter((l, r) => l && r > 0 && r < me).length;
  if (me === 1) lowerDone();
  wss.on('connection', (ws, req) => {
    const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const link = new PeerLink(ws, lo, remote);
    const claim = (r: number, w: number): string | null => {
      if (formed) return 'the group is already formed';
      if (w !== W) return `world size mismatch: rank ${r} says ${w}, rank ${me} has ${W}`;
      if (r <= 0 || r >= me) return `rank ${r} may not dial rank ${me} (only ranks 1..${me - 1} do)`;
      if (links[r]) return `rank ${r} is already connected (duplicate rank)`;
      links[r] = link;
      return null;
    };
    acceptHandshake(link, o.secret, Math.min(10_000, left()), claim).then(
      ({ rank }) => {
        link.activate(rank);
        if (lowers() === me - 1) lowerDone();
      },
      (e) => log(errorMessage(e)),
    );
  });
  const masterUrl = `ws://${hostPort(o.masterAddr, o.masterPort)}`;
  const { link: m, localAddress } = await dial(masterUrl, lo, deadline);
  links[0] = m;
  const port = (wss.address() as net.AddressInfo).port;
  const adv = o.advertiseHost ?? (localAddress.startsWith('::ffff:') ? localAddress.slice(7) : localAddress);
  await dialHandshake(m, o.secret, left(), { rank: me, worldSize: W, listen: hostPort(adv, port) }, `rank 0 at ${masterUrl}`);
  m.activate(0);
  const t = await m.nextControl(left(), 'the address table (are all ranks started?)');
  if (t.type !== MsgType.Table || !Array.isArray(t.body.listen)) throw new ParallelError(`rank 0 sent message type ${t.type} instead of the address table`);
  const table = t.body.listen as string[];
  await Promise.all(
    [...Array(W).keys()]
      .filter((j) => j > me)
      .map(async (j) => {
        const url = `ws://${table[j]}`;
        const { link } = await dial(url, lo, deadline);
        links[j] = link;
        await dialHandshake(link, o.secret, left(), { rank: me, worldSize: W }, `rank ${j} at ${url}`);
        link.activate(j);
      }),
  );
  const ok = await Promise.race([lowersJoined.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), left()).unref())]);
  if (!ok) {
    const missing = [...Array(me).keys()].filter((r) => r > 0 && !links[r]);
    throw new ParallelError(`rank ${me}: mesh incomplete at the join timeout: no link from rank(s) ${missing.join(', ')}`);
  }
  m.sendControl(MsgType.Ready, {});
  const go = await m.nextControl(left(), 'Go');
  if (go.type !== MsgType.Go) throw new ParallelError(`rank 0 sent message type ${go.type} instead of Go`);
  formed = true;
  log(`joined world of ${W} ranks`);
}
