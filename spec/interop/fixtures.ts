/**
 * A small longcat_flash-shaped model for the interop specs: a checkpoint written by the trainer
 * (with a tokenizer, so the chat-template files are exported too).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { makeDataSource } from '../../trainer/dataSource';
import { saveTrainerCheckpoint } from '../../trainer/checkpointing';
import { Trainer } from '../../trainer/trainer';
import { Tokenizer } from '../../data/tokenizer';

/** Every model field set explicitly; the latent-norm eps is transformers' 1e-6. */
export const INTEROP_SETS = [
  'seed=7',
  'model={vocabSize: 300, dModel: 32, nLayers: 2, layerType: scmoe, ffnHidden: 48, maxSeqLen: 64, ropeBase: 10000, rmsEps: 0.00001, initStd: 0.05,' +
    ' attention: {type: mla, nHeads: 2, qLoraRank: 16, kvLoraRank: 12, nopeHeadDim: 8, ropeHeadDim: 8, vHeadDim: 8, latentNormEps: 0.000001},' +
    ' moe: {nExperts: 4, nZeroExperts: 2, topK: 2, expertHidden: 16, routedScalingFactor: 2.0, targetFfnPerToken: 1.5, biasUpdateRate: 0.01, balanceAlpha: 0.01, expertGroups: 2}}',
  'data={synthetic: {kind: markov}, seqLen: 16, microBatchSize: 2, microBatches: 2}',
  'optim={lr: 0.003, weightDecay: 0.1, clipNorm: 1.0, schedule: {type: wsd, warmupSteps: 5, decaySteps: 10, minLrRatio: 0.1}}',
  'train={steps: 30, checkpointEvery: 0, paramHashEvery: 10}',
  'stability={spike: {enabled: false}}',
];

export function interopConfig(extra: string[] = []): { config: TrainConfig; raw: Record<string, unknown> } {
  return loadTrainConfig('configs/tiny.yaml', [...INTEROP_SETS, ...extra]);
}

export function tmpDir(tag: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `moecat-${tag}-`));
}

/** A byte-level tokenizer trained on a few sentences (specials included). */
export function smallTokenizer(): Tokenizer {
  const text = 'the cat sat on the mat. the dog ran to the cat. a mixture of experts routes tokens.';
  return Tokenizer.train([text, text.toUpperCase()], { vocabSize: 290 });
}

/**
 * Writes a checkpoint of `config` after `steps` training steps (0: the initial weights) into
 * `runDir`; returns the trainer (caller disposes it).
 */
export async function writeCheckpointAfter(runDir: string, steps: number, cfg = interopConfig()): Promise<Trainer> {
  const data = makeDataSource(cfg.config);
  const t = new Trainer(cfg.config, data);
  for (let i = 0; i < steps; i++) await t.step();
  saveTrainerCheckpoint(runDir, t, { rawConfig: cfg.raw, backend: 'test', keepLast: 3, tokenizerJson: smallTokenizer().toJSON() });
  return t;
}
