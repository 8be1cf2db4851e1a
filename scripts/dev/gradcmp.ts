import * as tf from '@tensorflow/tfjs';
import * as fs from 'fs';
import YAML from 'yaml';
import { selectBackend } from '../../core/backend';
import { parseModelConfig } from '../../model/config';
import { initParams, paramSpecs, ParamStore } from '../../model/params';
import { initialBiases } from '../../model/transformer';
import { microbatchLoss } from '../../trainer/losses';

(async () => {
  await selectBackend((process.argv[2] as 'wasm') ?? 'wasm');
  const raw = YAML.parse(fs.readFileSync('configs/tiny.yaml', 'utf8'));
  const c = parseModelConfig(raw.model);
  const store = new ParamStore(paramSpecs(c), initParams(c, 1));
  const B = 2, S = 16;
  const inputs = new Int32Array(B * S).map((_, i) => (i * 7919) % c.vocabSize);
  const targets = new Int32Array(B * S).map((_, i) => (i * 104729 + 3) % c.vocabSize);
  const mb = { inputs, targets, lossMask: new Float32Array(B * S).fill(1), batchSize: B, seqLen: S };
  const { grads } = tf.variableGrads(() => microbatchLoss(c, (n) => store.get(n), mb, { globalTokens: B * S, globalSeqs: B }, { biases: initialBiases(c) }).total);
  for (const [k, g] of Object.entries(grads)) { const d = g.dataSync(); let s = 0; for (const x of d) s += x * x; console.log(k, Math.sqrt(s).toExponential(4)); }
})();
