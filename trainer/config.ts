/**
 * The training config: one typed, validated object from YAML (DESIGN.md section 11). Errors
 * name the key path; `--set a.b=c` overrides are applied before validation.
 */
import * as fs from 'fs';
import YAML from 'yaml';
import { z } from 'zod';
import { ConfigError, errorMessage } from '../core/errors';
import { BACKENDS } from '../core/backend';
import { ModelConfig, modelConfigSchema } from '../model/config';
import { blockNodes } from '../parallel/tree';
import { editDistance } from '../core/editDistance';

const groupScales = z.object({
  embedding: z.number().positive(),
  hidden: z.number().positive(),
  unembedding: z.number().positive(),
  router: z.number().positive(),
  norm: z.number().positive(),
}).partial().strict();

export const trainConfigSchema = z.object({
  seed: z.number().int().nonnegative().default(0),
  backend: z.enum(['auto', ...BACKENDS]).default('auto'),
  /** Threads of the cpu-native kernels (default all cores); never changes a bit, so not part of a run's identity. */
  threads: z.number().int().positive().optional(),
  model: modelConfigSchema,
  data: z.object({
    /** A directory written by `moecat prepare` (manifest.json + Arrow shards). */
    dir: z.string().optional(),
    /** Mixture and stage schedule (validated by data/mixture). */
    mixture: z.unknown().optional(),
    /** A synthetic token source for tests and benchmarks (no files). */
    synthetic: z.object({ kind: z.enum(['markov']).default('markov'), order: z.number().int().positive().default(1) }).strict().optional(),
    seqLen: z.number().int().positive(),
    microBatchSize: z.number().int().positive(),
    microBatches: z.number().int().positive().default(1),
    crossDocMask: z.boolean().default(false),
    /** Supervised fine-tuning on JSONL chat conversations (data/sft.ts); replaces dir/synthetic. */
    sft: z.object({
      file: z.string(),
      /** tokenizer.json to render with (default: data.dir's, else the initFrom checkpoint's). */
      tokenizer: z.string().optional(),
      valFraction: z.number().min(0).max(0.5).default(0.1),
      /** Report val_loss every N steps (0: never). */
      valEvery: z.number().int().nonnegative().default(10),
    }).strict().optional(),
  }).strict(),
  /** Start a new run from a checkpoint's weights and expert biases (trainer/initFrom.ts). */
  initFrom: z.object({
    checkpoint: z.string(),
    optimizer: z.enum(['reset', 'keep']).default('reset'),
  }).strict().optional(),
  optim: z.object({
    lr: z.number().positive(),
    beta1: z.number().min(0).max(1).default(0.9),
    beta2: z.number().min(0).max(1).default(0.95),
    eps: z.number().positive().default(1e-16),
    weightDecay: z.number().nonnegative().default(0.1),
    clipNorm: z.number().nonnegative().default(1.0),
    /** Per-group LR multipliers (hyperparameter transfer writes these). */
    lrScale: groupScales.default({}),
    /** Per-group init-std multipliers (hyperparameter transfer writes these). */
    initScale: groupScales.default({}),
    schedule: z.object({
      type: z.enum(['wsd', 'cosine', 'constant']).default('wsd'),
      warmupSteps: z.number().int().nonnegative().default(0),
      decaySteps: z.number().int().nonnegative().default(0),
      minLrRatio: z.number().min(0).max(1).default(0.1),
    }).strict().default({}),
  }).strict(),
  train: z.object({
    steps: z.number().int().positive(),
    checkpointEvery: z.number().int().nonnegative().default(0),
    keepLast: z.number().int().positive().default(3),
    paramHashEvery: z.number().int().positive().default(10),
    zLossCoef: z.number().nonnegative().default(0),
    /** Fault injection for tests and drills: multiply the gradient of these data steps. */
    injectGradScale: z.array(z.object({ dataStep: z.number().int().nonnegative(), scale: z.number() }).strict()).default([]),
  }).strict(),
  /**
   * Data-parallel training state: `optimizer` shards the Adam moments and update over the ranks
   * (trainer/shardedOptimizer.ts), `full` the weights too, gathered one unit (embedding, layer,
   * head) at a time (trainer/fullShard.ts). `maxStateBytes` (0: no limit) caps the training state
   * one rank may hold (trainer/stateBudget.ts); a run over it is refused at start-up.
   */
  parallel: z.object({
    shard: z.enum(['none', 'optimizer', 'full']).default('none'),
    maxStateBytes: z.number().int().nonnegative().default(0),
  }).strict().default({}),
  stability: z.object({
    spike: z.object({
      enabled: z.boolean().default(true),
      window: z.number().int().positive().default(50),
      k: z.number().positive().default(6),
      minSteps: z.number().int().positive().default(20),
      minRelative: z.number().nonnegative().default(0.1),
      gradFactor: z.number().positive().default(10),
      snapshotEvery: z.number().int().positive().default(10),
      maxRollbacks: z.number().int().nonnegative().default(5),
    }).strict().default({}),
    /** Compute the router gradient-norm ratio R_g every N steps (0: never). */
    routerRatioEvery: z.number().int().nonnegative().default(0),
    /** Halve the balance-loss alpha whenever R_g exceeds this (0: no controller). */
    routerRatioMax: z.number().nonnegative().default(0),
    /**
     * Silent-corruption check: every N steps (0: never) the step is computed twice from the same
     * state and must give the same fingerprint and weights bit for bit.
     */
    recomputeEvery: z.number().int().nonnegative().default(0),
    /** Warn when Adam's eps comes within this factor of a group's gradient RMS. */
    epsWarnFactor: z.number().positive().default(10),
  }).strict().default({}),
}).strict().superRefine((c, ctx) => {
  if (!c.data.dir && !c.data.synthetic && !c.data.sft) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['data', 'dir'], message: 'set data.dir (a prepared corpus), data.sft or data.synthetic' });
  }
  if (c.data.sft && c.data.synthetic) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['data', 'sft'], message: 'data.sft and data.synthetic exclude each other' });
  }
  if (c.parallel.shard === 'full' && c.stability.routerRatioEvery > 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['stability', 'routerRatioEvery'], message: 'the router gradient ratio needs the whole model on one rank; set it to 0 with parallel.shard: full' });
  }
  if (c.parallel.shard === 'full' && (c.data.sft?.valEvery ?? 0) > 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['data', 'sft', 'valEvery'], message: 'validation loss needs the whole model on one rank; set it to 0 with parallel.shard: full' });
  }
  if (c.data.seqLen > c.model.maxSeqLen) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['data', 'seqLen'], message: `seqLen ${c.data.seqLen} exceeds model.maxSeqLen ${c.model.maxSeqLen}` });
  }
  if (c.optim.schedule.type === 'wsd' && c.optim.schedule.warmupSteps + c.optim.schedule.decaySteps > c.train.steps) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['optim', 'schedule', 'decaySteps'], message: 'warmupSteps + decaySteps exceed train.steps' });
  }
});

