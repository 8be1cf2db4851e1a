/**
 * Sharded checkpoints for `parallel.shard: optimizer` and `full` on W > 1 ranks (docs/ARCHITECTURE.md,
 * "Sharded training state"). Each rank writes its slice of the Adam moments as
 * `optimizer-rank-RRRRR-of-WWWWW.safetensors` (exp_avg, exp_avg_sq over elements [lo, hi) of
 * the flat layout) into a staging directory `checkpoints/.shards-step-XXXXXXXX-<pid of rank 0>`,
 * durably; after a collective that every rank reaches only once its shard is on disk, rank 0
 * writes the checkpoint through core/checkpoint, moving the shards in. state.json, the commit
 * record, is the index: it lists every shard file with its sha256 and size, and
 * `optimizer_shards` says which element range each holds. A rank that dies mid-write stops
 * the collective, so nothing is committed and the previous `latest` stays; the next writer
 * removes a dead writer's staging directory. Ranks must share the run directory's filesystem.
 * loadTrainerCheckpoint reassembles the moments from the shards, so a resume on any world size
 * (and audit, verify, export) reads these checkpoints.
 */
import * as fs from 'fs';
import * as path from 'path';
import { CHECKPOINTS_DIR, MovedFile, stepDirName, writeCheckpoint } from '../core/checkpoint';
import { CheckpointError } from '../core/errors';
import { writeFileDurable } from '../core/fsutil';
import { decodeSafetensors, encodeSafetensors } from '../core/safetensors';
import { assembleCheckpoint } from './checkpointing';
import { Trainer } from './trainer';

export interface OptimizerShardIndex {
  world_size: number;
  total: number;
  /** [lo, hi) element range of each shard file, in rank order. */
  ranges: [number, number][];
  files: string[];
}

export function shardFileName(rank: number, W: number): string {
  const p = (x: number) => String(x).padStart(5, '0');
  return `optimizer-rank-${p(rank)}-of-${p(W)}.safetensors`;
}

/** Test and drill hook: MOECAT_FAULT_SHARD_KILL=<step>:<rank> SIGKILLs that rank halfway through writing its shard (first attempt only). */
function faultDrill(step: number, rank: number, file: string, bytes: Buffer): void {
  const spec = process.env.MOECAT_FAULT_SHARD_KILL;
  if (!spec || (process.env.MOECAT_RESTART ?? '0') !== '0') return;
  const [s, r] = spec.split(':').map(Number);
  if (s !== step || r !== rank) return;
  fs.writeFileSync(file, bytes.subarray(0, bytes.length >> 1));
  process.stderr.write(`fault drill: rank ${rank} killed while writing its optimizer shard at step ${step}\n`);
  process.kill(process.pid, 'SIGKILL');
}

/**
 * Every rank calls this at the same step. Returns the checkpoint directory on the writing rank
 * (rank 0), null elsewhere.
 */
