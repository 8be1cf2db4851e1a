/**
 * Loads a checkpoint for serving: verifies every checksum (core/checkpoint), reads the model
 * config from config.yaml, weights and expert biases from model.safetensors, and the tokenizer.
 * Inference never imports trainer/ (DESIGN.md section 1).
 */
import YAML from 'yaml';
import { loadCheckpoint } from '../core/checkpoint';
import { CheckpointError } from '../core/errors';
import { parseModelConfig, ModelConfig } from '../model/config';
import { paramSpecs, ParamStore } from '../model/params';
import { decodeModelWeights } from '../model/weights';

export interface ServingModel {
  dir: string;
  step: number;
  config: ModelConfig;
  store: ParamStore;
  biases: Float32Array[];
  tokenizerJson: string | null;
}

export function loadServingModel(pathLike: string): ServingModel {
  const ck = loadCheckpoint(pathLike);
  const cfgBuf = ck.files.get('config.yaml');
  const wBuf = ck.files.get('model.safetensors');
  if (!cfgBuf || !wBuf) throw new CheckpointError('checkpoint lacks config.yaml or model.safetensors', { where: ck.dir });
  const raw = YAML.parse(cfgBuf.toString('utf8')) as { model?: unknown };
  const config = parseModelConfig(raw.model, `${ck.dir}/config.yaml: model`);
  const { values, biases } = decodeModelWeights(wBuf, config, `${ck.dir}/model.safetensors`);
  const tok = ck.files.get('tokenizer.json');
  return {
    dir: ck.dir,
    step: Number((ck.state as { step?: number }).step ?? 0),
    config,
    store: new ParamStore(paramSpecs(config), values),
    biases,
    tokenizerJson: tok ? tok.toString('utf8') : null,
  };
}
