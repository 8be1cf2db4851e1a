/**
 * `moecat audit` (DESIGN.md section 4): recompute a range of recorded steps from the nearest
 * checkpoint before it and compare, bit for bit, every step's fingerprint (sha256 of the loss and
 * gradient-norm bits) and every parameter hash with what metrics.jsonl recorded.
 *
 * Range semantics: `from..to` are step numbers as written in metrics.jsonl (the step count after
 * the update, 1-based). Recomputation starts from the newest checkpoint whose step is below
 * `from` (or from initialisation when there is none), so every recomputed step is compared,
 * which may begin before `from`. Checks, in order:
 *   0. every checkpoint in the range (the starting one and each up to `to`) verifies: its files
 *      against the checksums in state.json (and state.json against state.json.sha256), and it
 *      decodes; nothing is recomputed before this passes;
 *   1. the starting weights against the checkpoint's own `param_hash` and the recorded one
 *      (a checkpoint whose files were altered and re-checksummed fails here);
 *   2. each recomputed step's fingerprint, and its `param_hash` where one was recorded;
 *   3. every later checkpoint in the range against the recomputed state at its step: weights
 *      and expert biases (model.safetensors), Adam moments (optimizer.safetensors) and the
 *      recomputable keys of state.json (checkpointDigest.ts).
 * A failure names the step and the file.
 * Spike events inside the range replay by themselves (detection, rollback and skip are
 * deterministic); only step lines are compared.
 */
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { listCheckpoints, STATE_FILE } from '../core/checkpoint';
import { CheckpointError, ConfigError, DataError, TrainingError } from '../core/errors';
import { LoadedTraining, loadTrainerCheckpoint } from './checkpointing';
import { CheckpointDigest, digestOfLoaded, digestOfTrainer, firstDifference } from './checkpointDigest';
import { parseTrainConfig } from './config';
import { makeDataSource } from './dataSource';
import { SpikeEvent, Trainer } from './trainer';
import { blamedFile } from './verify';

export interface AuditOptions {
  /** First step to cover (default: the first recorded step). */
  from?: number;
  /** Last step to cover (default: the last recorded step). */
  to?: number;
  /** Called after each recomputed step. */
  onStep?: (step: number, to: number) => void;
  onSpike?: (e: SpikeEvent) => void;
}

export type DivergenceKind = 'checkpoint_file' | 'checkpoint_content' | 'checkpoint_param_hash' | 'recorded_param_hash' | 'fingerprint' | 'param_hash' | 'error';

export interface AuditDivergence {
  /** The step whose recomputed record differs (for the starting checkpoint: its step). */
  step: number;
  what: DivergenceKind;
  /** The checkpoint file at fault (and for state.json the key), for checkpoint divergences. */
  file?: string;
  expected: string;
  got: string;
}

export interface AuditResult {
  ok: boolean;
  /** Distinct steps found identical (a step replayed after a rollback is compared each time). */
  checked: number;
  /** Parameter hashes compared (start, recorded every N steps, checkpoints in range). */
  hashesChecked: number;
  /** Checkpoints in the range whose files verified and matched the recomputed state. */
  checkpointsChecked: number;
  /** First and last compared step. */
  from: number;
  to: number;
  /** Where recomputation started: a checkpoint directory, or null for initialisation. */
  start: { step: number; checkpoint: string | null };
  /** Backend the audited run recorded in its checkpoints, if any. */
  recordedBackend: string | null;
  /** Spike events the recomputation reproduced. */
  spikes: SpikeEvent[];
  firstDivergence?: AuditDivergence;
}

interface StepRecord {
  step: number;
  fingerprint: string;
  param_hash?: string;
  tokens?: number;
}

/** Step lines of metrics.jsonl by step (a rewritten step keeps its last line); events skipped. */
export function readStepRecords(runDir: string): Map<number, StepRecord> {
  const file = path.join(runDir, 'metrics.jsonl');
  if (!fs.existsSync(file)) throw new DataError('no metrics.jsonl in this run directory', { where: runDir, hint: 'audit a run directory written by `moecat train`' });
  const out = new Map<number, StepRecord>();
  fs.readFileSync(file, 'utf8').split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line) return;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch {
      throw new DataError('not valid JSON', { where: `${file}:${i + 1}`, hint: 'each line must be one JSON object' });
    }
    if (o === null || typeof o !== 'object' || 'event' in o || typeof o.fingerprint !== 'string') return;
    if (typeof o.step !== 'number' || !Number.isSafeInteger(o.step)) throw new DataError(`'step' is ${JSON.stringify(o.step)}, not an integer`, { where: `${file}:${i + 1}` });
    out.set(o.step, { step: o.step, fingerprint: o.fingerprint, param_hash: typeof o.param_hash === 'string' ? o.param_hash : undefined, tokens: typeof o.tokens === 'number' ? o.tokens : undefined });
  });
  if (out.size === 0) throw new DataError('metrics.jsonl has no step records', { where: file, hint: 'train the run for at least one step first' });
  return out;
}

