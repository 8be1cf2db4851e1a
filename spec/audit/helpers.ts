/** Tiny trainings on the synthetic source for the audit and report specs (trained once per process). */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { selectBackend } from '../../core/backend';
import { loadTrainConfig } from '../../trainer/config';
import { runTraining } from '../../trainer/run';

export const BACKEND = (process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm';

const BASE = [
  'data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=1',
  'optim.schedule={type: wsd, warmupSteps: 2, decaySteps: 4}',
];

/** 12 steps, checkpoints every 4, parameter hashes recorded at steps 5, 10 and 12. */
export const HONEST = [...BASE, 'train.steps=12', 'train.checkpointEvery=4', 'train.paramHashEvery=5'];

/** 16 steps with a gradient blown up 1e4x at data step 11 (spike detection as in spikes.spec). */
export const SPIKY = [
  ...BASE, 'train.steps=16', 'train.checkpointEvery=4', 'train.paramHashEvery=5',
  'stability.spike={window: 10, k: 6, minSteps: 5, snapshotEvery: 4, maxRollbacks: 2}',
  'train.injectGradScale=[{dataStep: 11, scale: 1e4}]', 'stability.routerRatioEvery=3',
];

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-audit-'));
const runs = new Map<string, Promise<string>>();
process.on('exit', () => fs.rmSync(root, { recursive: true, force: true }));

export function tmpDir(name: string): string {
  return fs.mkdtempSync(path.join(root, `${name}-`));
}

/** Trains a run with these overrides of configs/tiny.yaml once, and returns its directory. */
export function trainedRun(name: string, sets: string[]): Promise<string> {
  let p = runs.get(name);
  if (!p) {
    p = (async () => {
      const info = await selectBackend(BACKEND);
      const dir = path.join(root, name);
      const { config, raw } = loadTrainConfig('configs/tiny.yaml', sets);
      const r = await runTraining({ outDir: dir, config, rawConfig: raw, backend: info.name });
      r.trainer.dispose();
      return dir;
    })();
    runs.set(name, p);
  }
  return p;
}

/** A copy of a run directory (the `latest` link stays relative). */
export function copyRun(src: string, name: string): string {
  const dst = path.join(tmpDir(name), 'run');
  fs.cpSync(src, dst, { recursive: true, verbatimSymlinks: true });
  return dst;
}

/** Runs the compiled `moecat` CLI (this build's cli/main.js). */
export function moecat(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const main = path.join(__dirname, '..', '..', 'cli', 'main.js');
  const r = spawnSync(process.execPath, [main, ...args], { encoding: 'utf8', env: { ...process.env, MOECAT_BACKEND: BACKEND }, timeout: 170000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
