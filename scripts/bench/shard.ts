/**
 * Sharded training state (`npm run bench -- shard`): configs/small.yaml (synthetic data, 8
 * microbatches of 1 x 16 tokens, 2 steps) trained by W = 1, 2, 4 and 8 ranks on this machine
 * under `parallel.shard: none` and `optimizer`. Each rank reports (train --memory-report) the
 * bytes it holds in host arrays — flat weights, per-microbatch gradient buffers, the reduced
 * gradient, the Adam moments — its peak RSS, and the payload bytes it sent per step. Rows give
 * the largest figure over the ranks. Every run must end on the W = 1 param_hash.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..', '..', '..');
const cli = path.join(root, 'dist', 'cli', 'main.js');
const backend = process.env.MOECAT_BACKEND ?? 'wasm';
const M = 8;
const sets = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=1', `data.microBatches=${M}`, 'train.steps=2', 'train.checkpointEvery=0', 'optim.schedule={type: constant}'];
const MiB = 2 ** 20;

interface Report {
  params_bytes: number;
  grad_buffer_bytes: number;
  reduced_grad_bytes: number;
  optimizer_bytes: number;
  peak_rss_bytes: number;
  bytes_sent_per_step: number;
}

function run(W: number, mode: string, dir: string): { hash: string; reports: Report[] } {
  const args = ['train', '--config', 'configs/small.yaml', '--out', path.join(dir, 'run'), ...[...sets, `parallel.shard=${mode}`].flatMap((s) => ['--set', s]), '--backend', backend, '--memory-report', path.join(dir, 'mem')];
  const r = spawnSync(process.execPath, W === 1 ? [cli, ...args] : [cli, 'launch', '--nproc', String(W), '--', ...args], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`W=${W} ${mode} failed:\n${r.stderr}`);
  const hash = /param_hash ([0-9a-f]{64})/.exec(r.stdout)?.[1] ?? '';
  const reports = Array.from({ length: W }, (_, k) => JSON.parse(fs.readFileSync(path.join(dir, `mem.rank${k}.json`), 'utf8')) as Report);
  return { hash, reports };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-shardbench-'));
try {
  let reference = '';
  let optAtOne = 0;
  for (const mode of ['none', 'optimizer']) {
    for (const W of [1, 2, 4, 8]) {
      const dir = path.join(tmp, `${mode}-${W}`);
      fs.mkdirSync(dir);
      const { hash, reports } = run(W, mode, dir);
      if (!reference) reference = hash;
      const max = (k: keyof Report) => Math.max(...reports.map((x) => x[k]));
      if (W === 1 && mode === 'none') optAtOne = max('optimizer_bytes');
      process.stdout.write(
        JSON.stringify({
          bench: 'bytes per rank (small, 6.85M params, fp32; largest rank)',
          backend,
          shard: mode,
          world_size: W,
          params_MiB: +(max('params_bytes') / MiB).toFixed(2),
          grad_buffers_MiB: +(max('grad_buffer_bytes') / MiB).toFixed(2),
          reduced_grad_MiB: +(max('reduced_grad_bytes') / MiB).toFixed(2),
          optimizer_MiB: +(max('optimizer_bytes') / MiB).toFixed(2),
          optimizer_times_W_over_W1: +((max('optimizer_bytes') * W) / optAtOne).toFixed(4),
          peak_rss_MiB: Math.round(max('peak_rss_bytes') / MiB),
          sent_MiB_per_step: +(max('bytes_sent_per_step') / MiB).toFixed(2),
          same_param_hash: hash === reference,
        }) + '\n',
      );
    }
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
