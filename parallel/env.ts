/**
 * Where this process sits in the group, learned from the variables that existing schedulers set
 * (DESIGN.md section 5): moecat places nothing itself. A pure function of an env object (cli/
 * passes process.env), in priority order:
 *   1. explicit options;
 *   2. torchrun-style RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (LOCAL_RANK if present);
 *   3. Slurm: SLURM_PROCID / SLURM_NTASKS, master = MASTER_ADDR or the first host of
 *      SLURM_JOB_NODELIST (SLURM_NODELIST), SLURM_LOCALID as local rank;
 *   4. Kubernetes indexed Job: JOB_COMPLETION_INDEX with WORLD_SIZE and MASTER_ADDR (typically
 *      the headless-service name of index 0);
 *   5. a world of one.
 * Individual explicit fields override whatever the environment said.
 */
import { ParallelError } from '../core/errors';

export type EnvSource = 'options' | 'torchrun' | 'slurm' | 'kubernetes' | 'single';

export interface ParallelEnv {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  localRank: number;
  /** MOECAT_SECRET, if set. */
  secret?: string;
  source: EnvSource;
}

export type EnvVars = Record<string, string | undefined>;

export const DEFAULT_MASTER_PORT = 29500;

function int(env: EnvVars, name: string, min: number): number {
  const v = env[name];
  if (v === undefined || !/^\s*\d+\s*$/.test(v)) throw new ParallelError(`${name}=${JSON.stringify(v)} is not a non-negative integer`, { where: `env ${name}` });
  const n = Number(v);
  if (n < min) throw new ParallelError(`${name}=${n} must be at least ${min}`, { where: `env ${name}` });
  return n;
}

function port(env: EnvVars): number {
  if (env.MASTER_PORT === undefined) return DEFAULT_MASTER_PORT;
  const p = int(env, 'MASTER_PORT', 1);
  if (p > 65535) throw new ParallelError(`MASTER_PORT=${p} is not a TCP port`, { where: 'env MASTER_PORT' });
  return p;
}

function present(env: EnvVars, name: string): boolean {
  return env[name] !== undefined && env[name] !== '';
}

