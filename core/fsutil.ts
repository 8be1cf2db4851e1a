/**
 * Durable file-system primitives for atomic checkpoint directories (DESIGN.md section 6).
 * A rename is only crash-safe once the renamed data and the directory entry both reach the
 * disk, hence fsync of files before the rename and of the parent directory after it.
 */
import fs from 'fs';

/** Writes `data` to a new file (fails if it exists) and fsyncs it before closing. */
export function writeFileDurable(file: string, data: Uint8Array | string): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const fd = fs.openSync(file, 'wx');
  try {
    let off = 0;
    while (off < bytes.byteLength) off += fs.writeSync(fd, bytes, off, bytes.byteLength - off);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Fsyncs a directory so that entries created, renamed or removed in it are durable. Some
 * platforms (Windows) cannot open or fsync a directory; there the rename is as good as it gets.
 */
export function fsyncDir(dir: string): void {
  let fd: number;
  try {
    fd = fs.openSync(dir, 'r');
  } catch (e) {
    if (isCode(e, 'EISDIR', 'EPERM', 'EACCES')) return;
    throw e;
  }
  try {
    fs.fsyncSync(fd);
  } catch (e) {
    if (!isCode(e, 'EISDIR', 'EPERM', 'EINVAL', 'EBADF')) throw e;
  } finally {
    fs.closeSync(fd);
  }
}

/** lstat that returns null instead of throwing when the path does not exist. */
export function lstatOrNull(p: string): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    if (isCode(e, 'ENOENT', 'ENOTDIR')) return null;
    throw e;
  }
}

/** stat (following links) that returns null when the path or a link target does not exist. */
export function statOrNull(p: string): fs.Stats | null {
  try {
    return fs.statSync(p);
  } catch (e) {
    if (isCode(e, 'ENOENT', 'ENOTDIR', 'ELOOP')) return null;
    throw e;
  }
}

/** True when `e` is a Node system error with one of the given codes. */
export function isCode(e: unknown, ...codes: string[]): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && codes.includes(code);
}

/** True when a process with this id exists (a zombie counts; EPERM means it exists but is not ours). */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return isCode(e, 'EPERM');
  }
}
