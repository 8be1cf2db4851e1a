/**
 * Builds the trainer's DataSource from the config: a prepared corpus with a mixture schedule
 * (data/loader), or the synthetic source.
 */
import { TrainConfig } from './config';
import { DataSource, MarkovSource } from './data';

export function makeDataSource(cfg: TrainConfig, _savedState?: unknown): DataSource {
  if (cfg.data.synthetic || !cfg.data.dir) return new MarkovSource(cfg.seed, cfg.model.vocabSize, cfg.data.microBatchSize, cfg.data.seqLen);
  throw new Error('prepared-corpus data source not wired yet');
}
