/**
 * Checkpoint directories (DESIGN.md section 6): atomic writes, sha256 of every file, the
 * `latest` link, resolution of what a user passes as `--checkpoint`, keep-last-N pruning.
 * The module does not know what the files mean; trainer/ and inference/ give them meaning.
 *
 * Layout of a run:
 *   <run>/checkpoints/step-00000100/{model.safetensors, optimizer.safetensors, config.yaml,
 *                                    tokenizer.json, state.json}
 *   <run>/checkpoints/latest -> step-00000100          (relative symbolic link)
 * state.json is the caller's state plus `format_version`, `files` {name: sha256} and
 * `file_bytes` {name: size}; the sizes let a truncated file be reported as truncated.
 * `state.json.sha256` holds the sha256 of state.json itself, so a flipped bit anywhere in a
 * checkpoint is caught (checkpoints written before it existed load without that check).
 *
 * Crash safety (a crash at any point leaves the previous checkpoint loadable):
 *   1. files -> `.tmp-step-XXXXXXXX-<pid>/`, each fsynced; state.json last (it is the commit
 *      record: a directory without a valid one is never loaded); fsync the temp dir.
 *   2. re-saving an existing step: rename the old dir to `.old-step-XXXXXXXX-<pid>` first.
 *   3. rename the temp dir to `step-XXXXXXXX`, fsync `checkpoints/`.
 *   4. symlink `latest.tmp-<pid>` -> `step-XXXXXXXX`, rename it over `latest`, fsync.
 *   5. remove the `.old-*` dir, prune, fsync.
 * Readers ignore dot-entries except as a last resort: if `latest` is missing or dangling, the
 * newest `step-*` directory that verifies wins, and a `.old-step-*` left by a crash inside
 * step 2-3 counts as its step. The next writer removes leftovers of dead writers and renames
 * such an orphaned `.old-step-*` back into place.
 *
 * One writer per run at a time (leftovers of a live process are left alone, but two writers
 * racing on `latest` are not arbitrated). `latest` is a POSIX symbolic link.
 *
 * Deviation from the brief, by design: `latestCheckpoint` returns null only when a run has no
 * checkpoint at all; when checkpoints exist but none verifies it throws, so that a resume
 * never silently starts from scratch. Unlisted extra files in a checkpoint dir are ignored
 * (not loaded), not refused.
 */
import fs from 'fs';
import path from 'path';
import { CheckpointError, errorMessage } from './errors';
import { fsyncDir, isCode, lstatOrNull, processAlive, statOrNull, writeFileDurable } from './fsutil';
import { sha256Hex } from './hash';

export const CHECKPOINT_FORMAT_VERSION = 1;
export const STATE_FILE = 'state.json';
/** sha256 hex of state.json's bytes (state.json's own checksum). */
export const STATE_DIGEST_FILE = 'state.json.sha256';
export const LATEST_LINK = 'latest';
export const CHECKPOINTS_DIR = 'checkpoints';

/**
 * A file already written durably by another process (a rank's shard of a sharded checkpoint,
 * on the same filesystem): it is hashed and renamed into the checkpoint, not copied.
 */
export interface MovedFile {
  moveFrom: string;
}
export interface CheckpointFiles {
  [fileName: string]: Buffer | string;
}
export interface CheckpointState {
  step: number;
  [k: string]: unknown;
}
export interface LoadedCheckpoint {
  dir: string;
  state: CheckpointState;
  files: Map<string, Buffer>;
}

const STEP_RE = /^step-(\d{8,})$/;
const OLD_RE = /^\.old-step-(\d{8,})-(\d+)$/;
const LEFTOVER_RE = /^(?:\.tmp-step-\d{8,}|\.del-step-\d{8,}|latest\.tmp)-(\d+)$/;
/** Staging of a sharded checkpoint (trainer/shardedCheckpoint.ts), named by the writer's pid: removed once that process is gone. */
const SHARDS_RE = /^\.shards-step-\d{8,}-(\d+)$/;
const FILE_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;
const SHA_RE = /^[0-9a-f]{64}$/;

/** `step-00000100` for step 100. */
export function stepDirName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

function checkStep(step: unknown, where: string): number {
  if (typeof step !== 'number' || !Number.isSafeInteger(step) || step < 0) {
    throw new CheckpointError(`step must be a non-negative integer, got ${JSON.stringify(step)}`, { where });
  }
  return step;
}

