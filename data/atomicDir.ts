/**
 * Atomic output directories for `prepare`: everything is written into `<out>.tmp-<pid>` and
 * renamed into place at the end, so `<out>` either holds a complete prepared corpus or does not
 * exist. Temp directories left by killed runs are removed once their process is gone.
 */
import fs from 'fs';
import path from 'path';
import { DataError } from '../core/errors';
import { fsyncDir, processAlive } from '../core/fsutil';

export function tmpDirFor(out: string): string {
  return `${path.resolve(out)}.tmp-${process.pid}`;
}

/** Removes `<out>.tmp-<pid>` siblings whose process no longer runs. */
export function removeStaleTmpDirs(out: string): string[] {
  const abs = path.resolve(out);
  const parent = path.dirname(abs);
  const prefix = `${path.basename(abs)}.tmp-`;
  const removed: string[] = [];
  if (!fs.existsSync(parent)) return removed;
  for (const name of fs.readdirSync(parent)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length));
    if (Number.isInteger(pid) && !processAlive(pid)) {
      fs.rmSync(path.join(parent, name), { recursive: true, force: true });
      removed.push(name);
    }
  }
  return removed;
}

/** Refuses to start when `out` exists and overwriting was not asked for. */
export function checkOutDir(out: string, overwrite: boolean): void {
  if (!fs.existsSync(out)) return;
  if (!overwrite) throw new DataError('output directory already exists', { where: out, hint: 'choose another --out or pass --force to replace it' });
  if (!fs.statSync(out).isDirectory()) throw new DataError('output path exists and is not a directory', { where: out });
}

/** Moves the finished tmp directory to `out`, replacing an old one only after success. */
export function commitDir(tmp: string, out: string): void {
  const abs = path.resolve(out);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  fsyncDir(tmp);
  let old: string | null = null;
  if (fs.existsSync(abs)) {
    old = `${abs}.old-${process.pid}`;
    fs.renameSync(abs, old);
  }
  fs.renameSync(tmp, abs);
  fsyncDir(path.dirname(abs));
  if (old) fs.rmSync(old, { recursive: true, force: true });
}