/** Discovers rank, world size and master from `explicit` and the scheduler variables in `env`. */
export function discoverEnv(env: EnvVars, explicit: Partial<Omit<ParallelEnv, 'source'>> = {}): ParallelEnv {
  const found = fromEnv(env);
  const out: ParallelEnv = { ...found, ...stripUndefined(explicit) };
  if (explicit.rank !== undefined && explicit.worldSize !== undefined) out.source = 'options';
  if (!Number.isInteger(out.worldSize) || out.worldSize < 1) throw new ParallelError(`world size ${out.worldSize} must be a positive integer`);
  if (!Number.isInteger(out.rank) || out.rank < 0 || out.rank >= out.worldSize) {
    throw new ParallelError(`rank ${out.rank} is out of range for world size ${out.worldSize} (from ${out.source})`);
  }
  return out;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function fromEnv(env: EnvVars): ParallelEnv {
  const secret = env.MOECAT_SECRET || undefined;
  if (present(env, 'RANK')) {
    if (!present(env, 'WORLD_SIZE')) throw new ParallelError('RANK is set but WORLD_SIZE is not', { where: 'env WORLD_SIZE' });
    return {
      rank: int(env, 'RANK', 0),
      worldSize: int(env, 'WORLD_SIZE', 1),
      masterAddr: env.MASTER_ADDR || '127.0.0.1',
      masterPort: port(env),
      localRank: present(env, 'LOCAL_RANK') ? int(env, 'LOCAL_RANK', 0) : int(env, 'RANK', 0),
      secret,
      source: 'torchrun',
    };
  }
  if (present(env, 'SLURM_PROCID')) {
    const nodelist = env.SLURM_JOB_NODELIST || env.SLURM_NODELIST;
    const masterAddr = env.MASTER_ADDR || (nodelist ? firstHost(nodelist) : undefined);
    if (!masterAddr) throw new ParallelError('Slurm job without SLURM_JOB_NODELIST or MASTER_ADDR: cannot find the master', { where: 'env SLURM_JOB_NODELIST' });
    return {
      rank: int(env, 'SLURM_PROCID', 0),
      worldSize: present(env, 'SLURM_NTASKS') ? int(env, 'SLURM_NTASKS', 1) : int(env, 'SLURM_NPROCS', 1),
      masterAddr,
      masterPort: port(env),
      localRank: present(env, 'SLURM_LOCALID') ? int(env, 'SLURM_LOCALID', 0) : 0,
      secret,
      source: 'slurm',
    };
  }
  if (present(env, 'JOB_COMPLETION_INDEX')) {
    if (!present(env, 'WORLD_SIZE')) throw new ParallelError('indexed Job: set WORLD_SIZE to the Job completions count', { where: 'env WORLD_SIZE' });
    if (!present(env, 'MASTER_ADDR')) throw new ParallelError('indexed Job: set MASTER_ADDR to the address of index 0 (e.g. its headless-service DNS name)', { where: 'env MASTER_ADDR' });
    return {
      rank: int(env, 'JOB_COMPLETION_INDEX', 0),
      worldSize: int(env, 'WORLD_SIZE', 1),
      masterAddr: env.MASTER_ADDR!,
      masterPort: port(env),
      localRank: 0,
      secret,
      source: 'kubernetes',
    };
  }
  return { rank: 0, worldSize: 1, masterAddr: env.MASTER_ADDR || '127.0.0.1', masterPort: port(env), localRank: 0, secret, source: 'single' };
}

/** The first host of a Slurm nodelist, e.g. "node[01-04,07],gpu1" -> "node01". */
export function firstHost(nodelist: string): string {
  const hosts = expandNodelist(nodelist, 1);
  if (hosts.length === 0) throw new ParallelError(`empty Slurm nodelist ${JSON.stringify(nodelist)}`, { where: 'env SLURM_JOB_NODELIST' });
  return hosts[0];
}

/**
 * Expands a Slurm hostlist ("a[1-3,5]-ib,b[01-02]" -> a1-ib, a2-ib, a3-ib, a5-ib, b01, b02).
 * Zero padding follows the range's first bound; several bracket groups form a product.
 * Stops after `limit` hosts so a huge list cannot exhaust memory.
 */
export function expandNodelist(list: string, limit = 100_000): string[] {
  const out: string[] = [];
  for (const entry of splitTopLevel(list)) {
    for (const h of expandEntry(entry, list)) {
      out.push(h);
      if (out.length >= limit) return out;
    }
  }
  return out;
}

function splitTopLevel(list: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of list.trim()) {
    if (ch === '[') depth++;
    if (ch === ']') depth--;
    if (depth < 0 || depth > 1) throw new ParallelError(`unbalanced brackets in nodelist ${JSON.stringify(list)}`, { where: 'env SLURM_JOB_NODELIST' });
    if (ch === ',' && depth === 0) {
      if (cur) parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  if (depth !== 0) throw new ParallelError(`unbalanced brackets in nodelist ${JSON.stringify(list)}`, { where: 'env SLURM_JOB_NODELIST' });
  if (cur) parts.push(cur);
  return parts;
}

function* expandEntry(entry: string, list: string): Generator<string> {
  const open = entry.indexOf('[');
  if (open < 0) {
    yield entry;
    return;
  }
  const close = entry.indexOf(']', open);
  const prefix = entry.slice(0, open);
  const rest = entry.slice(close + 1);
  for (const range of entry.slice(open + 1, close).split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(range.trim());
    if (!m) throw new ParallelError(`bad range ${JSON.stringify(range)} in nodelist ${JSON.stringify(list)}`, { where: 'env SLURM_JOB_NODELIST' });
    const lo = Number(m[1]);
    const hi = m[2] === undefined ? lo : Number(m[2]);
    if (hi < lo) throw new ParallelError(`descending range ${JSON.stringify(range)} in nodelist ${JSON.stringify(list)}`, { where: 'env SLURM_JOB_NODELIST' });
    for (let i = lo; i <= hi; i++) {
      const num = String(i).padStart(m[1].length, '0');
      for (const tail of expandEntry(rest, list)) yield prefix + num + tail;
    }
  }
}
