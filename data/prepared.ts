/**
 * Loads a prepared directory into memory: per source, one Int32Array of concatenated document
 * tokens plus document offsets (at our scale this beats memory-mapping, and packing becomes
 * plain index arithmetic). Every shard and the tokenizer are checked against the manifest.
 */
import path from 'path';
import { DataError } from '../core/errors';
import { decodeShard } from './shards';
import { Manifest, readManifest, readVerified } from './manifest';

export interface SourceTokens {
  name: string;
  /** All documents' tokens, concatenated (no separators). */
  tokens: Int32Array;
  /** documents + 1 offsets into `tokens`. */
  docOffsets: Int32Array;
  documents: number;
}

export interface PreparedData {
  dir: string;
  manifest: Manifest;
  tokenizerJson: string;
  sources: Map<string, SourceTokens>;
}

/** Reads the manifest, verifies checksums, and loads the named sources (default: all). */
export function loadPrepared(dir: string, only?: string[]): PreparedData {
  const manifest = readManifest(dir);
  const tokenizerJson = readVerified(dir, manifest.tokenizer.file, manifest.tokenizer.sha256, 'tokenizer').toString('utf8');
  const names = only ?? Object.keys(manifest.sources);
  const sources = new Map<string, SourceTokens>();
  for (const name of names) {
    const src = manifest.sources[name];
    if (!src) throw new DataError(`source "${name}" is not in the prepared data (it has: ${Object.keys(manifest.sources).join(', ')})`, { where: dir });
    const tokens = new Int32Array(src.tokens);
    const docOffsets = new Int32Array(src.documents + 1);
    let t = 0;
    let d = 0;
    for (const sh of src.shards) {
      const data = decodeShard(readVerified(dir, sh.file, sh.sha256, 'shard'), path.join(dir, sh.file));
      if (data.offsets.length - 1 !== sh.rows || data.tokens.length !== sh.tokens || d + sh.rows > src.documents || t + sh.tokens > src.tokens) {
        throw new DataError(`shard ${sh.file} holds ${data.offsets.length - 1} rows / ${data.tokens.length} tokens, manifest says ${sh.rows} / ${sh.tokens}`, { where: dir });
      }
      tokens.set(data.tokens, t);
      for (let i = 1; i <= sh.rows; i++) docOffsets[d + i] = t + data.offsets[i];
      t += sh.tokens;
      d += sh.rows;
    }
    if (d !== src.documents || t !== src.tokens) {
      throw new DataError(`source "${name}" shards hold ${d} documents / ${t} tokens, manifest says ${src.documents} / ${src.tokens}`, { where: dir });
    }
    sources.set(name, { name, tokens, docOffsets, documents: d });
  }
  return { dir, manifest, tokenizerJson, sources };
}