function readSavedState(dir: string): Record<string, unknown> | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, STATE_FILE), 'utf8')) as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** The backend the run recorded in its newest readable checkpoint (null if none). */
export function recordedBackend(runDir: string): string | null {
  for (const c of listCheckpoints(runDir).reverse()) {
    const s = readSavedState(c.dir);
    if (s && typeof s.backend === 'string') return s.backend;
  }
  return null;
}

function checkRange(records: Map<number, StepRecord>, o: AuditOptions, file: string): { from: number; to: number } {
  const steps = [...records.keys()].sort((a, b) => a - b);
  const first = steps[0];
  const last = steps[steps.length - 1];
  const from = o.from ?? first;
  const to = o.to ?? last;
  for (const [flag, v] of [['--from', from], ['--to', to]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new ConfigError(`${flag} must be a positive integer step, got ${v}`, { where: flag });
  }
  if (from > to) throw new ConfigError(`--from ${from} is after --to ${to}`, { where: '--from' });
  if (to > last || from < first) {
    throw new ConfigError(`steps ${from}..${to} are outside what was recorded (steps ${first}..${last})`, { where: file, hint: `choose a range within ${first}..${last}` });
  }
  return { from, to };
}

/** The file of a checkpoint that a CheckpointError names (its `where`), else the directory. */
/** Recomputes steps of a run and compares them with its metrics.jsonl (see the file comment). */
export async function auditRun(runDir: string, o: AuditOptions = {}): Promise<AuditResult> {
  if (!fs.existsSync(runDir) || !fs.statSync(runDir).isDirectory()) {
    throw new DataError('no such run directory', { where: runDir, hint: 'give the directory `moecat train` wrote (it holds metrics.jsonl and checkpoints/)' });
  }
  const records = readStepRecords(runDir);
  const metricsFile = path.join(runDir, 'metrics.jsonl');
  const { from, to } = checkRange(records, o, metricsFile);

  // Newest checkpoint strictly before `from`: its state is the input of step `from`'s chain.
  const all = listCheckpoints(runDir);
  const ck = all.filter((c) => c.step < from).pop();
  const startStep = ck?.step ?? 0;
  const result: AuditResult = {
    ok: true, checked: 0, hashesChecked: 0, checkpointsChecked: 0, from: startStep + 1, to,
    start: { step: startStep, checkpoint: ck?.dir ?? null }, recordedBackend: recordedBackend(runDir), spikes: [],
  };
  const diverge = (d: AuditDivergence): AuditResult => {
    result.ok = false;
    result.firstDivergence = d;
    return result;
  };

  // 0. Every checkpoint in the range verifies (checksums, readable) before anything is recomputed.
  const inRange = all.filter((c) => c.step >= startStep && c.step <= to);
  const fromFiles = new Map<number, CheckpointDigest>();
  let startCk: LoadedTraining | null = null;
  for (const c of inRange) {
    let loaded: LoadedTraining;
    try {
      loaded = loadTrainerCheckpoint(c.dir);
    } catch (e) {
      if (!(e instanceof CheckpointError || e instanceof ConfigError)) throw e;
      const file = e instanceof CheckpointError ? blamedFile(e, c.dir) : 'config.yaml';
      return diverge({ step: c.step, what: 'checkpoint_file', file, expected: 'a checkpoint that verifies', got: e.message });
    }
    if (c === ck) startCk = loaded;
    else fromFiles.set(c.step, digestOfLoaded(loaded));
  }

  let trainer: Trainer;
  let savedHash: string | null = null;
  if (startCk) {
    trainer = new Trainer(startCk.config, makeDataSource(startCk.config, startCk.saved.data), {}, startCk.state);
    savedHash = typeof startCk.saved.param_hash === 'string' ? startCk.saved.param_hash : null;
    result.checkpointsChecked++;
  } else {
    const cfgFile = path.join(runDir, 'config.yaml');
    if (!fs.existsSync(cfgFile)) {
      throw new DataError(`no checkpoint before step ${from} and no config.yaml to start from initialisation`, { where: runDir, hint: 'audit a later range (one that starts after a checkpoint)' });
    }
    const config = parseTrainConfig(YAML.parse(fs.readFileSync(cfgFile, 'utf8')), cfgFile);
    trainer = new Trainer(config, makeDataSource(config));
  }
  for (let s = startStep + 1; s <= to; s++) {
    if (!records.has(s)) throw new DataError(`metrics.jsonl has no record of step ${s}`, { where: metricsFile, hint: 'the recorded steps must be contiguous from the starting checkpoint to --to' });
  }

  // A step replayed after a rollback counts once.
  const checked = new Set<number>();
  // What each later checkpoint should hold: the recomputed state the last time its step was reached.
  const recomputed = new Map<number, CheckpointDigest>();
  try {
    // 1. The starting weights.
    if (startCk) {
      const got = trainer.paramHash();
      if (savedHash !== null) {
        result.hashesChecked++;
        if (got !== savedHash) return diverge({ step: startStep, what: 'checkpoint_param_hash', file: 'model.safetensors', expected: savedHash, got });
      }
      const rec = records.get(startStep)?.param_hash;
      if (rec !== undefined) {
        result.hashesChecked++;
        if (got !== rec) return diverge({ step: startStep, what: 'recorded_param_hash', file: 'model.safetensors', expected: rec, got });
      }
      // The token count is not part of any fingerprint: check it against the record of that step.
      const tokens = records.get(startStep)?.tokens;
      if (tokens !== undefined && startCk.saved.tokens !== tokens) {
        return diverge({ step: startStep, what: 'checkpoint_content', file: "state.json 'tokens'", expected: String(tokens), got: String(startCk.saved.tokens) });
      }
    }
    // 2. Every recomputed step.
    while (trainer.state.step < to) {
      let r;
      try {
        r = await trainer.step();
      } catch (e) {
        if (e instanceof TrainingError) return diverge({ step: trainer.state.step + 1, what: 'error', expected: 'a step', got: e.message });
        throw e;
      }
      if (r.kind === 'spike') {
        result.spikes.push(r.event);
        o.onSpike?.(r.event);
        continue;
      }
      const m = r.metrics;
      const rec = records.get(m.step)!;
      if (m.fingerprint !== rec.fingerprint) return diverge({ step: m.step, what: 'fingerprint', expected: rec.fingerprint, got: m.fingerprint });
      if (rec.param_hash !== undefined) {
        const got = m.param_hash ?? trainer.paramHash();
        result.hashesChecked++;
        if (got !== rec.param_hash) return diverge({ step: m.step, what: 'param_hash', expected: rec.param_hash, got });
      }
      if (fromFiles.has(m.step)) recomputed.set(m.step, digestOfTrainer(trainer));
      checked.add(m.step);
      result.checked = checked.size;
      o.onStep?.(m.step, to);
    }
    // 3. Every later checkpoint's files against the recomputed state at its step.
    for (const [step, files] of [...fromFiles].sort((a, b) => a[0] - b[0])) {
      const want = recomputed.get(step);
      if (!want) return diverge({ step, what: 'checkpoint_content', file: '(checkpoint directory)', expected: `step ${step} reached by the recomputation`, got: 'never reached' });
      const d = firstDifference(want, files);
      if (d) return diverge({ step, what: 'checkpoint_content', file: d.key ? `${d.file} '${d.key}'` : d.file, expected: d.expected, got: d.got });
      result.checkpointsChecked++;
      result.hashesChecked++;
    }
    return result;
  } finally {
    trainer.dispose();
  }
}

/** One line describing a divergence, for the CLI and error messages. */
export function describeDivergence(d: AuditDivergence): string {
  const what: Record<DivergenceKind, string> = {
    checkpoint_param_hash: "the starting checkpoint's weights do not match the param_hash in its state.json",
    recorded_param_hash: "the starting checkpoint's weights do not match the param_hash recorded in metrics.jsonl",
    fingerprint: 'the step fingerprint (loss and gradient-norm bits) differs',
    param_hash: 'the parameter hash differs',
    checkpoint_file: 'a file of the checkpoint at this step fails verification',
    checkpoint_content: 'a file of the checkpoint at this step differs from the recomputed state',
    error: 'recomputation failed',
  };
  const file = d.file ? ` (${d.file})` : '';
  return `step ${d.step}${file}: ${what[d.what]}\n  expected ${d.expected}\n  got      ${d.got}`;
}
