/**
 * Training throughput (`npm run bench -- train`): full optimizer steps (forward, backward, tree
 * accumulation, AdamW, bias update) of configs/tiny.yaml and configs/small.yaml on the
 * synthetic source, median of N steps after 2 warm-up steps: tokens/s and achieved GFLOP/s
 * (6 × active parameters per token + attention, from the routing actually taken), and the
 * share of each step spent outside forward+backward.
 * Usage: node dist/scripts/bench/train.js [--backend wasm] [--configs tiny,small] [--steps 6]
 */
import { selectBackend, BackendName } from '../../core/backend';
import { loadTrainConfig } from '../../trainer/config';
import { MarkovSource } from '../../trainer/data';
import { Trainer } from '../../trainer/trainer';
import { forwardFlops } from './flops';
import { MoeStats } from '../../model/moe/layer';
import { arg, median } from './args';

async function main(): Promise<void> {
  const backend = arg('backend', 'wasm') as BackendName;
  await selectBackend(backend);
  const steps = Number(arg('steps', '6'));
  for (const name of arg('configs', 'tiny,small').split(',')) {
    const { config } = loadTrainConfig(`configs/${name}.yaml`, ['data.synthetic={}', 'stability.spike={enabled: false}']);
    const B = config.data.microBatchSize;
    const S = config.data.seqLen;
    const M = config.data.microBatches;
    const t = new Trainer(config, new MarkovSource(config.seed, config.model.vocabSize, B, S));
    const times: number[] = [];
    const flops: number[] = [];
    for (let i = 0; i < steps + 2; i++) {
      const r = await t.step();
      if (r.kind !== 'step') throw new Error('unexpected spike');
      const m = r.metrics;
      if (i < 2) continue;
      times.push(m.step_ms);
      // Per-layer FFN rows from the logged FFN experts per token.
      const stats = m.ffn_experts_per_token_by_layer.map((f) => ({ ffnRows: Math.round(f * B * S) }) as MoeStats);
      flops.push(3 * M * forwardFlops(config.model, B, S, stats).total);
    }
    const ms = median(times);
    const tokens = B * S * M;
    process.stdout.write(
      JSON.stringify({
        bench: 'training step',
        backend,
        config: name,
        tokens_per_step: tokens,
        params: t.layout.total,
        step_ms: Math.round(ms),
        tokens_per_s: Math.round((tokens / ms) * 1000),
        gflops_per_step: +(median(flops) / 1e9).toFixed(2),
        achieved_gflop_s: +(median(flops) / 1e9 / (ms / 1000)).toFixed(2),
      }) + '\n',
    );
    t.dispose();
  }
}

main().catch((e) => {
  process.stderr.write(String(e?.stack ?? e) + '\n');
  process.exit(1);
});
