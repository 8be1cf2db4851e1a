import * as tf from '@tensorflow/tfjs';
import * as fs from 'fs';
import YAML from 'yaml';
import { selectBackend } from '../../core/backend';
import { parseModelConfig } from '../../model/config';
import { initParams, paramSpecs, ParamStore, countParams } from '../../model/params';
import { initialBiases } from '../../model/transformer';
import { microbatchLoss } from '../../trainer/losses';

(async () => {
  const be = await selectBackend((process.argv[2] as 'wasm') ?? 'wasm');
  console.log(be.name);
  const raw = YAML.parse(fs.readFileSync('configs/tiny.yaml', 'utf8'));
  const c = parseModelConfig(raw.model);
  const specs = paramSpecs(c);
  console.log('params', countParams(specs));
  const store = new ParamStore(specs, initParams(c, 1));
  const B = 8, S = 64;
  const inputs = new Int32Array(B * S).map((_, i) => (i * 7919) % c.vocabSize);
  const targets = new Int32Array(B * S).map((_, i) => (i * 104729 + 3) % c.vocabSize);
  const mb = { inputs, targets, lossMask: new Float32Array(B * S).fill(1), batchSize: B, seqLen: S };
  const biases = initialBiases(c);
  for (let it = 0; it < 3; it++) {
    const t0 = Date.now();
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => microbatchLoss(c, (n) => store.get(n), mb, { globalTokens: B * S, globalSeqs: B }, { biases, zLossCoef: 1e-4 }).total);
    const loss = value.dataSync()[0];
    const n = Object.keys(grads).length;
    let gn = 0; for (const g of Object.values(grads)) { const d = g.dataSync(); for (let i = 0; i < d.length; i++) gn += d[i] * d[i]; }
    tf.dispose(value); tf.dispose(grads);
    console.log('loss', loss, 'ngrads', n, 'gnorm', Math.sqrt(gn), 'ms', Date.now() - t0, 'tensors', before, tf.memory().numTensors);
  }
})().catch((e) => { console.error(e); process.exit(1); });
