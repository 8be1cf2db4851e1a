/**
 * `moecat verify`: every checkpoint of a run verifies without recomputing anything: its files
 * against the checksums in state.json (and state.json against state.json.sha256), every file
 * decodes (config, weights, optimizer), and the weights hash to the param_hash in state.json.
 * Fast (reads and hashes each file once); `moecat audit` is the check that recomputes.
 */
import * as fs from 'fs';
import * as path from 'path';
import { listCheckpoints, resolveCheckpoint } from '../core/checkpoint';
import { CheckpointError, ConfigError, DataError } from '../core/errors';
import { flatLayout, views } from '../model/flatParams';
import { paramHash, paramSpecs } from '../model/params';
import { loadTrainerCheckpoint } from './checkpointing';

export interface CheckpointVerdict {
  step: number;
  dir: string;
  ok: boolean;
  /** The file at fault when not ok. */
  file?: string;
  /** One line: what is wrong. */
  error?: string;
}

export interface VerifyResult {
  ok: boolean;
  checkpoints: CheckpointVerdict[];
  /** Where `latest` points (null when the run has no `latest` link). */
  latest: string | null;
}

/** The file inside checkpoint `dir` that an error's `where` names, else "(checkpoint directory)". */
export function blamedFile(e: CheckpointError | ConfigError, dir: string): string {
  const rel = e.where ? path.relative(dir, e.where) : '';
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : '(checkpoint directory)';
}

/** Verifies one checkpoint directory (see the file comment). */
export function verifyCheckpoint(dir: string, step: number): CheckpointVerdict {
  try {
    const ck = loadTrainerCheckpoint(dir);
    const layout = flatLayout(paramSpecs(ck.config.model));
    const got = paramHash(layout.specs, views(layout, ck.state.params));
    if (typeof ck.saved.param_hash === 'string' && ck.saved.param_hash !== got) {
      return { step, dir, ok: false, file: 'model.safetensors', error: `the weights hash to ${got}, state.json records param_hash ${ck.saved.param_hash}` };
    }
    return { step, dir, ok: true };
  } catch (e) {
    if (e instanceof CheckpointError || e instanceof ConfigError) return { step, dir, ok: false, file: blamedFile(e, dir), error: e.message.split('\n')[0] };
    return { step, dir, ok: false, file: '(checkpoint directory)', error: `unreadable: ${(e as Error).message.split('\n')[0]}` };
  }
}

/** Verifies every `step-*` checkpoint of a run directory (or of its checkpoints/ directory). */
export function verifyRun(runDir: string): VerifyResult {
  if (!fs.existsSync(runDir) || !fs.statSync(runDir).isDirectory()) {
    throw new DataError('no such run directory', { where: runDir, hint: 'give the directory `moecat train` wrote (it holds checkpoints/)' });
  }
  // A single checkpoint directory verifies on its own.
  const single = /^step-(\d{8,})$/.exec(path.basename(path.resolve(runDir)));
  if (single && fs.existsSync(path.join(runDir, 'state.json'))) {
    const v = verifyCheckpoint(runDir, Number(single[1]));
    return { ok: v.ok, checkpoints: [v], latest: null };
  }
  const all = listCheckpoints(runDir);
  if (all.length === 0) throw new DataError('no checkpoints to verify', { where: runDir, hint: 'give a run directory with checkpoints/step-* directories, or one step-* directory' });
  const checkpoints = all.map((c) => verifyCheckpoint(c.dir, c.step));
  let latest: string | null = null;
  const ckDir = path.join(runDir, 'checkpoints');
  const link = path.join(fs.existsSync(ckDir) ? ckDir : runDir, 'latest');
  let ok = checkpoints.every((c) => c.ok);
  if (fs.existsSync(link) || isLink(link)) {
    try {
      latest = resolveCheckpoint(link);
    } catch {
      latest = null;
      ok = false;
      checkpoints.push({ step: -1, dir: link, ok: false, file: 'latest', error: 'the latest link does not resolve to a checkpoint' });
    }
  }
  return { ok, checkpoints, latest };
}

function isLink(p: string): boolean {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}