function rmTree(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Writing

/** Writes a checkpoint atomically under `<runDir>/checkpoints/` and returns its final directory. */
export function writeCheckpoint(runDir: string, step: number, files: Record<string, Buffer | string | MovedFile>, state: CheckpointState, opts: { keepLast?: number } = {}): string {
  const ckDir = path.resolve(runDir, CHECKPOINTS_DIR);
  checkStep(step, ckDir);
  if (state.step !== step) throw new CheckpointError(`state.step (${String(state.step)}) differs from the step being saved (${step})`, { where: ckDir });
  if (opts.keepLast !== undefined && !(Number.isSafeInteger(opts.keepLast) && opts.keepLast >= 1)) {
    throw new CheckpointError(`keepLast must be a positive integer, got ${opts.keepLast}`, { where: 'keepLast' });
  }
  const names = Object.keys(files).sort();
  for (const n of names) {
    if (!FILE_NAME_RE.test(n) || n === STATE_FILE || n === STATE_DIGEST_FILE || n === LATEST_LINK) {
      throw new CheckpointError(`invalid checkpoint file name '${n}'`, { where: ckDir, hint: `plain names only, not '${STATE_FILE}'` });
    }
  }
  ensureCheckpointsDir(ckDir);
  cleanLeftovers(ckDir);

  const name = stepDirName(step);
  const tmp = path.join(ckDir, `.tmp-${name}-${process.pid}`);
  rmTree(tmp);
  fs.mkdirSync(tmp);
  const sums: Record<string, string> = {};
  const sizes: Record<string, number> = {};
  for (const n of names) {
    const v = files[n];
    if (typeof v === 'object' && 'moveFrom' in v) {
      const bytes = fs.readFileSync(v.moveFrom);
      fs.renameSync(v.moveFrom, path.join(tmp, n));
      sums[n] = sha256Hex(bytes);
      sizes[n] = bytes.byteLength;
      continue;
    }
    const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
    writeFileDurable(path.join(tmp, n), bytes);
    sums[n] = sha256Hex(bytes);
    sizes[n] = bytes.byteLength;
  }
  // Writer-owned keys win over caller keys of the same name.
  const { step: _s, format_version: _f, files: _fl, file_bytes: _fb, ...rest } = state;
  const out = { step, format_version: CHECKPOINT_FORMAT_VERSION, ...rest, files: sums, file_bytes: sizes };
  const stateBytes = Buffer.from(JSON.stringify(out, null, 2) + '\n', 'utf8');
  writeFileDurable(path.join(tmp, STATE_FILE), stateBytes);
  writeFileDurable(path.join(tmp, STATE_DIGEST_FILE), sha256Hex(stateBytes) + '\n');
  fsyncDir(tmp);

  const final = path.join(ckDir, name);
  let old: string | null = null;
  if (lstatOrNull(final)) {
    old = path.join(ckDir, `.old-${name}-${process.pid}`);
    rmTree(old);
    fs.renameSync(final, old);
  }
  fs.renameSync(tmp, final);
  fsyncDir(ckDir);
  pointLatestAt(ckDir, name);
  if (old) rmTree(old);
  if (opts.keepLast !== undefined) prune(ckDir, opts.keepLast);
  fsyncDir(ckDir);
  return final;
}

function ensureCheckpointsDir(ckDir: string): void {
  if (statOrNull(ckDir)?.isDirectory()) return;
  fs.mkdirSync(ckDir, { recursive: true });
  fsyncDir(path.dirname(ckDir));
}

/** Replaces `latest` by renaming a fresh link over it, so readers see the old or the new one. */
function pointLatestAt(ckDir: string, name: string): void {
  const tmpLink = path.join(ckDir, `latest.tmp-${process.pid}`);
  if (lstatOrNull(tmpLink)) fs.unlinkSync(tmpLink);
  fs.symlinkSync(name, tmpLink, 'dir');
  fs.renameSync(tmpLink, path.join(ckDir, LATEST_LINK));
  fsyncDir(ckDir);
}

/**
 * Removes what dead writers (or an earlier failed attempt of this process) left behind, and
 * puts back a `.old-step-*` whose replacement never arrived. Live writers' entries are kept.
 */
function cleanLeftovers(ckDir: string): void {
  for (const entry of fs.readdirSync(ckDir)) {
    const shards = SHARDS_RE.exec(entry);
    if (shards) {
      if (!processAlive(Number(shards[1]))) rmTree(path.join(ckDir, entry));
      continue;
    }
    const left = LEFTOVER_RE.exec(entry);
    const old = left ? null : OLD_RE.exec(entry);
    if (!left && !old) continue;
    const owner = Number(left ? left[1] : old![2]);
    if (owner !== process.pid && processAlive(owner)) continue;
    const p = path.join(ckDir, entry);
    if (left) {
      if (lstatOrNull(p)?.isSymbolicLink()) fs.unlinkSync(p);
      else rmTree(p);
    } else if (old) {
      const final = path.join(ckDir, `step-${old[1]}`);
      if (lstatOrNull(final)) rmTree(p);
      else fs.renameSync(p, final);
    }
  }
  fsyncDir(ckDir);
}

/** Step directories (not verified) in `ckDir`, newest first. */
function stepDirs(ckDir: string): { step: number; name: string }[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(ckDir);
  } catch (e) {
    if (isCode(e, 'ENOENT', 'ENOTDIR')) return [];
    throw e;
  }
  const out: { step: number; name: string }[] = [];
  for (const e of entries) {
    const m = STEP_RE.exec(e);
    if (m && lstatOrNull(path.join(ckDir, e))?.isDirectory()) out.push({ step: Number(m[1]), name: e });
  }
  return out.sort((a, b) => b.step - a.step);
}

