import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { selectBackend } from '../../core/backend';
import { TrainingError } from '../../core/errors';
import { loadTrainConfig } from '../../trainer/config';
import { runTraining } from '../../trainer/run';
import { readMetrics } from '../../trainer/metrics';
import * as dataSourceModule from '../../trainer/dataSource';
import { DataSource } from '../../trainer/data';
import { Batch } from '../../data/batch';

const SETS = ['data.synthetic={}', 'data.seqLen=16', 'data.microBatchSize=2', 'data.microBatches=1', 'train.steps=6', 'optim.schedule={type: constant}'];

/** Serves the same batches, except that the second read of step 3 has one token changed. */
class FlakySource implements DataSource {
  private reads = new Map<number, number>();
  constructor(private readonly inner: DataSource) {}
  microbatch(step: number, mb: number): Batch {
    const b = this.inner.microbatch(step, mb);
    const n = (this.reads.get(step) ?? 0) + 1;
    this.reads.set(step, n);
    if (step === 3 && n === 2) b.inputs[5] = (b.inputs[5] + 1) % 512;
    return b;
  }
  state(): unknown { return this.inner.state(); }
  tokenizerJson(): string | null { return null; }
  describe(): string { return 'flaky'; }
}

describe('in-training silent-corruption check', function () {
  this.timeout(300000);
  let tmp: string;
  before(async () => {
    await selectBackend((process.env.MOECAT_TEST_BACKEND as 'wasm') ?? 'wasm');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-recompute-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  async function run(dir: string, sets: string[]) {
    const { config, raw } = loadTrainConfig('configs/tiny.yaml', [...SETS, ...sets]);
    const r = await runTraining({ outDir: path.join(tmp, dir), config, rawConfig: raw, backend: 'test' });
    const h = r.trainer.paramHash();
    r.trainer.dispose();
    return h;
  }

  it('recomputing sampled steps changes nothing on an honest run and marks the checked steps', async () => {
    const plain = await run('plain', []);
    const checked = await run('checked', ['stability.recomputeEvery=2']);
    assert.equal(checked, plain);
    const m = readMetrics(path.join(tmp, 'checked', 'metrics.jsonl')).filter((x) => x.fingerprint);
    assert.deepEqual(m.filter((x) => x.recomputed).map((x) => x.step), [2, 4, 6]);
  });

  it('a step whose recomputation differs stops the run with a clear error', async () => {
    const original = dataSourceModule.makeDataSource;
    (dataSourceModule as { makeDataSource: typeof original }).makeDataSource = (c, s) => new FlakySource(original(c, s));
    try {
      await assert.rejects(run('flaky', ['stability.recomputeEvery=1']), (e: unknown) => e instanceof TrainingError && /silent-corruption check failed at step 4/.test(e.message));
    } finally {
      (dataSourceModule as { makeDataSource: typeof original }).makeDataSource = original;
    }
  });
});