export type TrainConfig = z.infer<typeof trainConfigSchema> & { model: ModelConfig };

/** Sets `a.b.c` in a plain object, creating objects on the way. */
export function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let cur: Record<string, unknown> = obj;
  for (const k of keys.slice(0, -1)) {
    if (typeof cur[k] !== 'object' || cur[k] === null) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[keys[keys.length - 1]] = value;
}

/** Applies `key=value` overrides; values parse as YAML scalars (numbers, booleans, lists). */
export function applyOverrides(raw: Record<string, unknown>, sets: string[] = []): void {
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new ConfigError(`override '${s}' is not of the form key=value`, { where: '--set' });
    let value: unknown;
    try {
      value = YAML.parse(s.slice(eq + 1));
    } catch (e) {
      throw new ConfigError(`override '${s}': the value is not valid YAML (${errorMessage(e).split('\n')[0]})`, { where: '--set' });
    }
    setPath(raw, s.slice(0, eq).trim(), value);
  }
}

export function parseTrainConfig(raw: unknown, where = 'config'): TrainConfig {
  const r = trainConfigSchema.safeParse(raw);
  if (!r.success) {
    throw new ConfigError(formatTrainIssues(r.error), { where });
  }
  return r.data as TrainConfig;
}

/** Issues as one line, with a suggestion for each unknown key (`did you mean dModel?`). */
function formatTrainIssues(err: z.ZodError): string {
  return err.issues
    .map((i) => {
      const at = i.path.map(String).join('.') || '(root)';
      if (i.code === z.ZodIssueCode.unrecognized_keys) {
        const known = keysOf(schemaAt(trainConfigSchema, i.path.map(String)));
        return `${at}: ${i.keys.map((k) => `unknown key '${k}'${suggest(k, known)}`).join(', ')}`;
      }
      return `${at}: ${i.message}`;
    })
    .join('; ');
}

/** The object schema(s) under a key path (through defaults, optionals, refinements, unions). */
function schemaAt(schema: z.ZodTypeAny, keys: string[]): z.ZodTypeAny[] {
  let cur: z.ZodTypeAny[] = [schema];
  for (const k of keys) {
    const next: z.ZodTypeAny[] = [];
    for (const sch of cur.flatMap(objects)) {
      const child = (sch as z.AnyZodObject).shape[k] as z.ZodTypeAny | undefined;
      if (child) next.push(child);
    }
    cur = next;
  }
  return cur;
}