/** The directory name `latest` points to, if it is a link to an existing directory. */
function latestTarget(ckDir: string): string | null {
  const link = path.join(ckDir, LATEST_LINK);
  const st = lstatOrNull(link);
  if (!st?.isSymbolicLink() || !statOrNull(link)?.isDirectory()) return null;
  return path.resolve(ckDir, fs.readlinkSync(link));
}

/**
 * Keeps the newest `keepLast` complete checkpoints and whatever `latest` points to. Incomplete
 * directories newer than every complete one are left for inspection. Dirs are renamed away
 * before removal, so a crash mid-delete never leaves a half-deleted `step-*` behind.
 */
function prune(ckDir: string, keepLast: number): void {
  const all = stepDirs(ckDir);
  const good = all.filter((d) => looksComplete(path.join(ckDir, d.name)));
  const keep = new Set(good.slice(0, keepLast).map((d) => path.join(ckDir, d.name)));
  const target = latestTarget(ckDir);
  if (target) keep.add(target);
  const newestGood = good.length ? good[0].step : -1;
  const doomed: string[] = [];
  for (const d of all) {
    const p = path.join(ckDir, d.name);
    if (keep.has(p) || d.step > newestGood) continue;
    const del = path.join(ckDir, `.del-${d.name}-${process.pid}`);
    rmTree(del);
    fs.renameSync(p, del);
    doomed.push(del);
  }
  if (!doomed.length) return;
  fsyncDir(ckDir);
  for (const d of doomed) rmTree(d);
}

// ---------------------------------------------------------------------------------------------
// Verification

interface Manifest {
  state: CheckpointState;
  files: Record<string, string>;
  sizes: Record<string, number>;
}

/** Reads and validates state.json of a checkpoint directory. */
function readManifest(dir: string): Manifest {
  const file = path.join(dir, STATE_FILE);
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    if (isCode(e, 'ENOENT')) throw new CheckpointError(`${STATE_FILE} is missing`, { where: dir, hint: 'not a checkpoint, or an incomplete one; use an earlier checkpoint' });
    throw new CheckpointError(`cannot read ${STATE_FILE} (${errorMessage(e)})`, { where: file, cause: e });
  }
  checkStateDigest(dir, bytes);
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw new CheckpointError(`${STATE_FILE} is not valid JSON (${errorMessage(e)})`, { where: file, hint: 'the checkpoint is corrupt; use an earlier one' });
  }
  const bad = (msg: string): CheckpointError => new CheckpointError(`${STATE_FILE}: ${msg}`, { where: file, hint: 'the checkpoint is corrupt; use an earlier one' });
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('not a JSON object');
  const st = raw as Record<string, unknown>;
  if (typeof st.step !== 'number' || !Number.isSafeInteger(st.step) || st.step < 0) throw bad(`'step' must be a non-negative integer, got ${JSON.stringify(st.step)}`);
  if (st.format_version !== CHECKPOINT_FORMAT_VERSION) {
    throw new CheckpointError(`${STATE_FILE}: unsupported format_version ${JSON.stringify(st.format_version)} (this moecat reads ${CHECKPOINT_FORMAT_VERSION})`, { where: file });
  }
  const files = st.files;
  if (typeof files !== 'object' || files === null || Array.isArray(files)) throw bad("'files' must map file names to sha256 hex digests");
  for (const [n, h] of Object.entries(files)) {
    if (!FILE_NAME_RE.test(n) || n === STATE_FILE) throw bad(`invalid file name '${n}' in 'files'`);
    if (typeof h !== 'string' || !SHA_RE.test(h)) throw bad(`'files.${n}' is not a sha256 hex digest`);
  }
  const sizes: Record<string, number> = {};
  if (st.file_bytes !== undefined) {
    if (typeof st.file_bytes !== 'object' || st.file_bytes === null) throw bad("'file_bytes' must map file names to sizes");
    for (const [n, s] of Object.entries(st.file_bytes)) {
      if (typeof s !== 'number' || !Number.isSafeInteger(s) || s < 0) throw bad(`'file_bytes.${n}' is not a size`);
      sizes[n] = s;
    }
  }
  const m = STEP_RE.exec(path.basename(dir)) ?? OLD_RE.exec(path.basename(dir));
  if (m && Number(m[1]) !== st.step) throw bad(`step ${st.step} does not match the directory name`);
  return { state: st as CheckpointState, files: files as Record<string, string>, sizes };
}

