/**
 * moecat as a library: train from a config, load a checkpoint, generate text. The CLI (cli/) is
 * built on the same modules; everything here is typed and throws the typed errors of
 * core/errors (ConfigError, CheckpointError, ...), whose messages are one line.
 *
 *   import { selectBackend, train, loadModel, generate } from 'moecat';
 *   await selectBackend('auto');
 *   const run = await train({ config: 'configs/tiny.yaml', out: 'runs/tiny', set: ['train.steps=20'] });
 *   const model = loadModel('runs/tiny');
 *   const { text } = await generate(model, 'Once upon', { maxTokens: 32 });
 *   model.dispose();
 */
import { activeBackend } from './core/backend';
import { ConfigError } from './core/errors';
import { Engine, GenerationResult } from './inference/engine';
import { loadForServing } from './inference/engineLoad';
import { ServingModel } from './inference/loadModel';
import { loadTrainConfig, TrainConfig } from './trainer/config';
import { StepMetrics } from './trainer/metrics';
import { runTraining } from './trainer/run';

export { selectBackend, activeBackend, BACKENDS } from './core/backend';
export type { BackendInfo, BackendName, BackendChoice } from './core/backend';
export { MoecatError, ConfigError, DataError, CheckpointError, BackendError, ParallelError, TrainingError } from './core/errors';
export { loadTrainConfig, parseTrainConfig } from './trainer/config';
export type { TrainConfig } from './trainer/config';
export type { StepMetrics } from './trainer/metrics';
export type { GenerationResult } from './inference/engine';
export { auditRun } from './trainer/audit';
export type { AuditResult } from './trainer/audit';
export { verifyRun } from './trainer/verify';
export type { VerifyResult } from './trainer/verify';

export interface TrainOptions {
  /** A YAML config file (with `set` overrides), or an already validated config. */
  config?: string | { config: TrainConfig; raw: Record<string, unknown> };
  /** `key=value` overrides of the config file, as `moecat train --set`. */
  set?: string[];
  /** Run directory (metrics.jsonl, config.yaml, checkpoints/). */
  out: string;
  /** Continue the run in `out` from its latest checkpoint instead of starting one. */
  resume?: boolean;
  /** Stop after this many total steps. */
  maxSteps?: number;
  onStep?: (m: StepMetrics) => void;
}

export interface TrainResult {
  /** The last step's metrics (null when the run was already at its target). */
  last: StepMetrics | null;
  /** Steps done in all (resumed ones included). */
  step: number;
  /** Parameter hash of the final weights (what `moecat audit` compares). */
  paramHash: string;
  /** Checkpoint directories written by this call. */
  checkpoints: string[];
}

function backendName(): string {
  const b = activeBackend();
  if (!b) throw new ConfigError('no compute backend selected', { where: 'moecat', hint: "call selectBackend('auto') first" });
  return b.name;
}

/** Trains (or resumes) a run in one process; the same run `moecat train` would write. */
export async function train(o: TrainOptions): Promise<TrainResult> {
  const backend = backendName();
  let loaded: { config: TrainConfig; raw: Record<string, unknown> } | undefined;
  if (typeof o.config === 'string') loaded = loadTrainConfig(o.config, o.set ?? []);
  else loaded = o.config;
  if (!loaded && !o.resume) throw new ConfigError('give a config to start a run, or resume: true', { where: 'train' });
  const r = await runTraining({ outDir: o.out, config: loaded?.config, rawConfig: loaded?.raw, resume: o.resume, maxSteps: o.maxSteps, backend, onStep: o.onStep && ((m) => o.onStep!(m)) });
  try {
    return { last: r.last, step: r.trainer.state.step, paramHash: r.trainer.paramHash(), checkpoints: r.checkpoints };
  } finally {
    r.trainer.dispose();
  }
}

/** A checkpoint loaded for inference, with its tokenizer. */
export interface LoadedModel {
  /** The checkpoint directory that was loaded (after resolving `latest` or a run directory). */
  dir: string;
  step: number;
  config: ServingModel['config'];
  /** Releases the weights' tensors. */
  dispose(): void;
  /** @internal */
  readonly serving: ReturnType<typeof loadForServing>;
}

/** Loads and verifies a checkpoint: a step directory, its `latest` link, or a run directory. */
export function loadModel(checkpoint: string): LoadedModel {
  backendName();
  const serving = loadForServing(checkpoint);
  return { dir: serving.model.dir, step: serving.model.step, config: serving.model.config, dispose: () => serving.model.store.dispose(), serving };
}

export interface GenerateOptions {
  maxTokens?: number;
  /** 0 is greedy. */
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  stop?: string[];
  /** Render the prompt as one user turn of the chat template. */
  chat?: boolean;
}

/** Generates a continuation of `prompt` (deterministic for a seed). */
export async function generate(model: LoadedModel, prompt: string, o: GenerateOptions = {}): Promise<GenerationResult> {
  const { model: m, tokenizer } = model.serving;
  const ids = o.chat ? tokenizer.renderChat([{ role: 'user', content: prompt }], { addGenerationPrompt: true }).ids : tokenizer.encode(prompt);
  if (ids.length === 0) throw new ConfigError('the prompt is empty', { where: 'generate' });
  if (ids.length > m.config.maxSeqLen) throw new ConfigError(`the prompt has ${ids.length} tokens; the model's context is ${m.config.maxSeqLen}`, { where: 'generate' });
  const engine = new Engine(m, tokenizer, { maxBatch: 1 });
  try {
    return await engine.submit({
      promptIds: ids,
      maxTokens: o.maxTokens ?? 64,
      sampling: { temperature: o.temperature ?? 0, topP: o.topP ?? 1, topK: o.topK ?? 0, seed: o.seed ?? 0 },
      stopIds: o.chat ? [tokenizer.special.end, tokenizer.special.eos] : [tokenizer.special.eos],
      stopStrings: o.stop ?? [],
    }).result;
  } finally {
    await engine.close();
  }
}
