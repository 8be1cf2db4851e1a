/**
 * Arrow IPC shards of tokenized documents, one row per document:
 *   tokens List<Int32> | doc_id Int32 | bytes Int32 | source Dictionary<Int32, Utf8>
 * Writing buffers one shard in typed arrays and emits it whole; reading returns the token
 * column as one flat Int32Array plus row offsets, without per-row objects.
 */
import fs from 'fs';
import path from 'path';
import * as arrow from 'apache-arrow';
import { DataError } from '../core/errors';
import { sha256Hex } from '../core/hash';
import { writeFileDurable } from '../core/fsutil';

export interface ShardRecord {
  /** Path relative to the prepared directory, e.g. `prose/shard-00000.arrow`. */
  file: string;
  sha256: string;
  rows: number;
  tokens: number;
}

export interface ShardData {
  tokens: Int32Array;
  /** rows + 1 offsets into `tokens`. */
  offsets: Int32Array;
  docIds: Int32Array;
  bytes: Int32Array;
  source: string;
}

/** Grows a typed array geometrically (amortised O(1) appends). */
class IntBuffer {
  data = new Int32Array(1024);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) this.grow(this.length + 1);
    this.data[this.length++] = v;
  }
  append(vs: ArrayLike<number>): void {
    if (this.length + vs.length > this.data.length) this.grow(this.length + vs.length);
    this.data.set(vs, this.length);
    this.length += vs.length;
  }
  private grow(min: number): void {
    const next = new Int32Array(Math.max(min, this.data.length * 2));
    next.set(this.data.subarray(0, this.length));
    this.data = next;
  }
  view(): Int32Array {
    return this.data.subarray(0, this.length);
  }
  reset(): void {
    this.length = 0;
  }
}

export class ShardWriter {
  readonly shards: ShardRecord[] = [];
  private tokens = new IntBuffer();
  private offsets = new IntBuffer();
  private docIds = new IntBuffer();
  private bytes = new IntBuffer();

  /**
   * @param root prepared directory (shards go to `<root>/<source>/`)
   * @param shardTokens a shard is closed once it holds at least this many tokens
   */
  constructor(private readonly root: string, private readonly source: string, private readonly shardTokens: number, private readonly afterShard?: (file: string) => void) {
    fs.mkdirSync(path.join(root, source), { recursive: true });
    this.offsets.push(0);
  }

  add(docId: number, tokens: ArrayLike<number>, byteLength: number): void {
    this.tokens.append(tokens);
    this.offsets.push(this.tokens.length);
    this.docIds.push(docId);
    this.bytes.push(byteLength);
    if (this.tokens.length >= this.shardTokens) this.flush();
  }

  /** Writes the buffered rows (if any) as the next shard. */
  flush(): void {
    const rows = this.docIds.length;
    if (rows === 0) return;
    const rel = `${this.source}/shard-${String(this.shards.length).padStart(5, '0')}.arrow`;
    const buf = encodeShard(this.source, this.tokens.view(), this.offsets.view(), this.docIds.view(), this.bytes.view());
    writeFileDurable(path.join(this.root, rel), buf);
    this.shards.push({ file: rel, sha256: sha256Hex(buf), rows, tokens: this.tokens.length });
    this.tokens.reset();
    this.offsets.reset();
    this.offsets.push(0);
    this.docIds.reset();
    this.bytes.reset();
    this.afterShard?.(rel);
  }
}

export function encodeShard(source: string, tokens: Int32Array, offsets: Int32Array, docIds: Int32Array, bytes: Int32Array): Uint8Array {
  const rows = docIds.length;
  const child = arrow.makeData({ type: new arrow.Int32(), data: tokens });
  const listType = new arrow.List(new arrow.Field('item', new arrow.Int32(), false));
  const list = arrow.makeData({ type: listType, length: rows, nullCount: 0, valueOffsets: offsets, child });
  const dict = arrow.makeData({
    // A fixed dictionary id: Arrow's default is a process-global counter, which would make shard
    // bytes (and checksums) depend on how many shards the process wrote before.
    type: new arrow.Dictionary(new arrow.Utf8(), new arrow.Int32(), 0),
    data: new Int32Array(rows),
    dictionary: arrow.vectorFromArray([source], new arrow.Utf8()),
  });
  const table = new arrow.Table({
    tokens: arrow.makeVector(list),
    doc_id: arrow.makeVector(docIds),
    bytes: arrow.makeVector(bytes),
    source: arrow.makeVector(dict),
  });
  return arrow.tableToIPC(table, 'file');
}

/** Decodes a shard's bytes; `where` names the shard in errors. */
export function decodeShard(buf: Uint8Array, where: string): ShardData {
  let table: arrow.Table;
  try {
    table = arrow.tableFromIPC(buf);
  } catch (e) {
    throw new DataError(`not a readable Arrow IPC file: ${(e as Error).message}`, { where });
  }
  const col = (name: string) => {
    const c = table.getChild(name);
    if (!c) throw new DataError(`shard has no "${name}" column`, { where, hint: 're-run moecat prepare' });
    return c;
  };
  const tokCol = col('tokens');
  if (!arrow.DataType.isList(tokCol.type)) throw new DataError('column "tokens" is not List<Int32>', { where });
  const rows = table.numRows;
  const offsets = new Int32Array(rows + 1);
  let total = 0;
  for (const d of tokCol.data) total += d.valueOffsets[d.offset + d.length] - d.valueOffsets[d.offset];
  const tokens = new Int32Array(total);
  let row = 0;
  let at = 0;
  for (const d of tokCol.data) {
    const vo = d.valueOffsets;
    const values = d.children[0].values as Int32Array;
    const base = d.children[0].offset;
    const start = vo[d.offset];
    const end = vo[d.offset + d.length];
    tokens.set(values.subarray(base + start, base + end), at);
    for (let i = 0; i < d.length; i++) offsets[row + i + 1] = at + vo[d.offset + i + 1] - start;
    at += end - start;
    row += d.length;
  }
  const ints = (name: string) => Int32Array.from(col(name).toArray() as ArrayLike<number>);
  const src = col('source');
  return { tokens, offsets, docIds: ints('doc_id'), bytes: ints('bytes'), source: rows > 0 ? String(src.get(0)) : '' };
}