/** Checks state.json against state.json.sha256 when the checkpoint has one. */
function checkStateDigest(dir: string, stateBytes: Buffer): void {
  const file = path.join(dir, STATE_DIGEST_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'latin1');
  } catch (e) {
    if (isCode(e, 'ENOENT')) return; // written before state digests existed
    throw new CheckpointError(`cannot read ${STATE_DIGEST_FILE} (${errorMessage(e)})`, { where: file, cause: e });
  }
  const hint = 'the checkpoint is damaged; use an earlier one (e.g. another step-* directory)';
  const want = text.endsWith('\n') ? text.slice(0, -1) : text;
  if (!SHA_RE.test(want)) throw new CheckpointError(`${STATE_DIGEST_FILE} is not a sha256 hex digest`, { where: file, hint });
  const got = sha256Hex(stateBytes);
  if (got !== want) throw new CheckpointError(`${STATE_FILE} fails its sha256 check (expected ${want}, got ${got})`, { where: path.join(dir, STATE_FILE), hint });
}

/** Reads every listed file and checks its size and sha256; errors name the file. */
function verifyDir(dir: string): LoadedCheckpoint {
  const man = readManifest(dir);
  const out = new Map<string, Buffer>();
  const hint = 'the checkpoint is damaged; use an earlier one (e.g. another step-* directory)';
  for (const [name, sha] of Object.entries(man.files)) {
    const file = path.join(dir, name);
    let buf: Buffer;
    try {
      buf = fs.readFileSync(file);
    } catch (e) {
      if (isCode(e, 'ENOENT')) throw new CheckpointError(`${name} is missing (listed in ${STATE_FILE})`, { where: file, hint });
      throw new CheckpointError(`cannot read ${name} (${errorMessage(e)})`, { where: file, cause: e });
    }
    const want = man.sizes[name];
    if (want !== undefined && buf.length < want) throw new CheckpointError(`${name} is truncated: ${buf.length} of ${want} bytes`, { where: file, hint });
    if (want !== undefined && buf.length > want) throw new CheckpointError(`${name} has ${buf.length} bytes, expected ${want}`, { where: file, hint });
    const got = sha256Hex(buf);
    if (got !== sha) throw new CheckpointError(`${name} fails its sha256 check (expected ${sha}, got ${got})`, { where: file, hint });
    out.set(name, buf);
  }
  return { dir, state: man.state, files: out };
}

