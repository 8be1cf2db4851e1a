/**
 * The setImmediate wrapper of core/webgpu/dawn.ts: only Dawn's ticks are held for synchronous
 * reads; every other callback (plain, bound, built-in, with arguments) runs from the event loop
 * exactly once, as before. Needs no adapter.
 */
import { strict as assert } from 'assert';
import { promisify } from 'util';
import { installDawnTickCapture, runPendingDawnTicks } from '../../core/webgpu/dawn';

describe('webgpu: setImmediate capture', () => {
  before(() => installDawnTickCapture());

  it('never runs a JS callback (plain, bound, with arguments) from a synchronous read', async () => {
    const ran: string[] = [];
    setImmediate(() => ran.push('plain'));
    setImmediate(function (this: { tag: string }) {
      ran.push(this.tag);
    }.bind({ tag: 'bound' }));
    setImmediate((a: string) => ran.push(a), 'arg');
    assert.equal(runPendingDawnTicks(), 0);
    assert.deepEqual(ran, []);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(ran.sort(), ['arg', 'bound', 'plain']);
  });

  it('keeps util.promisify(setImmediate) and clearImmediate working', async () => {
    assert.equal(await promisify(setImmediate)('value'), 'value');
    let ran = false;
    clearImmediate(setImmediate(() => (ran = true)));
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(ran, false);
  });
});
