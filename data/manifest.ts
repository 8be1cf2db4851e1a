/**
 * The manifest of a prepared directory: what was prepared from where, how many documents and
 * tokens each source holds, and the sha256 of every shard and of the tokenizer. It is written
 * last (tmp file + rename inside a directory that is itself renamed into place), so a manifest
 * never points at partial shards.
 */
import fs from 'fs';
import path from 'path';
import { z } from 'zod';
import { DataError } from '../core/errors';
import { sha256Hex } from '../core/hash';
import { fsyncDir } from '../core/fsutil';

export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_FORMAT = 'moecat.prepared/1';

const skipSchema = z.object({
  empty: z.number().int().nonnegative(),
  binary: z.number().int().nonnegative(),
  invalid_json: z.number().int().nonnegative(),
  missing_field: z.number().int().nonnegative(),
});

const shardSchema = z.object({
  file: z.string().min(1),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  rows: z.number().int().nonnegative(),
  tokens: z.number().int().nonnegative(),
});

const sourceSchema = z.object({
  /** The path given for the source, and how many input files it expanded to. */
  path: z.string(),
  files: z.number().int().nonnegative(),
  documents: z.number().int().positive(),
  tokens: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  skipped: skipSchema,
  shards: z.array(shardSchema).min(1),
});

export const manifestSchema = z.object({
  format: z.literal(MANIFEST_FORMAT),
  tokenizer: z.object({
    file: z.string(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    vocabSize: z.number().int().positive(),
    eos: z.number().int().nonnegative(),
    trained: z.boolean(),
  }),
  sources: z.record(sourceSchema),
  skipped: skipSchema,
  totals: z.object({ documents: z.number().int(), tokens: z.number().int(), bytes: z.number().int() }),
});

export type Manifest = z.infer<typeof manifestSchema>;
export type ManifestSource = z.infer<typeof sourceSchema>;

/** Reads and validates `<dir>/manifest.json` (no checksum work; see verifyPrepared). */
export function readManifest(dir: string): Manifest {
  const file = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new DataError('no manifest.json: not a prepared directory, or its prepare never finished', { where: dir, hint: 'run `moecat prepare --source name=path --out <dir>`' });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new DataError(`manifest is not valid JSON: ${(e as Error).message}`, { where: file });
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new DataError(`manifest key ${issue.path.join('.') || '(root)'}: ${issue.message}`, { where: file });
  }
  return parsed.data;
}

/** Writes the manifest via tmp file + rename, fsyncing file and directory. */
export function writeManifest(dir: string, m: Manifest): void {
  const tmp = path.join(dir, `${MANIFEST_FILE}.tmp-${process.pid}`);
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, JSON.stringify(m, null, 2) + '\n');
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, path.join(dir, MANIFEST_FILE));
  fsyncDir(dir);
}

/** Checks a file's sha256 against the manifest; returns its bytes. */
export function readVerified(dir: string, rel: string, sha256: string, what: string): Buffer {
  const file = path.join(dir, rel);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    throw new DataError(`${what} ${rel} listed in the manifest is missing`, { where: dir, hint: 're-run moecat prepare' });
  }
  const got = sha256Hex(buf);
  if (got !== sha256) {
    throw new DataError(`${what} ${rel} fails its checksum (manifest sha256 ${sha256.slice(0, 12)}…, file ${got.slice(0, 12)}…)`, {
      where: dir,
      hint: 'the file changed or is corrupt; re-run moecat prepare',
    });
  }
  return buf;
}

/** A short fingerprint of the prepared data (tokenizer + every shard), for loader state. */
export function manifestFingerprint(m: Manifest): string {
  const parts = [m.tokenizer.sha256];
  for (const name of Object.keys(m.sources).sort()) for (const s of m.sources[name].shards) parts.push(`${name}:${s.sha256}`);
  return sha256Hex(parts.join('|')).slice(0, 16);
}