/** The plain object schemas a schema stands for (unwrapping wrappers, spreading unions). */
function objects(s: z.ZodTypeAny): z.ZodTypeAny[] {
  if (s instanceof z.ZodObject) return [s];
  if (s instanceof z.ZodDefault || s instanceof z.ZodOptional || s instanceof z.ZodNullable) return objects(s._def.innerType as z.ZodTypeAny);
  if (s instanceof z.ZodEffects) return objects(s._def.schema as z.ZodTypeAny);
  if (s instanceof z.ZodUnion || s instanceof z.ZodDiscriminatedUnion) return (s.options as z.ZodTypeAny[]).flatMap(objects);
  return [];
}

function keysOf(schemas: z.ZodTypeAny[]): string[] {
  return [...new Set(schemas.flatMap(objects).flatMap((o) => Object.keys((o as z.AnyZodObject).shape)))];
}

/** ` (did you mean X?)` for the closest known key, ` (known keys: ...)` when none is close. */
function suggest(key: string, known: string[]): string {
  if (known.length === 0) return '';
  let best = known[0];
  let bestD = Infinity;
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return bestD <= Math.max(2, Math.floor(best.length / 3)) ? ` (did you mean ${best}?)` : ` (known keys: ${known.join(', ')})`;
}

/** Refuses a `--set` key that names no config key, blaming the flag (not the file). */
function checkOverrideKey(key: string): void {
  const parts = key.split('.');
  for (let n = 0; n < parts.length; n++) {
    const here = schemaAt(trainConfigSchema, parts.slice(0, n));
    const obj = here.flatMap(objects);
    if (obj.length === 0 || here.some((h) => !objects(h).length)) return; // free-form value (e.g. data.mixture): not checked here
    const known = keysOf(here);
    if (!known.includes(parts[n])) {
      const parent = parts.slice(0, n).join('.');
      throw new ConfigError(`unknown key '${parts[n]}'${parent ? ` in ${parent}` : ''}${suggest(parts[n], known)}`, { where: `--set ${key}` });
    }
  }
}

/** Reads, overrides and validates a YAML config file. Refuses before any work. */
export function loadTrainConfig(file: string, sets: string[] = []): { config: TrainConfig; raw: Record<string, unknown> } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config: ${errorMessage(e)}`, { where: file });
  }
  let raw: unknown;
  try {
    raw = YAML.parse(text, { prettyErrors: true, logLevel: 'error' }); // warnings (e.g. unknown tags) are not printed: validation refuses what they leave
  } catch (e) {
    throw new ConfigError(`invalid YAML: ${errorMessage(e).split('\n')[0]}`, { where: file });
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError('the config must be a YAML mapping', { where: file });
  applyOverrides(raw as Record<string, unknown>, sets);
  const setKeys = sets.map((s) => s.slice(0, s.indexOf('=')).trim());
  for (const k of setKeys) checkOverrideKey(k);
  const r = trainConfigSchema.safeParse(raw);
  if (!r.success) {
    // A value given with --set is blamed on the flag, not on the file.
    const first = r.error.issues[0].path.map(String).join('.');
    const blamed = setKeys.filter((k) => k === first || first.startsWith(`${k}.`) || (first && k.startsWith(`${first}.`))).pop();
    throw new ConfigError(formatTrainIssues(r.error), { where: blamed ? `--set ${blamed}` : file });
  }
  return { config: r.data as TrainConfig, raw: raw as Record<string, unknown> };
}

/** Whether every rank's contiguous block of M / W microbatches is one node of the canonical tree over M. */
export function rankBlocksAreNodes(microBatches: number, worldSize: number): boolean {
  if (microBatches % worldSize !== 0) return false;
  const n = microBatches / worldSize;
  for (let r = 0; r < worldSize; r++) if (blockNodes(r * n, (r + 1) * n, microBatches).length !== 1) return false;
  return true;
}

/**
 * Refuses, before any rank joins a group, a data-parallel world whose rank blocks are not nodes
 * of the canonical reduction tree (DESIGN.md section 4): e.g. microBatches 6 over 2 ranks gives
 * blocks [0,3) and [3,6), but the tree over 6 splits at 4. Names the nearest values that work.
 */
export function checkDataParallel(microBatches: number, worldSize: number, where = 'data.microBatches'): void {
  if (worldSize <= 1 || rankBlocksAreNodes(microBatches, worldSize)) return;
  const ok: number[] = [];
  for (let m = worldSize; ok.length < 4 && m <= Math.max(64, 4 * microBatches) * worldSize; m += worldSize) if (rankBlocksAreNodes(m, worldSize)) ok.push(m);
  const why = microBatches % worldSize !== 0
    ? `is not divisible by the world size ${worldSize}`
    : `split over ${worldSize} ranks gives blocks of ${microBatches / worldSize} that are not nodes of the canonical reduction tree over ${microBatches}`;
  throw new ConfigError(`${microBatches} ${why}`, { where, hint: `use data.microBatches ${ok.join(', ')}${ok.length ? ', ...' : ''} with world size ${worldSize}` });
}
