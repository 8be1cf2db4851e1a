/**
 * Sharded training state (`npm run bench -- shard`): configs/small.yaml (synthetic data, 8
 * microbatches of 1 x 16 tokens, 3 steps) trained by W = 1, 2, 4 and 8 ranks on this machine
 * under every `parallel.shard` mode the config validator accepts, and under expert parallelism
 * (`--expert-parallel`, shard none) with the experts sharded (`ep`, the default) and replicated
 * (`ep-replicated`, --no-ep-shard-experts: the layout before expert sharding); EP needs W > 1.
 * Each rank reports (train --memory-report) the bytes it holds in host arrays — flat weights,
 * per-microbatch gradient buffers, the reduced gradient, the Adam moments, the experts' share
 * of the weights — its peak RSS at the end of step 2 (before the last step's param_hash gather
 * and the final checkpoint, which rank 0 assembles whole) and at exit, and the payload bytes it
 * sent in step 2 (no hash, no checkpoint): data-parallel collectives and expert all-to-alls.
 * Rows give the largest figure over the ranks; `host_state_MiB` is the largest rank's sum of
 * the four host figures. Empty cells: not applicable to the row's mode.
 *
 * `sharded_state` is what the mode divides among the ranks: the Adam moments (`optimizer`), the
 * experts' weights + reduced gradient + moments (`ep`), weights + reduced gradient + moments
 * (any other mode, e.g. `full`); `sharded_times_W_over_W1` is W x that figure over the same
 * state at W = 1 (1: exactly ∝ 1/W; W: replicated), and `within_10pct` checks the goal for the
 * modes that divide it (not `none` and `ep-replicated`, which replicate it by design).
 * `same_param_hash` compares with the W = 1 `none` run (EP is bitwise only with one microbatch
 * per rank, M = W = 8); `same_as_replicated_experts` compares `ep` with `ep-replicated` at W.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { z } from 'zod';
import { trainConfigSchema } from '../../trainer/config';

const root = path.resolve(__dirname, '..', '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const backend = process.env.MOECAT_BACKEND ?? 'wasm';
const M = 8;
const STEPS = 3;
/** The step whose traffic and peak RSS are reported (1-based): neither the first nor the last. */
const MEASURED = 2;
const sets = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=1', `data.microBatches=${M}`, `train.steps=${STEPS}`, 'train.checkpointEvery=0', 'train.paramHashEvery=1000', 'optim.schedule={type: constant}'];
const MiB = 2 ** 20;

interface Report {
  params_bytes: number;
  grad_buffer_bytes: number;
  reduced_grad_bytes: number;
  optimizer_bytes: number;
  expert_params_bytes: number;
  experts_sharded: boolean;
  peak_rss_bytes: number;
  peak_rss_by_step: number[];
  dp_bytes_sent_by_step: number[];
  ep_bytes_sent_by_step: number[];
}

/** The values of `parallel.shard` that trainer/config.ts accepts (so new modes get rows). */
function shardModes(): string[] {
  const unwrap = (t: z.ZodTypeAny): z.ZodTypeAny => {
    for (;;) {
      if (t instanceof z.ZodEffects) t = t.innerType();
      else if (t instanceof z.ZodDefault) t = t.removeDefault();
      else if (t instanceof z.ZodOptional) t = t.unwrap();
      else return t;
    }
  };
  const parallel = unwrap((unwrap(trainConfigSchema) as z.AnyZodObject).shape.parallel as z.ZodTypeAny) as z.AnyZodObject;
  const shard = unwrap(parallel.shape.shard as z.ZodTypeAny);
  if (!(shard instanceof z.ZodEnum)) throw new Error('trainer/config.ts: parallel.shard is no longer an enum; update scripts/bench/shard.ts');
  return [...(shard.options as string[])];
}

interface Mode {
  name: string;
  shard: string;
  flags: string[];
  worlds: number[];
  /** Bytes of the state this mode divides among the ranks. */
  sharded: (r: Report) => number;
  shardedName: string;
}

