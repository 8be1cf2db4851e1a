import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import { selectBackend } from '../../core/backend';
import { DataError } from '../../core/errors';
import { loadTrainConfig } from '../../trainer/config';
import { readMetrics } from '../../trainer/metrics';
import { runTraining } from '../../trainer/run';
import { verifyRun } from '../../trainer/verify';
import { BACKEND, copyRun, HONEST, moecat, tmpDir, trainedRun } from './helpers';

describe('moecat verify', function () {
  this.timeout(300000);
  let run: string;
  before(async () => {
    await selectBackend(BACKEND);
    run = await trainedRun('honest', HONEST);
  });

  it('passes every checkpoint of an honest run (or one step directory)', () => {
    const res = verifyRun(run);
    assert.equal(res.ok, true, JSON.stringify(res.checkpoints));
    assert.deepEqual(res.checkpoints.map((c) => c.step), [4, 8, 12]);
    assert.match(String(res.latest), /step-00000012$/);
    const one = verifyRun(path.join(run, 'checkpoints', 'step-00000008'));
    assert.deepEqual([one.ok, one.checkpoints.map((c) => c.step)], [true, [8]]);
  });

  it('catches a flipped bit in any file of any checkpoint, naming the step and the file', () => {
    const bad = copyRun(run, 'verify-bits');
    let cases = 0;
    for (const step of [4, 8, 12]) {
      const dir = path.join(bad, 'checkpoints', `step-${String(step).padStart(8, '0')}`);
      for (const name of fs.readdirSync(dir).sort()) {
        const file = path.join(dir, name);
        const original = fs.readFileSync(file);
        for (const at of [0, original.length >> 1, original.length - 1]) {
          for (const bit of [0, 5]) {
            const b = Buffer.from(original);
            b[at] ^= 1 << bit;
            fs.writeFileSync(file, b);
            const res = verifyRun(bad);
            assert.equal(res.ok, false, `${step}/${name}@${at}.${bit}`);
            const failed = res.checkpoints.filter((c) => !c.ok);
            assert.deepEqual(failed.map((c) => c.step), [step], `${step}/${name}`);
            if (name === 'state.json.sha256') assert.match(failed[0].file!, /^state\.json/);
            else assert.equal(failed[0].file, name);
            assert.ok(!failed[0].error!.includes('\n'), 'one line');
            cases++;
          }
        }
        fs.writeFileSync(file, original);
      }
    }
    assert.ok(cases >= 60, `${cases} cases`);
    assert.equal(verifyRun(bad).ok, true);
  });

  it('the CLI exits 0 when every checkpoint verifies, 1 naming a bad one, 2 on bad input', () => {
    const ok = moecat(['verify', run]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /OK: 3 checkpoint\(s\) verify/);
    const bad = copyRun(run, 'verify-cli');
    fs.truncateSync(path.join(bad, 'checkpoints', 'step-00000008', 'optimizer.safetensors'), 100);
    const failed = moecat(['verify', bad]);
    assert.equal(failed.status, 1, failed.stderr);
    assert.match(failed.stdout, /FAILED step 8 \(optimizer\.safetensors\): .*optimizer\.safetensors is truncated: 100 of \d+ bytes/);
    assert.match(failed.stdout, /FAILED: 1 of 3 checkpoint\(s\) do not verify/);
    const missing = moecat(['verify', path.join(bad, 'nope')]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /^error: .*nope: no such run directory/);
    assert.throws(() => verifyRun(tmpDir('empty-verify')), (e: unknown) => e instanceof DataError && /no checkpoints to verify/.test(e.message));
  });
});

describe('param_hash at the last step of every invocation', function () {
  this.timeout(300000);
  it('a run stopped by maxSteps records param_hash at its last step, and a resume at its own', async () => {
    const info = await selectBackend(BACKEND);
    const dir = path.join(tmpDir('maxsteps'), 'run');
    const { config, raw } = loadTrainConfig('configs/tiny.yaml', [...HONEST.filter((s) => !s.startsWith('train.checkpointEvery')), 'train.checkpointEvery=2']);
    let r = await runTraining({ outDir: dir, config, rawConfig: raw, backend: info.name, maxSteps: 3 });
    const hash3 = r.trainer.paramHash();
    r.trainer.dispose();
    r = await runTraining({ outDir: dir, resume: true, backend: info.name, maxSteps: 7 });
    const hash7 = r.trainer.paramHash();
    r.trainer.dispose();
    const m = readMetrics(path.join(dir, 'metrics.jsonl'));
    const hashed = m.filter((x) => x.param_hash !== undefined).map((x) => x.step);
    // paramHashEvery 5 gives step 5; steps 3 and 7 are the two invocations' last steps.
    assert.deepEqual(hashed, [3, 5, 7]);
    assert.equal(m.find((x) => x.step === 3)!.param_hash, hash3);
    assert.equal(m.find((x) => x.step === 7)!.param_hash, hash7);
  });
});
