/**
 * Mutual HMAC-SHA256 challenge/response on a fresh PeerLink (DESIGN.md section 5: "a shared
 * token, HMAC challenge, never sent in clear").
 *
 *   acceptor -> dialer : Hello  { nonce: Na }
 *   dialer   -> accept : Auth   { rank, worldSize, nonce: Nd, mac: HMAC(s, "client"|Na|rank|W|Nd), listen? }
 *   acceptor -> dialer : AuthOk { mac: HMAC(s, "server"|Nd|rank|W|Na) }   or   Refuse { reason }
 *
 * Fresh random nonces on both sides make each proof single-use; the acceptor's proof binds the
 * dialer's nonce, so a dialer also knows it reached a holder of the secret, not an impostor.
 */
import * as crypto from 'crypto';
import { ParallelError } from '../core/errors';
import { MsgType } from './frames';
import { PeerLink } from './transport';

const LABEL = 'moecat/parallel/v1';

function mac(secret: string, role: 'client' | 'server', a: string, rank: number, worldSize: number, b: string): string {
  return crypto.createHmac('sha256', secret).update(`${LABEL}|${role}|${a}|${rank}|${worldSize}|${b}`).digest('hex');
}

function sameHex(a: unknown, b: string): boolean {
  if (typeof a !== 'string' || a.length !== b.length) return false;
  return crypto.timingSafeEqual(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export interface Joiner {
  rank: number;
  /** "host:port" where the dialer accepts mesh connections (rendezvous only). */
  listen?: string;
}

/**
 * Acceptor side. `claim(rank, worldSize)` runs synchronously once the HMAC checks out and returns
 * a refusal reason, or null after reserving the rank (so two racing joiners cannot both win).
 */
export async function acceptHandshake(
  link: PeerLink,
  secret: string,
  timeoutMs: number,
  claim: (rank: number, worldSize: number) => string | null,
): Promise<Joiner> {
  const na = crypto.randomBytes(32).toString('hex');
  link.sendControl(MsgType.Hello, { nonce: na });
  const c = await link.nextControl(timeoutMs, 'Auth');
  if (c.type !== MsgType.Auth) throw refuse(link, `expected Auth, got message type ${c.type}`);
  const { rank, worldSize, nonce, mac: got, listen } = c.body;
  if (!Number.isInteger(rank) || !Number.isInteger(worldSize) || typeof nonce !== 'string' || nonce.length < 32) {
    throw refuse(link, 'malformed Auth message');
  }
  const r = rank as number;
  const w = worldSize as number;
  if (!sameHex(got, mac(secret, 'client', na, r, w, nonce))) {
    throw refuse(link, `authentication failed for claimed rank ${r}: HMAC mismatch (wrong MOECAT_SECRET?)`);
  }
  const why = claim(r, w);
  if (why) throw refuse(link, why);
  link.sendControl(MsgType.AuthOk, { mac: mac(secret, 'server', nonce, r, w, na) });
  return { rank: r, listen: typeof listen === 'string' ? listen : undefined };
}

function refuse(link: PeerLink, reason: string): ParallelError {
  link.sendControl(MsgType.Refuse, { reason });
  void link.close();
  return new ParallelError(`refused ${link.remote}: ${reason}`);
}

/** Dialer side: proves the secret, checks the acceptor's proof, surfaces a refusal's reason. */
export async function dialHandshake(
  link: PeerLink,
  secret: string,
  timeoutMs: number,
  me: { rank: number; worldSize: number; listen?: string },
  target: string,
): Promise<void> {
  const hello = await link.nextControl(timeoutMs, 'Hello');
  if (hello.type !== MsgType.Hello || typeof hello.body.nonce !== 'string') {
    throw new ParallelError(`${target} did not start the moecat handshake`);
  }
  const na = hello.body.nonce;
  const nd = crypto.randomBytes(32).toString('hex');
  link.sendControl(MsgType.Auth, {
    rank: me.rank,
    worldSize: me.worldSize,
    nonce: nd,
    mac: mac(secret, 'client', na, me.rank, me.worldSize, nd),
    listen: me.listen,
  });
  const c = await link.nextControl(timeoutMs, 'AuthOk');
  if (c.type === MsgType.Refuse) {
    throw new ParallelError(`rank ${me.rank}: ${target} refused to let us join: ${String(c.body.reason)}`);
  }
  if (c.type !== MsgType.AuthOk || !sameHex(c.body.mac, mac(secret, 'server', nd, me.rank, me.worldSize, na))) {
    throw new ParallelError(`rank ${me.rank}: ${target} failed to prove the shared secret (wrong MOECAT_SECRET or not a moecat rank)`);
  }
}
