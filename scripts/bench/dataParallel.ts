/**
 * Data-parallel speed-up (`npm run bench -- dataParallel`): the same global batch (tiny config,
 * synthetic source, 4 microbatches) trained by one process and by `moecat launch --nproc 2`,
 * median step time after 2 warm-up steps, from rank 0's metrics.jsonl. Both runs must end on
 * the same param_hash (the determinism contract), which is reported too.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { readMetrics } from '../../trainer/metrics';

const root = path.resolve(__dirname, '..', '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const backend = process.env.MOECAT_BACKEND ?? 'wasm';
const sets = ['data.synthetic={}', 'data.seqLen=64', 'data.microBatchSize=4', 'data.microBatches=4', 'train.steps=8', 'train.checkpointEvery=0', 'optim.schedule={type: constant}'].flatMap((s) => ['--set', s]);

function run(world: number, out: string): { stepMs: number; hash: string } {
  const args = ['train', '--config', 'configs/tiny.yaml', '--out', out, ...sets, '--backend', backend];
  const r = spawnSync(process.execPath, world === 1 ? [cli, ...args] : [cli, 'launch', '--nproc', String(world), '--', ...args], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`world ${world} failed:\n${r.stderr}`);
  const hash = /param_hash ([0-9a-f]{64})/.exec(r.stdout)?.[1] ?? '';
  const ms = readMetrics(path.join(out, 'metrics.jsonl')).filter((m) => m.step > 2).map((m) => m.step_ms).sort((a, b) => a - b);
  return { stepMs: ms[ms.length >> 1], hash };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-dpbench-'));
try {
  const one = run(1, path.join(tmp, 'w1'));
  const two = run(2, path.join(tmp, 'w2'));
  const tokens = 4 * 4 * 64;
  for (const [w, r] of [[1, one], [2, two]] as const) {
    process.stdout.write(JSON.stringify({ bench: 'data-parallel speed-up (tiny, 1024 tokens/step)', backend, world_size: w, step_ms: r.stepMs, tokens_per_s: Math.round((tokens / r.stepMs) * 1000), speedup: +(one.stepMs / r.stepMs).toFixed(2), cores: os.cpus().length, same_param_hash: r.hash === one.hash }) + '\n');
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
