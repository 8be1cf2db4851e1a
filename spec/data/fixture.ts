/**
 * Shared test fixture: small slices of the bundled real corpora (prose, speeches, code), written
 * and prepared once per test process into a temp directory.
 */
import fs from 'fs';
import os from 'os';
import path from 'path';
import { writeBundledCorpora, BundledSource, BUNDLED_EXTS } from '../../scripts/corpus/bundled';
import { prepareCorpus } from '../../data/prepare';
import { Manifest } from '../../data/manifest';
import { loadPrepared, PreparedData } from '../../data/prepared';

export const FIXTURE_BYTES = 200_000;

let cached: { root: string; raw: BundledSource[]; prepared: string; manifest: Manifest; data: PreparedData } | null = null;

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `moecat-${prefix}-`));
}

export async function preparedFixture(): Promise<NonNullable<typeof cached>> {
  if (cached) return cached;
  const root = tmpDir('data');
  const raw = writeBundledCorpora(path.join(root, 'raw'), { maxBytesPerSource: FIXTURE_BYTES });
  const prepared = path.join(root, 'prepared');
  // Small shards so multi-shard reading is exercised.
  const manifest = await prepareCorpus({ sources: raw.map((s) => ({ name: s.name, path: s.path })), outDir: prepared, vocabSize: 1024, exts: BUNDLED_EXTS, shardTokens: 20_000 });
  cached = { root, raw, prepared, manifest, data: loadPrepared(prepared) };
  return cached;
}

/** Removes the fixture directory. */
export function cleanupFixture(): void {
  if (cached) fs.rmSync(cached.root, { recursive: true, force: true });
  cached = null;
}

// Registered as a mocha root hook when a spec first imports this file.
if (typeof after === 'function') after(cleanupFixture);
