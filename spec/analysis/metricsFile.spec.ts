import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { command } from '../../cli/curve';
import { readMetricSeries } from '../../analysis/metricsFile';
import { DataError } from '../../core/errors';
import { makeCurve } from '../../analysis/synthetic';

/** Temp dirs of this file, removed after its tests. */
const made: string[] = [];
function tmp(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-curve-'));
  made.push(dir);
  return dir;
}
after(() => made.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function tmpRun(lines: string[]): string {
  const dir = tmp();
  fs.writeFileSync(path.join(dir, 'metrics.jsonl'), lines.join('\n') + '\n');
  return dir;
}
const good = Array.from({ length: 12 }, (_, i) => JSON.stringify({ step: i + 1, loss: 3 - i * 0.1, lr: 1e-3 }));

describe('analysis/metricsFile (moecat curve input)', () => {
  it('reads a run directory, sorted by step, a repeated step keeping its last value', () => {
    const dir = tmpRun([...good.slice(6), ...good.slice(0, 6), JSON.stringify({ step: 3, loss: 9 }), JSON.stringify({ step: 13, eval_loss: 1 })]);
    const s = readMetricSeries(dir, 'loss');
    assert.equal(s.file, path.join(dir, 'metrics.jsonl'));
    assert.deepEqual(s.steps, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert.equal(s.values[2], 9);
  });

  it('refuses a missing file, naming it', () => {
    assert.throws(() => readMetricSeries('/nonexistent/run', 'loss'), (e: Error) => e instanceof DataError && /\/nonexistent\/run/.test(e.message));
    const empty = tmp();
    assert.throws(() => readMetricSeries(empty, 'loss'), /metrics\.jsonl: no metrics\.jsonl/);
  });

  it('refuses an unknown metric and lists the available ones', () => {
    assert.throws(() => readMetricSeries(tmpRun(good), 'acc'), /no metric 'acc' in any line \(available: loss, lr\)/);
  });

  it('refuses fewer than 10 points', () => {
    assert.throws(() => readMetricSeries(tmpRun(good.slice(0, 9)), 'loss'), /only 9 points of 'loss'; curve analysis needs at least 10/);
  });

  it('refuses non-numeric values and bad JSON, naming file and line', () => {
    const bad = [...good];
    bad[4] = JSON.stringify({ step: 5, loss: 'nan' });
    assert.throws(() => readMetricSeries(tmpRun(bad), 'loss'), /metrics\.jsonl:5: metric 'loss' is "nan", not a finite number/);
    bad[4] = JSON.stringify({ step: 5, loss: null });
    assert.throws(() => readMetricSeries(tmpRun(bad), 'loss'), /metrics\.jsonl:5: metric 'loss' is null/);
    bad[4] = '{"step": 5, "loss": ';
    assert.throws(() => readMetricSeries(tmpRun(bad), 'loss'), /metrics\.jsonl:5: not valid JSON/);
    bad[4] = JSON.stringify({ step: 'five', loss: 1 });
    assert.throws(() => readMetricSeries(tmpRun(bad), 'loss'), /metrics\.jsonl:5: 'step' is "five"/);
  });

  it('`moecat curve --json` prints the detected jump of a metrics.jsonl', async () => {
    const spec = { steps: 1500, noise: 0.01, spikes: [300], spikeSize: 0.4, events: [{ kind: 'jump' as const, step: 800, size: 0.15 }] };
    const c = makeCurve(spec, 2);
    const dir = tmpRun(c.steps.map((s, i) => JSON.stringify({ step: s, loss: c.loss[i] })));
    const out: string[] = [];
    const write = process.stdout.write;
    process.stdout.write = ((chunk: string) => (out.push(String(chunk)), true)) as typeof process.stdout.write;
    try {
      await (command.handler as (a: unknown) => Promise<void>)({ run: dir, metric: 'loss', x: 'step', seed: 1, iters: 4000, chains: 1, gamma: 1, json: true });
    } finally {
      process.stdout.write = write;
    }
    const res = JSON.parse(out.join(''));
    assert.equal(res.points, 1500);
    assert.equal(res.changes.length, 1);
    assert.equal(res.changes[0].kind, 'jump');
    assert.ok(Math.abs(res.changes[0].step - 800) <= 15);
  });
});