function modes(): Mode[] {
  const expertState = (r: Report) => r.expert_params_bytes * 4; // weights, reduced gradient, two moments
  const out: Mode[] = shardModes().map((shard) =>
    shard === 'none' || shard === 'optimizer'
      ? { name: shard, shard, flags: [], worlds: [1, 2, 4, 8], sharded: (r: Report) => r.optimizer_bytes, shardedName: 'Adam moments' }
      : { name: shard, shard, flags: [], worlds: [1, 2, 4, 8], sharded: (r: Report) => r.params_bytes + r.reduced_grad_bytes + r.optimizer_bytes, shardedName: 'weights + reduced grad + moments' },
  );
  out.push({ name: 'ep-replicated', shard: 'none', flags: ['--expert-parallel', '--no-ep-shard-experts'], worlds: [2, 4, 8], sharded: expertState, shardedName: 'expert weights + reduced grad + moments' });
  out.push({ name: 'ep', shard: 'none', flags: ['--expert-parallel'], worlds: [2, 4, 8], sharded: expertState, shardedName: 'expert weights + reduced grad + moments' });
  return out;
}

function run(W: number, mode: Mode, dir: string): { hash: string; reports: Report[] } {
  const args = ['train', '--config', 'configs/small.yaml', '--out', path.join(dir, 'run'), ...mode.flags, ...[...sets, `parallel.shard=${mode.shard}`].flatMap((s) => ['--set', s]), '--backend', backend, '--memory-report', path.join(dir, 'mem')];
  const r = spawnSync(process.execPath, W === 1 ? [cli, ...args] : [cli, 'launch', '--nproc', String(W), '--', ...args], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`W=${W} ${mode.name} failed:\n${r.stderr}`);
  const hash = /param_hash ([0-9a-f]{64})/.exec(r.stdout)?.[1] ?? '';
  const reports = Array.from({ length: W }, (_, k) => JSON.parse(fs.readFileSync(path.join(dir, `mem.rank${k}.json`), 'utf8')) as Report);
  return { hash, reports };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-shardbench-'));
try {
  let reference = '';
  let atOne: Report | null = null;
  const epReplicated = new Map<number, string>();
  for (const mode of modes()) {
    for (const W of mode.worlds) {
      const dir = path.join(tmp, `${mode.name}-${W}`);
      fs.mkdirSync(dir);
      const { hash, reports } = run(W, mode, dir);
      if (!reference) reference = hash;
      atOne ??= reports[0];
      if (mode.name === 'ep-replicated') epReplicated.set(W, hash);
      const max = (f: (r: Report) => number) => Math.max(...reports.map(f));
      const ratio = (max(mode.sharded) * W) / mode.sharded(atOne);
      const divides = mode.name !== 'none' && mode.name !== 'ep-replicated';
      process.stdout.write(
        JSON.stringify({
          bench: 'bytes per rank and traffic per step (small, 6.85M params, fp32; largest rank)',
          backend,
          mode: mode.name,
          world_size: W,
          params_MiB: +(max((r) => r.params_bytes) / MiB).toFixed(2),
          grad_buffers_MiB: +(max((r) => r.grad_buffer_bytes) / MiB).toFixed(2),
          reduced_grad_MiB: +(max((r) => r.reduced_grad_bytes) / MiB).toFixed(2),
          optimizer_MiB: +(max((r) => r.optimizer_bytes) / MiB).toFixed(2),
          expert_weights_MiB: +(max((r) => r.expert_params_bytes) / MiB).toFixed(2),
          sharded_state: mode.shardedName,
          sharded_state_MiB: +(max(mode.sharded) / MiB).toFixed(2),
          sharded_times_W_over_W1: +ratio.toFixed(4),
          within_10pct: divides ? Math.abs(ratio - 1) <= 0.1 : '',
          host_state_MiB: +(max((r) => r.params_bytes + r.grad_buffer_bytes + r.reduced_grad_bytes + r.optimizer_bytes) / MiB).toFixed(2),
          peak_rss_MiB: Math.round(max((r) => r.peak_rss_by_step[MEASURED - 1]) / MiB),
          peak_rss_exit_MiB: Math.round(max((r) => r.peak_rss_bytes) / MiB),
          dp_sent_MiB_per_step: +(max((r) => r.dp_bytes_sent_by_step[MEASURED - 1]) / MiB).toFixed(2),
          ep_sent_MiB_per_step: +(max((r) => r.ep_bytes_sent_by_step[MEASURED - 1]) / MiB).toFixed(3),
          same_param_hash: hash === reference,
          same_as_replicated_experts: mode.name === 'ep' ? hash === epReplicated.get(W) : '',
        }) + '\n',
      );
    }
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
