/** Dev loop: a few training steps on the synthetic source, one line per step (node dist/scripts/dev/train-synth.js [backend] [steps]). */
import { selectBackend } from '../../core/backend';
import { loadTrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';

(async () => {
  await selectBackend((process.argv[2] as 'wasm') ?? 'wasm');
  const { config } = loadTrainConfig('configs/tiny.yaml', ["train.steps=200",'data.synthetic={}', 'data.seqLen=64', 'data.microBatchSize=4', 'data.microBatches=2', 'optim.lr=0.003', 'train.steps=40', `optim.schedule={type: wsd, warmupSteps: 5, decaySteps: 10}`]);
  const t = new Trainer(config, new MarkovSource(config.seed, config.model.vocabSize, 4, 64));
  for (let i = 0; i < Number(process.argv[3] ?? 30); i++) {
    const r = await t.step();
    if (r.kind !== 'step') { console.log('spike', r.event); continue; }
    const m = r.metrics;
    console.log(m.step, m.loss.toFixed(4), m.grad_norm.toFixed(3), m.ffn_experts_per_token.toFixed(3), Math.round(m.tokens_per_s), m.fingerprint, m.param_hash ?? '');
  }
})().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
