/**
 * Single-machine launcher (DESIGN.md section 5): starts `nproc` copies of a Node script with
 * torchrun-style RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT and a fresh shared
 * MOECAT_SECRET, prefixes their output with "[rank r]", and treats the group as one unit: if any
 * rank fails, the others are stopped and (while restarts remain) the whole group starts again
 * on a new port. Resuming from the latest checkpoint is the trainer's job; MOECAT_RESTART tells
 * it which attempt this is. Multi-node placement is left to Slurm / Kubernetes (env.ts).
 */
import { ChildProcess, spawn } from 'child_process';
import * as crypto from 'crypto';
import * as net from 'net';
import * as os from 'os';
import * as readline from 'readline';
import { Writable } from 'stream';
import { ParallelError } from '../core/errors';

export interface LaunchOptions {
  nproc: number;
  /** Script and its arguments, run as `node [...execArgv] ...argv`. */
  argv: string[];
  /** Base environment for the ranks (cli/ passes process.env; nothing here reads it itself). */
  env: Record<string, string | undefined>;
  /** Whole-group restarts allowed after a failure (default 0). */
  maxRestarts?: number;
  onRestart?: (attempt: number, reason: string) => void;
  masterAddr?: string;
  execArgv?: string[];
  /** Where prefixed output goes (default process.stdout / process.stderr). */
  stdout?: Writable;
  stderr?: Writable;
  /** Grace between SIGTERM and SIGKILL when stopping the surviving ranks (default 3 s). */
  killGraceMs?: number;
  /** Aborting stops every rank and resolves with 130. */
  signal?: AbortSignal;
}

/** A TCP port that was free a moment ago (the master binds it right after). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

function exitCode(code: number | null, sig: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const n = sig ? (os.constants.signals as Record<string, number>)[sig] : undefined;
  return 128 + (n ?? 1);
}

function pipePrefixed(from: NodeJS.ReadableStream | null, to: Writable, prefix: string): void {
  if (!from) return;
  readline.createInterface({ input: from, crlfDelay: Infinity }).on('line', (line) => to.write(`${prefix} ${line}\n`));
}

/** Runs one attempt; resolves with 0, or the first failing rank's exit status. */
async function runOnce(o: LaunchOptions, attempt: number, secret: string): Promise<{ code: number; reason: string }> {
  const host = o.masterAddr ?? '127.0.0.1';
  const port = await freePort(host);
  const children: ChildProcess[] = [];
  const exited: Promise<{ rank: number; code: number }>[] = [];
  for (let r = 0; r < o.nproc; r++) {
    const child = spawn(process.execPath, [...(o.execArgv ?? []), ...o.argv], {
      env: {
        ...o.env,
        RANK: String(r),
        LOCAL_RANK: String(r),
        WORLD_SIZE: String(o.nproc),
        MASTER_ADDR: host,
        MASTER_PORT: String(port),
        MOECAT_SECRET: secret,
        MOECAT_RESTART: String(attempt),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    pipePrefixed(child.stdout, o.stdout ?? process.stdout, `[rank ${r}]`);
    pipePrefixed(child.stderr, o.stderr ?? process.stderr, `[rank ${r}]`);
    children.push(child);
    exited.push(
      new Promise((resolve) => {
        child.once('error', () => resolve({ rank: r, code: 127 }));
        child.once('exit', (code, sig) => resolve({ rank: r, code: exitCode(code, sig) }));
      }),
    );
  }
  const stopAll = async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    const t = setTimeout(() => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }, o.killGraceMs ?? 3000);
    await Promise.all(exited);
    clearTimeout(t);
  };
  const onAbort = () => void stopAll();
  o.signal?.addEventListener('abort', onAbort);
  try {
    // The first non-zero exit decides; all-zero means success.
    const pending = new Set(exited.map((_, i) => i));
    while (pending.size > 0) {
      const { rank, code } = await Promise.race([...pending].map((i) => exited[i]));
      pending.delete(rank);
      if (o.signal?.aborted) {
        await stopAll();
        return { code: 130, reason: 'aborted' };
      }
      if (code !== 0) {
        await stopAll();
        return { code, reason: `rank ${rank} exited with status ${code}` };
      }
    }
    return { code: 0, reason: '' };
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
}

/** Launches `nproc` ranks locally, restarting the whole group on failure; resolves with the exit status. */
export async function launchLocal(o: LaunchOptions): Promise<number> {
  if (!Number.isInteger(o.nproc) || o.nproc < 1) throw new ParallelError(`nproc must be a positive integer, got ${o.nproc}`);
  if (o.argv.length === 0) throw new ParallelError('launchLocal: argv must name the script to run');
  // One secret per launch; each attempt gets a fresh port, so a straggler of a failed attempt
  // cannot join the next one.
  const secret = o.env.MOECAT_SECRET || crypto.randomBytes(32).toString('hex');
  const maxRestarts = o.maxRestarts ?? 0;
  for (let attempt = 0; ; attempt++) {
    const { code, reason } = await runOnce(o, attempt, secret);
    if (code === 0 || code === 130 || attempt >= maxRestarts || o.signal?.aborted) return code;
    o.onRestart?.(attempt + 1, reason);
  }
}
