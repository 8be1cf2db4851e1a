/**
 * Builds the trainer's DataSource from the config: a prepared corpus read through the mixture
 * loader (data/loader), or the synthetic source. A saved loader state from a checkpoint is
 * checked against the data and mixture before training resumes.
 */
import * as path from 'path';
import { ConfigError } from '../core/errors';
import { MixtureLoader, LoaderState } from '../data/loader';
import { parseMixture } from '../data/mixture';
import { openSftLoader, sftTokenizerPath } from '../data/sft';
import { TrainConfig } from './config';
import { DataSource, MarkovSource } from './data';
import { Batch } from '../data/batch';

export class MixtureSource implements DataSource {
  constructor(readonly loader: MixtureLoader, private readonly dir: string) {}

  microbatch(step: number, mb: number): Batch {
    return this.loader.microbatch(step, mb);
  }

  state(): unknown {
    return this.loader.state();
  }

  tokenizerJson(): string | null {
    return this.loader.data.tokenizerJson;
  }

  describe(): string {
    const srcs = Object.keys(this.loader.data.manifest.sources).join(', ');
    return `${this.dir} (${srcs}; ${this.loader.stages.length} stage${this.loader.stages.length === 1 ? '' : 's'})`;
  }
}

export function makeDataSource(cfg: TrainConfig, savedState?: unknown): DataSource {
  if (cfg.data.sft) {
    const sft = cfg.data.sft;
    const tokenizerPath = sftTokenizerPath({ tokenizer: sft.tokenizer, dataDir: cfg.data.dir, initFrom: cfg.initFrom?.checkpoint });
    return openSftLoader({ file: sft.file, tokenizerPath, seed: cfg.seed, seqLen: cfg.data.seqLen, microBatchSize: cfg.data.microBatchSize, microBatches: cfg.data.microBatches, valFraction: sft.valFraction, modelVocab: cfg.model.vocabSize }, savedState);
  }
  if (cfg.data.synthetic || !cfg.data.dir) return new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen);
  if (cfg.data.mixture === undefined) throw new ConfigError('data.mixture is required with data.dir', { where: 'data.mixture' });
  const mixture = parseMixture(cfg.data.mixture, 'data.mixture');
  const dir = path.resolve(cfg.data.dir);
  const loader = new MixtureLoader({
    dataDir: dir,
    mixture,
    seed: cfg.seed,
    microBatchSize: cfg.data.microBatchSize,
    microBatches: cfg.data.microBatches,
    seqLen: cfg.data.seqLen,
    crossDocMask: cfg.data.crossDocMask,
  });
  const vocab = loader.data.manifest.tokenizer.vocabSize;
  if (vocab > cfg.model.vocabSize) {
    throw new ConfigError(`the prepared data's tokenizer has ${vocab} tokens but model.vocabSize is ${cfg.model.vocabSize}`, { where: 'model.vocabSize', hint: `set model.vocabSize to at least ${vocab}` });
  }
  for (const st of loader.stages) {
    if (st.seqLen > cfg.model.maxSeqLen) throw new ConfigError(`stage '${st.name}' uses seqLen ${st.seqLen} above model.maxSeqLen ${cfg.model.maxSeqLen}`, { where: 'data.mixture.stages' });
  }
  if (savedState !== undefined) loader.loadState(savedState as LoaderState);
  return new MixtureSource(loader, cfg.data.dir);
}
