/**
 * Coordinate check for docs/scaling.md: residual-stream RMS after each layer, after a few Adam
 * steps at one LR, at widths 32..256, under the transfer rule and under plain SP; the mean over
 * three seeds (the per-seed values are kept in the JSON).
 *   node dist/scripts/experiments/scaling/coord.js <out.json> [steps]
 */
import * as fs from 'fs';
import { selectBackend } from '../../../core/backend';
import { loadTrainConfig } from '../../../trainer/config';
import { coordinateCheck, widthSets } from '../../../trainer/transfer';

const PROXY = ['optim.schedule={type: constant}', 'optim.lr=0.01', 'data.seqLen=16', 'data.microBatchSize=4', 'train.steps=100'];
const WIDTHS = [32, 64, 128, 256];
const SEEDS = [1, 2, 3];

async function main(): Promise<void> {
  const [out, stepsArg] = process.argv.slice(2);
  const steps = Number(stepsArg ?? 4);
  await selectBackend((process.env.MOECAT_BACKEND as 'wasm') ?? 'wasm');
  const file = 'scripts/experiments/scaling/proxy.yaml';
  const proxy = loadTrainConfig(file, PROXY).config;
  const rms: Record<string, number[][]> = { transfer: [], sp: [] };
  const perSeed: Record<string, number[][][]> = { transfer: [], sp: [] };
  for (const rule of ['transfer', 'sp'] as const) {
    for (const d of WIDTHS) {
      const runs: number[][] = [];
      for (const seed of SEEDS) {
        const { config } = loadTrainConfig(file, [...PROXY, `seed=${seed}`, ...widthSets(proxy.model, d, rule)]);
        runs.push(await coordinateCheck(config, steps));
      }
      perSeed[rule].push(runs);
      rms[rule].push(runs[0].map((_, j) => runs.reduce((a, r) => a + r[j], 0) / runs.length));
      process.stderr.write(`${rule} d=${d}: ${rms[rule][rms[rule].length - 1].map((x) => x.toFixed(4)).join(' ')}\n`);
    }
  }
  fs.writeFileSync(out, JSON.stringify({ widths: WIDTHS, steps, lr: 0.01, seeds: SEEDS, rms, perSeed }, null, 2) + '\n');
}
void main();
