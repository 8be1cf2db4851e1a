/**
 * `--init-from`: a new run (mid-training, long-context extension, SFT) that starts from a
 * parent checkpoint's weights and expert biases with its own data, mixture and schedule. The
 * step counter restarts at 0; Adam moments are reset unless `optimizer: keep`. The lineage
 * (parent dir, step, param_hash) goes into every state.json of the child run.
 *
 * The model must be the parent's: every model key must match, except `maxSeqLen` and
 * `ropeBase`, which may grow (long-context extension raises both; RoPE has no parameters, so
 * the weights carry over unchanged).
 */
import { ConfigError, CheckpointError } from '../core/errors';
import { ModelConfig } from '../model/config';
import { flatLayout, views } from '../model/flatParams';
import { paramHash, paramSpecs } from '../model/params';
import { newAdamWState } from './adamw';
import { loadTrainerCheckpoint, LoadedTraining } from './checkpointing';
import { TrainConfig } from './config';
import { TrainerState } from './trainer';

export interface Lineage {
  /** The parent checkpoint directory (resolved). */
  parent: string;
  parent_step: number;
  parent_param_hash: string;
  optimizer: 'reset' | 'keep';
  /** The parent's own lineage, when it was itself initialised from a checkpoint. */
  parent_lineage?: unknown;
}

/** Model keys a child may raise above the parent's. */
export const GROWABLE_KEYS = new Set(['maxSeqLen', 'ropeBase']);

function flatKeys(v: unknown, prefix: string, out: Map<string, unknown>): void {
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flatKeys(x, prefix ? `${prefix}.${k}` : k, out);
  } else out.set(prefix, v);
}

/** Refuses a child model config that differs from the parent's, naming the first differing key. */
export function checkModelCompatible(parent: ModelConfig, child: ModelConfig, parentWhere = 'the parent checkpoint'): void {
  const p = new Map<string, unknown>();
  const c = new Map<string, unknown>();
  flatKeys(parent, '', p);
  flatKeys(child, '', c);
  const keys = [...new Set([...p.keys(), ...c.keys()])].sort();
  for (const k of keys) {
    const a = p.get(k);
    const b = c.get(k);
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    if (GROWABLE_KEYS.has(k) && typeof a === 'number' && typeof b === 'number') {
      if (b > a) continue;
      throw new ConfigError(`model.${k} is ${b}, below the parent's ${a}`, { where: `model.${k}`, hint: `--init-from lets model.${k} grow (long-context extension), never shrink` });
    }
    throw new ConfigError(`model.${k} is ${JSON.stringify(b)} here but ${JSON.stringify(a)} in ${parentWhere}`, {
      where: `model.${k}`,
      hint: '--init-from needs the parent\'s model config; only maxSeqLen and ropeBase may differ (grow)',
    });
  }
}

export interface InitFromResult {
  state: TrainerState;
  lineage: Lineage;
  parent: LoadedTraining;
}

/** Loads the parent checkpoint (checksums verified) into a step-0 TrainerState for `cfg`. */
export function initFromCheckpoint(cfg: TrainConfig, o: { checkpoint: string; optimizer?: 'reset' | 'keep' }): InitFromResult {
  const optimizer = o.optimizer ?? 'reset';
  const parent = loadTrainerCheckpoint(o.checkpoint, { withOptimizer: optimizer === 'keep' });
  checkModelCompatible(parent.config.model, cfg.model, parent.dir);
  const layout = flatLayout(paramSpecs(cfg.model));
  if (layout.total !== parent.state.params.length) {
    throw new CheckpointError(`the parent has ${parent.state.params.length} parameters, the model here ${layout.total}`, { where: parent.dir });
  }
  // The weights must be exactly the parent's: recompute the hash the parent recorded.
  const hash = paramHash(layout.specs, views(layout, parent.state.params));
  if (parent.saved.param_hash && parent.saved.param_hash !== hash) {
    throw new CheckpointError(`weights hash ${hash} differs from the recorded param_hash ${parent.saved.param_hash}`, { where: parent.dir });
  }
  const s = parent.state;
  const state: TrainerState = {
    step: 0,
    dataStep: 0,
    tokens: 0,
    params: s.params,
    opt: optimizer === 'keep' ? s.opt : newAdamWState(layout.total),
    biases: s.biases,
    skipped: [],
    spikes: [],
    detector: { loss: [], grad: [] },
    balanceScale: 1,
  };
  const lineage: Lineage = { parent: parent.dir, parent_step: s.step, parent_param_hash: hash, optimizer };
  if (parent.saved.lineage) lineage.parent_lineage = parent.saved.lineage;
  return { state, lineage, parent };
}
