/**
 * Spawns fixture ranks as real child processes for the parallel specs and guarantees cleanup:
 * every child is tracked and `killAll` (called from `after` hooks) SIGKILLs the survivors.
 */
import { ChildProcess, spawn } from 'child_process';
import * as net from 'net';
import * as path from 'path';

export const RANK_SCRIPT = path.join(__dirname, '..', 'fixtures', 'parallel-rank.js');

const live = new Set<ChildProcess>();

export interface RankRun {
  child: ChildProcess;
  /** Resolves when the process exits: its status and the parsed JSON lines it printed. */
  done: Promise<{ code: number | null; lines: Record<string, unknown>[]; stderr: string }>;
  /** Resolves on the first JSON line. */
  firstLine: Promise<Record<string, unknown>>;
}

export function spawnRank(mode: string, env: Record<string, string>, script = RANK_SCRIPT): RankRun {
  const child = spawn(process.execPath, [script, mode], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  const lines: Record<string, unknown>[] = [];
  let stderr = '';
  let buf = '';
  let first!: (v: Record<string, unknown>) => void;
  const firstLine = new Promise<Record<string, unknown>>((r) => (first = r));
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        const v = JSON.parse(line) as Record<string, unknown>;
        lines.push(v);
        first(v);
      } catch {
        /* not ours */
      }
    }
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<{ code: number | null; lines: Record<string, unknown>[]; stderr: string }>((resolve) =>
    child.once('exit', (code) => {
      live.delete(child);
      resolve({ code, lines, stderr });
    }),
  );
  return { child, done, firstLine };
}

export function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

export function rankEnv(rank: number, W: number, port: number, secret: string, extra: Record<string, string> = {}): Record<string, string> {
  return { RANK: String(rank), WORLD_SIZE: String(W), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), MOECAT_SECRET: secret, ...extra };
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => (t = setTimeout(() => rej(new Error(`timed out after ${ms} ms: ${what}`)), ms)))]).finally(() => clearTimeout(t));
}