export async function saveShardedCheckpoint(
  runDir: string,
  trainer: Trainer,
  extras: { rawConfig: unknown; backend: string; keepLast: number; tokenizerJson: string | null; state?: Record<string, unknown> },
  isWriter: boolean,
): Promise<string | null> {
  const { dp, shard, layout } = trainer;
  if (!shard) throw new CheckpointError('saveShardedCheckpoint: the trainer does not shard its optimizer state (parallel.shard is none)');
  const W = dp.worldSize;
  // parallel.shard: full: the writer gathers the weights unit by unit (the others drop each unit).
  const params = await trainer.gatheredParams(isWriter);
  const hash = trainer.full ? await trainer.paramHashGathered() : isWriter ? trainer.paramHash() : '';
  const s = { ...trainer.checkpointState(), params: params ?? new Float32Array(0) };
  // Rank 0's pid names the staging directory, so a dead writer's leftovers are recognisable.
  const pidOf0 = new Float64Array(W);
  if (dp.rank === 0) pidOf0[0] = process.pid;
  const pid = (await dp.allReduceExact(pidOf0))[0];
  const ckDir = path.resolve(runDir, CHECKPOINTS_DIR);
  const stage = path.join(ckDir, `.shards-${stepDirName(s.step)}-${pid}`);
  fs.mkdirSync(stage, { recursive: true });
  const name = shardFileName(dp.rank, W);
  const file = path.join(stage, name);
  const bytes = encodeSafetensors(
    new Map([
      ['exp_avg', { dtype: 'F32' as const, shape: [s.opt.m.length], data: s.opt.m }],
      ['exp_avg_sq', { dtype: 'F32' as const, shape: [s.opt.v.length], data: s.opt.v }],
    ]),
    { adam_t: String(s.opt.t), lo: String(shard.lo), hi: String(shard.hi), total: String(layout.total), layout: 'moecat-flat-spec-order' },
  );
  faultDrill(s.step, dp.rank, file, bytes);
  fs.rmSync(file, { force: true });
  writeFileDurable(file, bytes);
  // Every shard is durable once this returns; the ranges travel with it.
  const ranges = new Float64Array(2 * W);
  ranges[2 * dp.rank] = shard.lo;
  ranges[2 * dp.rank + 1] = shard.hi;
  const all = await dp.allReduceExact(ranges);
  if (!isWriter) return null;
  const { files, state } = assembleCheckpoint(layout, s, {
    rawConfig: extras.rawConfig,
    tokenizerJson: extras.tokenizerJson,
    seed: trainer.cfg.seed,
    data: trainer.data.state(),
    worldSize: W,
    backend: extras.backend,
    paramHash: hash,
    state: extras.state,
    withOptimizer: false,
  });
  const index: OptimizerShardIndex = { world_size: W, total: layout.total, ranges: [], files: [] };
  const out: Record<string, Buffer | string | MovedFile> = { ...files };
  for (let r = 0; r < W; r++) {
    const n = shardFileName(r, W);
    const from = path.join(stage, n);
    if (!fs.existsSync(from)) {
      throw new CheckpointError(`rank ${r} wrote its optimizer shard, but rank 0 cannot see it`, {
        where: from,
        hint: 'with parallel.shard: optimizer every rank must write the run directory on one shared filesystem',
      });
    }
    index.ranges.push([all[2 * r], all[2 * r + 1]]);
    index.files.push(n);
    out[n] = { moveFrom: from };
  }
  const dir = writeCheckpoint(runDir, s.step, out, { ...state, optimizer_shards: index }, { keepLast: extras.keepLast });
  fs.rmSync(stage, { recursive: true, force: true });
  return dir;
}

/** Full-length Adam moments from a sharded checkpoint's files (any world size reads them). */
export function assembleOptimizerShards(index: unknown, files: Map<string, Buffer>, total: number, where: string): { t: number; m: Float32Array; v: Float32Array } {
  const bad = (what: string) => new CheckpointError(`optimizer_shards: ${what}`, { where, hint: 'the checkpoint is damaged or not from this moecat; use an earlier one' });
  const ix = index as OptimizerShardIndex;
  if (typeof ix !== 'object' || ix === null || !Array.isArray(ix.ranges) || !Array.isArray(ix.files) || ix.ranges.length !== ix.files.length || ix.files.length === 0) throw bad('malformed index');
  if (ix.total !== total) throw bad(`the shards cover ${ix.total} elements, the model has ${total}`);
  const m = new Float32Array(total);
  const v = new Float32Array(total);
  let at = 0;
  let t = -1;
  ix.files.forEach((name, r) => {
    const [lo, hi] = ix.ranges[r];
    if (lo !== at || !(hi >= lo) || hi > total) throw bad(`shard ${r} holds [${lo}, ${hi}), expected it to start at ${at}`);
    const buf = files.get(name);
    if (!buf) throw bad(`${name} is not among the checkpoint's files`);
    const o = decodeSafetensors(buf, `${where}/${name}`);
    const a = o.tensors.get('exp_avg');
    const b = o.tensors.get('exp_avg_sq');
    if (!a || !b || a.data.length !== hi - lo || b.data.length !== hi - lo) throw bad(`${name} does not hold ${hi - lo} elements of exp_avg and exp_avg_sq`);
    const st = Number(o.metadata.adam_t);
    if (t >= 0 && st !== t) throw bad(`${name} is at Adam step ${st}, shard 0 at ${t}`);
    t = st;
    m.set(a.data as Float32Array, lo);
    v.set(b.data as Float32Array, lo);
    at = hi;
  });
  if (at !== total) throw bad(`the shards end at element ${at} of ${total}`);
  return { t, m, v };
}
