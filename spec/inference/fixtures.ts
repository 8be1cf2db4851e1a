/**
 * Test fixtures for the inference specs: a small random-init MoE model as a ServingModel, a
 * small trained byte-level BPE tokenizer, and a checkpoint
 * written through core/checkpoint so loading verifies checksums like `moecat serve` does.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import YAML from 'yaml';
import { ModelConfigInput, parseModelConfig, ModelConfig } from '../../model/config';
import { initParams, paramSpecs, ParamStore } from '../../model/params';
import { initialBiases } from '../../model/transformer';
import { encodeModelWeights } from '../../model/weights';
import { writeCheckpoint } from '../../core/checkpoint';
import { ServingModel } from '../../inference/loadModel';
import { Tokenizer } from '../../data/tokenizer';

export const tinyModelConfig: ModelConfigInput = {
  vocabSize: 272,
  dModel: 32,
  nLayers: 2,
  layerType: 'scmoe',
  attention: { type: 'mla', nHeads: 2, qLoraRank: 16, kvLoraRank: 16, nopeHeadDim: 8, ropeHeadDim: 4, vHeadDim: 8 },
  ffnHidden: 48,
  moe: { nExperts: 4, nZeroExperts: 2, topK: 2, expertHidden: 24, routedScalingFactor: 2, targetFfnPerToken: 1 },
  maxSeqLen: 96,
  // A larger init than training uses, so greedy decoding has clear winners (no near-ties).
  initStd: 0.5,
};

export function makeModel(raw: ModelConfigInput = tinyModelConfig, seed = 7): ServingModel {
  const config = parseModelConfig(raw);
  return {
    dir: '(memory)',
    step: 0,
    config,
    store: new ParamStore(paramSpecs(config), initParams(config, seed)),
    biases: initialBiases(config),
    tokenizerJson: null,
  };
}

/** A real byte-level BPE tokenizer (data/tokenizer.ts) with a few merges, trained once. */
let trained: Tokenizer | null = null;
export function testTokenizer(): Tokenizer {
  trained ??= Tokenizer.train(
    ['the quick brown fox jumps over the lazy dog; the model says hello there, then stops. ', 'Mixture of experts: zero experts cost nothing.'],
    { vocabSize: 272 },
  );
  return trained;
}

export function tmpDir(prefix = 'moecat-inf-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Writes a checkpoint of `m` (weights + config + tokenizer) and returns the run directory. */
export function writeModelCheckpoint(runDir: string, config: ModelConfig, seed: number, tokenizerJson: string, step = 10): string {
  const specs = paramSpecs(config);
  writeCheckpoint(
    runDir,
    step,
    {
      'model.safetensors': encodeModelWeights(specs, initParams(config, seed), initialBiases(config)),
      'config.yaml': YAML.stringify({ model: config }),
      'tokenizer.json': tokenizerJson,
    },
    { step },
  );
  return runDir;
}
