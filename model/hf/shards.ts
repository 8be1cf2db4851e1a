/**
 * Sharded safetensors as Hugging Face writes them: one `model.safetensors` when everything fits
 * in one shard, else `model-0000i-of-0000n.safetensors` plus `model.safetensors.index.json`
 * ({metadata: {total_size}, weight_map: {tensor: file}}, names sorted). Tensors keep their given
 * order; a shard closes before the tensor that would take it past `maxShardBytes` (a tensor
 * larger than that gets a shard of its own).
 */
import fs from 'fs';
import path from 'path';
import { CheckpointError } from '../../core/errors';
import { decodeSafetensors, encodeSafetensors, SafeTensor } from '../../core/safetensors';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';
/** Default shard size: 2 GiB of tensor data. */
export const DEFAULT_MAX_SHARD_BYTES = 2 * 1024 ** 3;

const shardName = (i: number, n: number) => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;

/** File name -> bytes for the shards and (when sharded) the index. */
export function encodeShards(tensors: Map<string, SafeTensor>, maxShardBytes = DEFAULT_MAX_SHARD_BYTES): Map<string, Buffer> {
  const groups: [string, SafeTensor][][] = [[]];
  let size = 0;
  let total = 0;
  for (const [name, t] of tensors) {
    const bytes = t.data.byteLength;
    if (groups[groups.length - 1].length > 0 && size + bytes > maxShardBytes) {
      groups.push([]);
      size = 0;
    }
    groups[groups.length - 1].push([name, t]);
    size += bytes;
    total += bytes;
  }
  const out = new Map<string, Buffer>();
  const meta = { format: 'pt' };
  if (groups.length === 1) {
    out.set(SINGLE_FILE, encodeSafetensors(new Map(groups[0]), meta));
    return out;
  }
  const weightMap: Record<string, string> = {};
  groups.forEach((g, i) => {
    const file = shardName(i, groups.length);
    out.set(file, encodeSafetensors(new Map(g), meta));
    for (const [name] of g) weightMap[name] = file;
  });
  const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]]));
  out.set(INDEX_FILE, Buffer.from(JSON.stringify({ metadata: { total_size: total }, weight_map: sorted }, null, 2) + '\n'));
  return out;
}

/** Reads every tensor of a HF directory (single file or index + shards). */
export function readShards(dir: string): Map<string, SafeTensor> {
  const indexPath = path.join(dir, INDEX_FILE);
  const single = path.join(dir, SINGLE_FILE);
  const read = (file: string) => {
    let buf: Buffer;
    try {
      buf = fs.readFileSync(file);
    } catch {
      throw new CheckpointError('cannot read the file', { where: file, hint: 'the index names a shard that is not there' });
    }
    return decodeSafetensors(buf, file).tensors;
  };
  if (!fs.existsSync(indexPath)) {
    if (!fs.existsSync(single)) throw new CheckpointError(`neither ${SINGLE_FILE} nor ${INDEX_FILE} is there`, { where: dir, hint: 'point --hf at a Hugging Face model directory' });
    return read(single);
  }
  let index: { weight_map?: Record<string, string> };
  try {
    index = JSON.parse(fs.readFileSync(indexPath, 'utf8')) as typeof index;
  } catch (e) {
    throw new CheckpointError(`invalid JSON (${(e as Error).message})`, { where: indexPath });
  }
  const wm = index.weight_map;
  if (!wm || typeof wm !== 'object') throw new CheckpointError('no weight_map', { where: indexPath });
  const all = new Map<string, SafeTensor>();
  for (const file of [...new Set(Object.values(wm))].sort()) {
    if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) throw new CheckpointError(`bad shard name ${JSON.stringify(file)}`, { where: indexPath });
    for (const [name, t] of read(path.join(dir, file))) {
      if (wm[name] !== file) throw new CheckpointError(`tensor ${name} is in ${file} but the index says ${JSON.stringify(wm[name])}`, { where: indexPath });
      all.set(name, t);
    }
  }
  for (const name of Object.keys(wm)) if (!all.has(name)) throw new CheckpointError(`tensor ${name} is not in ${wm[name]}`, { where: indexPath });
  return all;
}