/** Cheap completeness check (manifest parses, listed files exist with their sizes), no hashing. */
function looksComplete(dir: string): boolean {
  try {
    const man = readManifest(dir);
    return Object.keys(man.files).every((n) => {
      const st = statOrNull(path.join(dir, n));
      return !!st && st.isFile() && (man.sizes[n] === undefined || st.size === man.sizes[n]);
    });
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Resolution and loading

const RESOLVE_HINT = 'pass a step-XXXXXXXX directory, a checkpoints/latest link, a checkpoints/ directory or a run directory';

/** A resolved directory, plus the verified contents when resolution had to verify it. */
type Resolved = { dir: string; verified?: LoadedCheckpoint };

function resolveInternal(pathLike: string, depth = 0): Resolved {
  const p = path.resolve(pathLike);
  const lst = lstatOrNull(p);
  if (!lst) throw new CheckpointError('no such file or directory', { where: p, hint: RESOLVE_HINT });
  if (lst.isSymbolicLink()) {
    const target = path.resolve(path.dirname(p), fs.readlinkSync(p));
    if (statOrNull(p)?.isDirectory() && depth < 16) return resolveInternal(target, depth + 1);
    // A dangling `latest` (crash between rename and relink, or its target pruned by hand).
    if (path.basename(p) === LATEST_LINK) return resolveInCheckpointsDir(path.dirname(p), true);
    throw new CheckpointError(`symbolic link points to ${target}, which is not a directory`, { where: p, hint: RESOLVE_HINT });
  }
  if (lst.isFile() && path.basename(p) === STATE_FILE) return { dir: path.dirname(p) };
  if (!lst.isDirectory()) throw new CheckpointError('is not a directory', { where: p, hint: RESOLVE_HINT });
  const base = path.basename(p);
  if (STEP_RE.test(base) || OLD_RE.test(base) || lstatOrNull(path.join(p, STATE_FILE))) return { dir: p };
  if (lstatOrNull(path.join(p, LATEST_LINK)) || stepDirs(p).length > 0) return resolveInCheckpointsDir(p, false);
  const sub = path.join(p, CHECKPOINTS_DIR);
  if (statOrNull(sub)?.isDirectory()) return resolveInCheckpointsDir(sub, false);
  throw new CheckpointError('no checkpoint found here', { where: p, hint: RESOLVE_HINT });
}

/** Follows `latest`; if it is missing or dangling, the newest directory that verifies. */
function resolveInCheckpointsDir(ckDir: string, latestDangling: boolean): Resolved {
  const target = latestDangling ? null : latestTarget(ckDir);
  if (target) return { dir: target };
  const latestReal = path.join(ckDir, LATEST_LINK);
  if (!latestDangling && statOrNull(latestReal)?.isDirectory() && !lstatOrNull(latestReal)?.isSymbolicLink()) return { dir: latestReal };
  const candidates: { step: number; dir: string; rank: number }[] = stepDirs(ckDir).map((d) => ({ step: d.step, dir: path.join(ckDir, d.name), rank: 0 }));
  for (const e of fs.readdirSync(ckDir)) {
    const m = OLD_RE.exec(e);
    if (m) candidates.push({ step: Number(m[1]), dir: path.join(ckDir, e), rank: 1 });
  }
  if (candidates.length === 0) {
    throw new CheckpointError('no checkpoints yet', { where: ckDir, hint: 'train (with checkpointing) first, or ' + RESOLVE_HINT });
  }
  candidates.sort((a, b) => b.step - a.step || a.rank - b.rank);
  const failures: string[] = [];
  for (const c of candidates) {
    try {
      return { dir: c.dir, verified: verifyDir(c.dir) };
    } catch (e) {
      if (!(e instanceof CheckpointError)) throw e;
      failures.push(`${path.basename(c.dir)}: ${e.message}`);
    }
  }
  // One line, as every user-facing error: the failures are joined with '; '.
  throw new CheckpointError(`no checkpoint in this directory verifies: ${failures.join('; ')}`, { where: ckDir, hint: 'run `moecat verify` on the run for details' });
}

/**
 * The checkpoint directory meant by a checkpoint dir, the `latest` link, a `checkpoints/` dir or
 * a run dir (its latest). Does not verify, except when `latest` is missing or dangling.
 */
export function resolveCheckpoint(pathLike: string): string {
  return resolveInternal(pathLike).dir;
}

/** Resolves, then reads every file listed in state.json and verifies its size and sha256. */
export function loadCheckpoint(pathLike: string): LoadedCheckpoint {
  const r = resolveInternal(pathLike);
  return r.verified ?? verifyDir(r.dir);
}

function checkpointsDirOf(runDir: string): string {
  const p = path.resolve(runDir);
  const sub = path.join(p, CHECKPOINTS_DIR);
  return statOrNull(sub)?.isDirectory() ? sub : p;
}

/** The `step-*` directories of a run (or of a checkpoints/ dir), oldest first; not verified. */
export function listCheckpoints(runDir: string): { step: number; dir: string }[] {
  const ckDir = checkpointsDirOf(runDir);
  return stepDirs(ckDir)
    .reverse()
    .map((d) => ({ step: d.step, dir: path.join(ckDir, d.name) }));
}

/**
 * The checkpoint a resume of `runDir` should load, or null when the run has no checkpoint at
 * all. Throws when checkpoints exist but none is usable, rather than restarting from scratch.
 */
export function latestCheckpoint(runDir: string): string | null {
  const ckDir = checkpointsDirOf(runDir);
  if (!statOrNull(ckDir)?.isDirectory()) return null;
  const hasAny = latestTarget(ckDir) !== null || fs.readdirSync(ckDir).some((e) => STEP_RE.test(e) || OLD_RE.test(e));
  if (!hasAny) return null;
  return resolveInCheckpointsDir(ckDir, false).dir;
}
