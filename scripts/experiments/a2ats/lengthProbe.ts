/**
 * Passkey retrieval with full attention on prompts longer than the model was trained on
 * (docs/a2ats-longctx.md). The engine refuses prompts past `maxSeqLen`; this probe calls the
 * model's forward directly (RoPE tables are computed for any length) and greedy-decodes by
 * recomputing the whole sequence per token, so it measures the weights, not the serving limits.
 *
 * Usage: node dist/scripts/experiments/a2ats/lengthProbe.js --checkpoint DIR --passkey FILE.jsonl
 *        [--n 12] [--decode 7] [--backend cpu-native]        prints one JSON line
 */
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { BackendChoice, selectBackend } from '../../../core/backend';
import { loadForServing } from '../../../inference/engineLoad';
import { forward } from '../../../model/transformer';
import { arg, gradePasskey } from './passkey';

async function main(): Promise<void> {
  await selectBackend(arg('backend', 'cpu-native') as BackendChoice);
  const { model: m, tokenizer: tok } = loadForServing(arg('checkpoint'));
  const rows = fs.readFileSync(arg('passkey'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { text: string; answer: string });
  const n = Math.min(Number(arg('n', '12')), rows.length);
  const decode = Number(arg('decode', '7'));
  let exact = 0, digits = 0;
  const lengths: number[] = [];
  const examples: string[] = [];
  for (const r of rows.slice(0, n)) {
    const ids = tok.encode(r.text);
    lengths.push(ids.length);
    for (let s = 0; s < decode; s++) {
      ids.push(tf.tidy(() => {
        const logits = forward(m.config, m.store.getter, Int32Array.from(ids), 1, ids.length, { biases: m.biases }).logits!;
        return tf.argMax(tf.slice(logits, [ids.length - 1, 0], [1, -1]), 1).dataSync()[0];
      }));
    }
    const text = tok.decode(ids.slice(-decode));
    const g = gradePasskey(text, r.answer);
    exact += g.exact ? 1 : 0;
    digits += g.digits;
    examples.push(`${r.answer}->${JSON.stringify(text)}`);
  }
  lengths.sort((a, b) => a - b);
  process.stdout.write(JSON.stringify({
    bench: 'a2ats-passkey.beyond-context', checkpoint: arg('checkpoint'), maxSeqLen: m.config.maxSeqLen, method: 'full (forward, no cache)',
    prompts: n, promptTokens: { min: lengths[0], median: lengths[n >> 1], max: lengths[n - 1] },
    accuracy: exact / n, digitAcc: digits / n, examples: examples.slice(0, 4),
  }) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exit(1);
});
