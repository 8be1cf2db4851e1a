/**
 * `moecat export --format hf`: a verified checkpoint -> a Hugging Face longcat_flash directory
 *   config.json               HF field names + the `moecat` block (docs/interop.md)
 *   model.safetensors         or model-0000i-of-0000n.safetensors + model.safetensors.index.json
 *   generation_config.json
 *   tokenizer.json, tokenizer_config.json (chat template)   when the checkpoint has a tokenizer
 * Every file is a pure function of the checkpoint's weights, biases, config.yaml and tokenizer
 * (no step, time or path), so export -> import -> export gives the same bytes. The directory is
 * written beside `out` and renamed into place when complete.
 */
import fs from 'fs';
import path from 'path';
import YAML from 'yaml';
import { loadCheckpoint } from '../../core/checkpoint';
import { CheckpointError } from '../../core/errors';
import { fsyncDir, writeFileDurable } from '../../core/fsutil';
import { latentNormEps, parseModelConfig } from '../config';
import { decodeModelWeights } from '../weights';
import { HF_LATENT_NORM_EPS, toHfConfig } from './config';
import { DEFAULT_MAX_SHARD_BYTES, encodeShards } from './shards';
import { generationConfig, hfSpecialIds, specialTokenIds, tokenizerConfig } from './tokenizerFiles';
import { toHfTensors } from './weights';

export interface ExportResult {
  dir: string;
  checkpoint: string;
  files: string[];
  tensors: number;
  /** Things the user should know (e.g. a latent-norm eps transformers does not honour). */
  notes: string[];
}

const json = (v: unknown) => JSON.stringify(v, null, 2) + '\n';

/** Writes the HF directory for checkpoint `checkpoint` (dir, `latest` or run dir) at `out`. */
export function exportHf(o: { checkpoint: string; out: string; maxShardBytes?: number; force?: boolean }): ExportResult {
  const out = path.resolve(o.out);
  if (fs.existsSync(out) && !o.force) throw new CheckpointError('the output directory exists', { where: out, hint: 'choose another --out or pass --force to replace it' });
  const ck = loadCheckpoint(o.checkpoint);
  const cfgBuf = ck.files.get('config.yaml');
  const wBuf = ck.files.get('model.safetensors');
  if (!cfgBuf || !wBuf) throw new CheckpointError('checkpoint lacks config.yaml or model.safetensors', { where: ck.dir });
  const raw = YAML.parse(cfgBuf.toString('utf8')) as Record<string, unknown>;
  const model = parseModelConfig(raw.model, `${ck.dir}/config.yaml: model`);
  const { values, biases } = decodeModelWeights(wBuf, model, `${ck.dir}/model.safetensors`);

  // The training sections travel in the moecat block; lineage (initFrom) does not.
  const training: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) if (k !== 'model' && k !== 'initFrom') training[k] = v;
  const tokText = ck.files.get('tokenizer.json')?.toString('utf8') ?? null;
  const special = tokText ? specialTokenIds(tokText, `${ck.dir}/tokenizer.json`) : null;
  const notes: string[] = [];
  if (latentNormEps(model) !== HF_LATENT_NORM_EPS) {
    notes.push(
      `the MLA latent norms use eps ${latentNormEps(model)}; transformers' longcat_flash uses ${HF_LATENT_NORM_EPS}, so its logits differ slightly (set model.attention.latentNormEps: ${HF_LATENT_NORM_EPS} for an exact match)`,
    );
  }

  const files = new Map<string, Buffer | string>();
  files.set('config.json', json(toHfConfig(model, training, special ? hfSpecialIds(special) : null)));
  files.set('generation_config.json', json(generationConfig(special ? hfSpecialIds(special) : null)));
  if (tokText) {
    files.set('tokenizer.json', tokText);
    if (special) files.set('tokenizer_config.json', json(tokenizerConfig(special, model.maxSeqLen)));
    else notes.push('tokenizer.json has no moecat special tokens; tokenizer_config.json (chat template) not written');
  } else notes.push('the checkpoint has no tokenizer.json; none exported');
  const tensors = toHfTensors(model, values, biases);
  for (const [name, buf] of encodeShards(tensors, o.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES)) files.set(name, buf);

  const tmp = `${out}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  for (const [name, data] of files) writeFileDurable(path.join(tmp, name), data);
  fsyncDir(tmp);
  // Replacing (--force): the old directory moves aside first and goes only once the new one is in place.
  const old = fs.existsSync(out) ? `${out}.old-${process.pid}` : null;
  if (old) fs.renameSync(out, old);
  fs.renameSync(tmp, out);
  fsyncDir(path.dirname(out));
  if (old) fs.rmSync(old, { recursive: true, force: true });
  return { dir: out, checkpoint: ck.dir, files: [...files.keys()].sort(), tensors: tensors.size, notes };
}
