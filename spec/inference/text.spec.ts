/** Streaming detokenisation and the batching policy: text deltas, stop strings, admission. */
import { strict as assert } from 'assert';
import { TextStream } from '../../inference/engineText';
import { Batcher } from '../../inference/batcher';
import { topLogprobs } from '../../inference/sampling';

/** Byte ids -> UTF-8 text, like the byte-level tokenizer. */
const decode = (ids: number[]) => Buffer.from(ids).toString('utf8');
const bytes = (s: string) => [...Buffer.from(s, 'utf8')];

function run(text: string, stops: string[]): { deltas: string[]; stopped: boolean; value: string } {
  const t = new TextStream(decode, stops);
  const deltas: string[] = [];
  let stopped = false;
  for (const b of bytes(text)) {
    const r = t.push(b);
    deltas.push(r.delta);
    if (r.stop) {
      stopped = true;
      break;
    }
  }
  deltas.push(t.finish());
  return { deltas, stopped, value: t.value };
}

describe('inference text stream and batcher', () => {
  it('deltas concatenate to the decoded text', () => {
    const r = run('hello world', []);
    assert.equal(r.deltas.join(''), 'hello world');
    assert.equal(r.stopped, false);
  });

  it('holds back a multi-byte character until its last byte arrives', () => {
    const r = run('aé€', []);
    assert.deepEqual(r.deltas.filter(Boolean), ['a', 'é', '€']);
    assert.ok(r.deltas.every((d) => !d.includes('\uFFFD')));
  });

  it('cuts at a stop string that spans tokens and never emits any part of it', () => {
    const r = run('one two STOP three', ['STOP']);
    assert.equal(r.stopped, true);
    assert.equal(r.value, 'one two ');
    assert.equal(r.deltas.join(''), 'one two ');
  });

  it('releases a held-back prefix of a stop string when it does not complete', () => {
    const r = run('a STand more', ['STOP']);
    assert.equal(r.stopped, false);
    assert.equal(r.deltas.join(''), 'a STand more');
    // "S" and "ST" were held back until "a" ruled the stop string out.
    const i = r.deltas.indexOf('STa');
    assert.ok(i > 0);
  });

  it('the earliest of several stop strings wins', () => {
    assert.equal(run('xx END yy STOP', ['STOP', 'END']).value, 'xx ');
  });

  it('topLogprobs returns the n best in order, ties to the lower id', () => {
    const l = Float32Array.from([0, 3, 1, 3, -1]);
    const t = topLogprobs(l, 3);
    assert.deepEqual(t.map((x) => x.id), [1, 3, 2]);
    const z = Math.log(l.reduce((s, x) => s + Math.exp(x), 0));
    assert.ok(Math.abs(t[0].logprob - (3 - z)) < 1e-6);
  });

  it('the batcher admits FIFO up to max batch and a prefill budget, at least one request', () => {
    const b = new Batcher<{ promptLength: number; cancelled: boolean; n: number }>({ maxBatch: 3, maxQueue: 10, prefillTokens: 100 });
    const r = (n: number, len: number) => ({ promptLength: len, cancelled: false, n });
    [r(1, 300), r(2, 50), r(3, 40), r(4, 10), r(5, 10)].forEach((x) => assert.ok(b.enqueue(x)));
    assert.deepEqual(b.admit().map((x) => x.n), [1]); // over budget alone: still admitted
    b.running.push(r(1, 300));
    assert.deepEqual(b.admit().map((x) => x.n), [2, 3]); // 50 + 40 fit, max batch reached
    b.waiting[0].cancelled = true;
    assert.deepEqual(b.dropCancelledWaiting().map((x) => x.n), [4]);
    assert.deepEqual(b.waiting.map((x) => x.n), [5]);
  });
});
