import { strict as assert } from 'assert';
import * as path from 'path';
import { selectBackend } from '../../core/backend';
import { buildReport } from '../../analysis/report/report';
import { auditRun } from '../../trainer/audit';
import { loadTrainerCheckpoint } from '../../trainer/checkpointing';
import { readMetrics } from '../../trainer/metrics';
import { BACKEND, SPIKY, trainedRun } from './helpers';

describe('an injected loss spike, end to end', function () {
  this.timeout(300000);
  let run: string;
  before(async () => {
    await selectBackend(BACKEND);
    run = await trainedRun('spiky', SPIKY);
  });

  it('is detected, rolled back and its batch skipped, and the run finishes', () => {
    const lines = readMetrics(path.join(run, 'metrics.jsonl'));
    const events = lines.filter((l) => (l as { event?: string }).event === 'spike') as unknown as { step: number; data_step: number; restored_to: number }[];
    assert.equal(events.length, 1);
    assert.equal(events[0].data_step, 11);
    assert.equal(events[0].step, 12);
    assert.equal(events[0].restored_to, 8);
    const steps = lines.filter((l) => typeof l.fingerprint === 'string').map((l) => l.step);
    assert.deepEqual(steps, Array.from({ length: 16 }, (_, i) => i + 1), 'one step line per step, replayed steps rewritten');
    assert.ok(!lines.some((l) => (l as { data_step?: number }).data_step === 11 && typeof l.fingerprint === 'string'), 'the spiking batch never became a step');
    const ck = loadTrainerCheckpoint(run);
    assert.equal(ck.state.step, 16);
    assert.equal(ck.state.dataStep, 17);
    assert.deepEqual(ck.state.skipped, [11]);
  });

  it('audit replays the spike deterministically and finds the range identical', async () => {
    const res = await auditRun(run, { from: 9, to: 16 });
    assert.equal(res.ok, true, JSON.stringify(res.firstDivergence));
    assert.equal(res.start.step, 8);
    assert.equal(res.checked, 8);
    assert.deepEqual(res.spikes.map((e) => [e.step, e.data_step]), [[12, 11]]);
  });

  it('the report marks the spike on the loss plot and lists it', () => {
    const { html } = buildReport(run, { fitOptions: { iters: 1000 } });
    const loss = html.slice(html.indexOf('<figure id="plot-loss">'), html.indexOf('</figure>', html.indexOf('<figure id="plot-loss">')));
    assert.match(loss, /<g class="marker" data-label="loss spike at step 12 \(data step 11, rolled back to 8\)">/);
    assert.match(loss, /1 loss spike\(s\) marked in red/);
    assert.match(html, /<tr class="spike-event"><td>12<\/td><td>11<\/td><td>grad norm [^<]+<\/td><td>8<\/td><\/tr>/);
  });
});
