/** Data-parallel rank blocks must be nodes of the canonical tree; refused at load, one line, exit 2. */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { ConfigError } from '../../core/errors';
import { checkDataParallel, rankBlocksAreNodes } from '../../trainer/config';
import { blockNodes } from '../../parallel/tree';

describe('data-parallel rank blocks checked at config load', () => {
  it('accepts worlds whose blocks are tree nodes and refuses the others with a hint', () => {
    for (const [m, w] of [[4, 2], [8, 2], [6, 3], [3, 3], [8, 4], [16, 8], [7, 1]]) assert.doesNotThrow(() => checkDataParallel(m, w), `${m}/${w}`);
    for (const [m, w] of [[6, 2], [12, 4], [10, 2], [5, 2], [12, 8]]) {
      assert.throws(() => checkDataParallel(m, w), (e: unknown) => e instanceof ConfigError && e.where === 'data.microBatches' && !e.message.includes('\n') && /use data\.microBatches \d/.test(e.message), `${m}/${w}`);
    }
  });

  it('agrees with the canonical tree for every M, W up to 32', () => {
    for (let w = 2; w <= 8; w++) {
      for (let m = 1; m <= 32; m++) {
        const n = m / w;
        const nodes = m % w === 0 && Array.from({ length: w }, (_, r) => blockNodes(r * n, (r + 1) * n, m).length === 1).every(Boolean);
        assert.equal(rankBlocksAreNodes(m, w), nodes, `${m}/${w}`);
      }
    }
  });

  it('`moecat train` with microBatches 6 and world size 2 exits 2 with one line, before any rendezvous', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-dpcfg-'));
    try {
      const main = path.join(__dirname, '..', '..', 'cli', 'main.js');
      const r = spawnSync(process.execPath, [main, 'train', '--config', 'configs/tiny.yaml', '--out', path.join(out, 'run'), '--set', 'data.synthetic={}', '--set', 'data.microBatches=6', '--world-size', '2', '--rank', '0', '--master', '127.0.0.1:9'], {
        encoding: 'utf8', env: { ...process.env, MOECAT_SECRET: 'x', MOECAT_BACKEND: 'cpu' }, timeout: 60000,
      });
      assert.equal(r.status, 2, r.stderr);
      const errs = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
      assert.deepEqual(errs, ['error: data.microBatches: 6 split over 2 ranks gives blocks of 3 that are not nodes of the canonical reduction tree over 6 (use data.microBatches 2, 4, 8, 16, ... with world size 2)']);
      assert.ok(!/joining/.test(r.stderr), 'refused before joining the group');
      assert.ok(!fs.existsSync(path.join(out, 'run')), 'nothing written');
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
