/**
 * Sharded checkpoints in process (LocalGroup): two ranks write their optimizer shards and the
 * loader reassembles the full moments; ranks that do not share the run directory are refused
 * with one clear error and nothing is committed.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { selectBackend } from '../../core/backend';
import { latestCheckpoint } from '../../core/checkpoint';
import { loadTrainConfig, TrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { loadTrainerCheckpoint } from '../../trainer/checkpointing';
import { saveShardedCheckpoint } from '../../trainer/shardedCheckpoint';
import { LocalGroup } from '../helpers/localGroup';

function cfg(): { config: TrainConfig; raw: Record<string, unknown> } {
  return loadTrainConfig('configs/tiny.yaml', ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=2', 'train.steps=4', 'optim.schedule={type: constant}', 'parallel.shard=optimizer']);
}

describe('sharded checkpoints (in process)', function () {
  this.timeout(120000);
  let tmp: string;
  before(async () => {
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
  });
  beforeEach(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-shardck-'))));
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  async function twoRanks(): Promise<Trainer[]> {
    const { config } = cfg();
    const g = new LocalGroup(2);
    const ts = [0, 1].map((r) => new Trainer(config, new MarkovSource(config.seed, config.model.vocabSize, 2, 16), { dp: g.member(r) }));
    for (let s = 0; s < 2; s++) await Promise.all(ts.map((t) => t.step()));
    return ts;
  }

  it('two ranks write their shards; the loader reassembles the full moments', async () => {
    const ts = await twoRanks();
    const extras = { rawConfig: cfg().raw, backend: 'test', keepLast: 3, tokenizerJson: null };
    const dirs = await Promise.all(ts.map((t, r) => saveShardedCheckpoint(tmp, t, extras, r === 0)));
    assert.equal(dirs[1], null);
    const loaded = loadTrainerCheckpoint(dirs[0]!);
    const full = await Promise.all(ts.map((t) => t.checkpointStateGathered()));
    assert.deepEqual(Buffer.from(loaded.state.opt.m.buffer), Buffer.from(full[0].opt.m.buffer));
    assert.deepEqual(Buffer.from(loaded.state.opt.v.buffer), Buffer.from(full[0].opt.v.buffer));
    assert.equal(loaded.state.opt.t, 2);
    assert.equal(loaded.saved.param_hash, ts[0].paramHash());
    ts.forEach((t) => t.dispose());
  });

  it('ranks that write to different filesystems are refused naming the missing shard; nothing is committed', async () => {
    const ts = await twoRanks();
    const extras = { rawConfig: cfg().raw, backend: 'test', keepLast: 3, tokenizerJson: null };
    const elsewhere = path.join(tmp, 'other-host');
    const results = await Promise.allSettled(ts.map((t, r) => saveShardedCheckpoint(r === 0 ? tmp : elsewhere, t, extras, r === 0)));
    assert.equal(results[0].status, 'rejected');
    assert.match(String((results[0] as PromiseRejectedResult).reason.message), /rank 1 wrote its optimizer shard, but rank 0 cannot see it/);
    assert.equal(latestCheckpoint(tmp), null);
    ts.forEach((t) => t.dispose());
  });
});
