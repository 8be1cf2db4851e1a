/**
 * `moecat import --hf DIR --out RUN`: a Hugging Face longcat_flash directory -> a moecat run
 * directory with one checkpoint at step 0 (model.safetensors, config.yaml, tokenizer.json when
 * given, state.json with the param_hash), which `train --init-from`, `generate` and `serve`
 * accept. No optimizer state is written: an imported model starts a new run (--init-from),
 * it is not resumed. Unsupported config fields, tensors, dtypes and shapes are refused with one
 * line naming them, before anything is written.
 */
import fs from 'fs';
import path from 'path';
import YAML from 'yaml';
import { writeCheckpoint } from '../../core/checkpoint';
import { CheckpointError, ConfigError } from '../../core/errors';
import { paramHash, paramSpecs } from '../params';
import { encodeModelWeights } from '../weights';
import { ModelConfig } from '../config';
import { fromHfConfig } from './config';
import { readShards } from './shards';
import { fromHfTensors } from './weights';

export interface ImportResult {
  runDir: string;
  checkpoint: string;
  config: ModelConfig;
  /** True when config.json carried a moecat block (training sections restored). */
  moecatBlock: boolean;
  tokenizer: boolean;
  paramHash: string;
}

/** A runnable training config for a checkpoint that came without one (a released model). */
function placeholderTraining(c: ModelConfig): Record<string, unknown> {
  return {
    seed: 0,
    data: { synthetic: { kind: 'markov' }, seqLen: Math.min(c.maxSeqLen, 128), microBatchSize: 1 },
    optim: { lr: 0.0001 },
    train: { steps: 1 },
  };
}

function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new CheckpointError('cannot read the file', { where: file, hint: 'point --hf at a Hugging Face model directory' });
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(`invalid JSON (${(e as Error).message})`, { where: file });
  }
}

/**
 * `checkTraining` validates the config.yaml object before anything is written (the CLI passes
 * trainer's parser; model/ does not import trainer/). `checkTokenizer` does the same for
 * tokenizer.json.
 */
export function importHf(o: {
  hf: string;
  out: string;
  checkTraining?: (raw: Record<string, unknown>, where: string) => void;
  checkTokenizer?: (text: string, where: string) => void;
}): ImportResult {
  const dir = path.resolve(o.hf);
  const runDir = path.resolve(o.out);
  if (fs.existsSync(path.join(runDir, 'checkpoints'))) {
    throw new CheckpointError('the run directory already has checkpoints', { where: runDir, hint: 'import into a new --out directory' });
  }
  const cfgFile = path.join(dir, 'config.json');
  const imported = fromHfConfig(readJson(cfgFile), cfgFile);
  const c = imported.model;
  const { values, biases } = fromHfTensors(c, readShards(dir), dir);

  const training = imported.training ?? placeholderTraining(c);
  const raw: Record<string, unknown> = {};
  if ('seed' in training) raw.seed = training.seed;
  raw.model = imported.modelRaw;
  for (const [k, v] of Object.entries(training)) if (k !== 'seed') raw[k] = v;
  o.checkTraining?.(raw, `${cfgFile}: moecat.training`);

  const tokFile = path.join(dir, 'tokenizer.json');
  const tokText = fs.existsSync(tokFile) ? fs.readFileSync(tokFile, 'utf8') : null;
  if (tokText !== null) o.checkTokenizer?.(tokText, tokFile);

  const specs = paramSpecs(c);
  const hash = paramHash(specs, values);
  const files: Record<string, Buffer | string> = {
    'model.safetensors': encodeModelWeights(specs, values, biases, { step: '0' }),
    'config.yaml': YAML.stringify(raw),
  };
  if (tokText !== null) files['tokenizer.json'] = tokText;
  const state = {
    step: 0,
    data_step: 0,
    tokens: 0,
    seed: typeof raw.seed === 'number' ? raw.seed : 0,
    adam_t: 0,
    expert_biases: biases.map((b) => Array.from(b)),
    skipped_data_steps: [],
    spikes: [],
    spike_detector: { loss: [], grad: [] },
    balance_scale: 1,
    data: null,
    world_size: 1,
    backend: 'none',
    param_hash: hash,
    trainer_format: 1,
    imported_from: { format: 'hf-longcat_flash', dir },
  };
  const ckDir = writeCheckpoint(runDir, 0, files, state, { keepLast: 1 });
  return { runDir, checkpoint: ckDir, config: c, moecatBlock: imported.training !== null, tokenizer: tokText !== null, paramHash: hash };
}
