/**
 * moecat's logits for fixed token ids on a Hugging Face longcat_flash directory (imported into a
 * temporary run first), written as JSON for scripts/reference/compare_transformers.py:
 *   node dist/scripts/reference/moecatLogits.js HF_DIR OUT.json [--backend wasm]
 * Output: {"ids": [[...], [...]], "logits": [B][S][V]}.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend, BackendChoice } from '../../core/backend';
import { importHf } from '../../model/hf/importDir';
import { forward } from '../../model/transformer';
import { loadServingModel } from '../../inference/loadModel';

async function main(): Promise<void> {
  const [hf, out] = process.argv.slice(2);
  const bi = process.argv.indexOf('--backend');
  if (!hf || !out) {
    process.stderr.write('usage: moecatLogits.js HF_DIR OUT.json [--backend NAME]\n');
    process.exit(2);
  }
  await selectBackend((bi > 0 ? process.argv[bi + 1] : 'auto') as BackendChoice);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'moecat-logits-'));
  try {
    importHf({ hf, out: path.join(tmp, 'run') });
    const m = loadServingModel(path.join(tmp, 'run'));
    const B = 2;
    const S = Math.min(24, m.config.maxSeqLen);
    const ids = Int32Array.from({ length: B * S }, (_, i) => (i * 37 + 11) % m.config.vocabSize);
    const logits = tf.tidy(() => forward(m.config, m.store.getter, ids, B, S, { biases: m.biases }).logits!.dataSync() as Float32Array);
    m.store.dispose();
    const V = m.config.vocabSize;
    const rows = (b: number) => Array.from({ length: S }, (_, s) => Array.from(logits.subarray((b * S + s) * V, (b * S + s + 1) * V)));
    fs.writeFileSync(out, JSON.stringify({ ids: [Array.from(ids.subarray(0, S)), Array.from(ids.subarray(S))], logits: [rows(0), rows(1)] }));
    process.stdout.write(`wrote ${out}: logits [${B}, ${S}, ${V}]\n`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

void main();
