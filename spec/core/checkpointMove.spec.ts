/**
 * core/checkpoint pieces that sharded checkpoints use: files moved in (written by another
 * rank) are hashed and listed like written ones, and a dead writer's `.shards-*` staging
 * directory is removed by the next writer while a live one's is kept.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadCheckpoint, writeCheckpoint } from '../../core/checkpoint';
import { sha256Hex } from '../../core/hash';

describe('core/checkpoint: moved files and shard staging', () => {
  let tmp: string;
  beforeEach(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-ckmove-'))));
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('a moveFrom file is renamed into the checkpoint, listed with its sha256 and size, and verifies', () => {
    const src = path.join(tmp, 'shard.bin');
    const bytes = Buffer.from('shard bytes of rank 1');
    fs.writeFileSync(src, bytes);
    const dir = writeCheckpoint(tmp, 3, { 'a.txt': 'hello', 'part-1.bin': { moveFrom: src } }, { step: 3 });
    assert.ok(!fs.existsSync(src), 'the source was moved, not copied');
    const state = JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as { files: Record<string, string>; file_bytes: Record<string, number> };
    assert.equal(state.files['part-1.bin'], sha256Hex(bytes));
    assert.equal(state.file_bytes['part-1.bin'], bytes.length);
    assert.deepEqual(loadCheckpoint(dir).files.get('part-1.bin'), bytes);
  });

  it("the next writer removes a dead writer's .shards-* staging and keeps a live one's", () => {
    const ck = path.join(tmp, 'checkpoints');
    fs.mkdirSync(ck);
    // A pid that cannot be alive (above the kernel's pid_max) and our own, live one.
    const dead = path.join(ck, '.shards-step-00000002-4194999');
    const live = path.join(ck, `.shards-step-00000004-${process.pid}`);
    for (const d of [dead, live]) {
      fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, 'optimizer-rank-00000-of-00002.safetensors'), 'x');
    }
    writeCheckpoint(tmp, 1, { 'a.txt': 'x' }, { step: 1 });
    assert.ok(!fs.existsSync(dead), 'dead staging removed');
    assert.ok(fs.existsSync(live), 'live staging kept');
  });
});
