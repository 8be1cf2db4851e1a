import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { useTestBackend } from '../helpers/backend';
import { loadTrainConfig } from '../../trainer/config';
import { readMetrics } from '../../trainer/metrics';
import { runTraining } from '../../trainer/run';
import { finalLoss, lastStepsCount, pointName, runSweep, SweepOptions, SweepPoint } from '../../trainer/sweep';

const CONFIG = 'configs/tiny.yaml';
const SETS = [
  'data.synthetic={}', 'data.seqLen=8', 'data.microBatchSize=2', 'data.microBatches=1', 'optim.schedule={type: constant}',
  'train.checkpointEvery=0', 'stability.spike={enabled: false}',
  'model.dModel=32', 'model.attention.nHeads=2', 'model.attention.qLoraRank=16', 'model.attention.kvLoraRank=16', 'model.ffnHidden=64', 'model.moe.expertHidden=32',
];
const STEPS = 5;

async function sweep(outDir: string, lrs: number[], extra: Partial<SweepOptions> = {}) {
  const events: string[] = [];
  const res = await runSweep({ configFile: CONFIG, sets: SETS, lrs, steps: STEPS, outDir, backend: 'test', onPoint: (p: SweepPoint, what) => events.push(`${p.name}:${what}`), ...extra });
  return { res, events };
}

function mtimes(dir: string): Record<string, number> {
  const out: Record<string, number> = {};
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (!['results.csv', 'results.json', 'loss_vs_lr.svg'].includes(e.name)) out[p] = fs.statSync(p).mtimeMs;
    }
  };
  walk(dir);
  return out;
}

describe('moecat sweep', function () {
  this.timeout(600000);
  let tmp: string;
  let dir: string;
  before(async () => {
    await useTestBackend();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-sweep-'));
    dir = path.join(tmp, 'sweep');
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('final loss is the mean lm_loss of the last 10% of steps (at least one)', () => {
    assert.equal(lastStepsCount(100), 10);
    assert.equal(lastStepsCount(15), 2);
    assert.equal(lastStepsCount(5), 1);
  });

  it('runs every point of the grid into its own run directory and writes csv, json and svg', async () => {
    const { res, events } = await sweep(dir, [1e-3, 1e-2]);
    const names = [pointName(1e-3, 0.02), pointName(1e-2, 0.02)];
    assert.deepEqual(events, names.flatMap((n) => [`${n}:started`, `${n}:finished`]));
    assert.equal(res.points.length, 2);
    for (const p of res.points) {
      assert.equal(p.status, 'done');
      const ms = readMetrics(path.join(dir, p.runDir, 'metrics.jsonl')).filter((m) => m.fingerprint);
      assert.deepEqual(ms.map((m) => m.step), [1, 2, 3, 4, 5]);
      assert.equal(p.finalLoss, ms[4].lm_loss);
      assert.equal(ms[0].lr, p.lr);
    }
    const csv = fs.readFileSync(path.join(dir, 'results.csv'), 'utf8').trim().split('\n');
    assert.equal(csv.length, 3);
    assert.ok(csv[0].startsWith('name,lr,init_std,status,final_lm_loss'));
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
    assert.equal(json.proxy.dModel, 32);
    assert.equal(json.best, [...res.points].sort((a, b) => a.finalLoss! - b.finalLoss!)[0].name);
    assert.match(fs.readFileSync(path.join(dir, 'loss_vs_lr.svg'), 'utf8'), /^<svg[^]*<polyline[^]*<\/svg>\n$/);
  });

  it('a second invocation reruns nothing and reports the same results', async () => {
    const before = mtimes(dir);
    const first = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
    const { res, events } = await sweep(dir, [1e-3, 1e-2]);
    assert.deepEqual(events, [pointName(1e-3, 0.02), pointName(1e-2, 0.02)].map((n) => `${n}:skipped`));
    assert.deepEqual(mtimes(dir), before, 'no file of any point was touched');
    assert.deepEqual(res.points.map((p) => p.finalLoss), first.points.map((p: SweepPoint) => p.finalLoss));
  });

  it('a larger grid runs only the new points', async () => {
    const { events } = await sweep(dir, [1e-3, 1e-2, 3e-3]);
    assert.deepEqual(events.filter((e) => !e.endsWith(':skipped')), [`${pointName(3e-3, 0.02)}:started`, `${pointName(3e-3, 0.02)}:finished`]);
  });

  it('a point cut short resumes from its checkpoint and scores as if run straight', async () => {
    const d2 = path.join(tmp, 'cut');
    const name = pointName(1e-2, 0.02);
    const { config, raw } = loadTrainConfig(CONFIG, [...SETS, `train.steps=${STEPS}`, 'optim.lr=0.01', 'model.initStd=0.02']);
    const r = await runTraining({ outDir: path.join(d2, 'points', name), config, rawConfig: raw, maxSteps: 2, backend: 'test' });
    r.trainer.dispose();
    // (a point started by an older moecat has no point-start.json; resume still works)
    const { res, events } = await sweep(d2, [1e-2]);
    assert.deepEqual(events, [`${name}:resumed`, `${name}:finished`]);
    const straight = JSON.parse(fs.readFileSync(path.join(dir, 'points', name, 'point.json'), 'utf8')) as SweepPoint;
    assert.equal(res.points[0].finalLoss, straight.finalLoss);
    assert.equal(finalLoss(path.join(d2, 'points', name, 'metrics.jsonl'), STEPS), straight.finalLoss);
  });

  it('refuses to mix a different config into an existing sweep directory', async () => {
    await assert.rejects(sweep(dir, [1e-3], { sets: [...SETS, 'data.seqLen=16'] }), /was run with a different config/);
  });

  it('refuses to resume a cut-short point under a different config', async () => {
    const d3 = path.join(tmp, 'cut2');
    await sweep(d3, [1e-2], { steps: 2 });
    const name = pointName(1e-2, 0.02);
    fs.rmSync(path.join(d3, 'points', name, 'point.json'));
    await assert.rejects(sweep(d3, [1e-2], { sets: [...SETS, 'optim.beta2=0.99'] }), /was started with a different config/);
  });

  it('refuses bad grids before any work', async () => {
    await assert.rejects(sweep(path.join(tmp, 'bad'), []), /--lr: give at least one value/);
    await assert.rejects(sweep(path.join(tmp, 'bad'), [1e-3, -1]), /--lr: values must be positive/);
    await assert.rejects(sweep(path.join(tmp, 'bad'), [1e-3], { initStds: [0.02, 0.02] }), /--init-std: values repeat/);
    assert.equal(fs.existsSync(path.join(tmp, 'bad')), false);
  });
});
