/**
 * Model benchmark (`npm run bench -- model`): forward and forward+backward time of one
 * microbatch (median of N after one warm-up) for configs/tiny.yaml and configs/small.yaml, the
 * achieved GFLOP/s, a plain 1024³ matMul as the backend's measured peak, and a kernel profile
 * of one forward+backward step. Prints JSON lines (one object per line, `bench` names the table).
 *
 * FLOPs are counted honestly: 2 FLOPs per multiply-add of the parameters a token actually uses
 * (dense linears, router, lm_head, and only the FFN experts that ran, from stats.ffnRows; zero
 * experts and the embedding gather count 0), plus attention's QK^T and PV over the causal
 * triangle (the kernels compute the full S×S square; that figure is reported separately).
 * Backward = 2× forward, so a forward+backward step is 3× the forward FLOPs (6·active/token).
 *
 * Usage: node dist/scripts/bench/model.js [--backends wasm,cpu] [--configs tiny,small] [--reps 5]
 */
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import YAML from 'yaml';
import { BackendName, selectBackend } from '../../core/backend';
import { ModelConfig, parseModelConfig } from '../../model/config';
import { initParams, paramSpecs, ParamStore, countParams } from '../../model/params';
import { initialBiases } from '../../model/transformer';
import { microbatchLoss } from '../../trainer/losses';
import { Batch } from '../../data/batch';
import { forwardFlops } from './flops';
import { MoeStats } from '../../model/moe/layer';
import { arg } from './args';

function emit(row: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(row) + '\n');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const now = () => Number(process.hrtime.bigint()) / 1e6;

function loadModel(name: string): { c: ModelConfig; B: number; S: number } {
  const raw = YAML.parse(fs.readFileSync(`configs/${name}.yaml`, 'utf8'));
  const c = parseModelConfig(raw.model);
  const B = 8;
  const S = name === 'small' ? 128 : Number(raw.data?.seqLen ?? 64);
  return { c, B, S };
}

function batch(c: ModelConfig, B: number, S: number): Batch {
  const inputs = new Int32Array(B * S).map((_, i) => (i * 7919 + 13) % c.vocabSize);
  const targets = new Int32Array(B * S).map((_, i) => (i * 104729 + 3) % c.vocabSize);
  return { inputs, targets, lossMask: new Float32Array(B * S).fill(1), batchSize: B, seqLen: S };
}

function matmulPeak(backend: string, reps: number): void {
  const n = 1024;
  const a = tf.randomNormal([n, n], 0, 1, 'float32', 1);
  const b = tf.randomNormal([n, n], 0, 1, 'float32', 2);
  const times: number[] = [];
  for (let i = 0; i <= reps; i++) {
    const t0 = now();
    const c = tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D);
    c.dataSync();
    c.dispose();
    if (i > 0) times.push(now() - t0);
  }
  tf.dispose([a, b]);
  const ms = median(times);
  emit({ bench: 'matmul peak (1024³, plain)', backend, ms: +ms.toFixed(1), gflops: +((2 * n ** 3) / (ms * 1e6)).toFixed(2), reps });
}

async function benchModel(backend: string, name: string, reps: number, profile: boolean): Promise<void> {
  const { c, B, S } = loadModel(name);
  const specs = paramSpecs(c);
  const store = new ParamStore(specs, initParams(c, 1234));
  const P = (n: string) => store.get(n);
  const mb = batch(c, B, S);
  const norms = { globalTokens: B * S, globalSeqs: B };
  const biases = initialBiases(c);
  const vars = [...store.vars.values()];
  let stats: MoeStats[] = [];
  const fwd = () =>
    tf.tidy(() => {
      const parts = microbatchLoss(c, P, mb, norms, { biases });
      parts.total.dataSync();
      stats = parts.moe;
    });
  const fwdBwd = () => {
    const { value, grads } = tf.variableGrads(() => {
      const parts = microbatchLoss(c, P, mb, norms, { biases });
      stats = parts.moe;
      return parts.total;
    }, vars);
    // Read every gradient so lazy backends finish the work inside the timing.
    for (const g of Object.values(grads)) g.dataSync();
    tf.dispose([value, ...Object.values(grads)]);
  };
  const time = (f: () => void) => {
    const ts: number[] = [];
    for (let i = 0; i <= reps; i++) {
      const t0 = now();
      f();
      if (i > 0) ts.push(now() - t0);
    }
    return median(ts);
  };
  const fMs = time(fwd);
  const fbMs = time(fwdBwd);
  const fl = forwardFlops(c, B, S, stats);
  const T = B * S;
  emit({
    bench: 'model step (one microbatch)',
    backend,
    config: name,
    batch: `${B}x${S}`,
    params: countParams(specs),
    active_params_per_token: Math.round(fl.activePerToken),
    ffn_experts_per_token: +(stats.reduce((n, s) => n + s.ffnRows, 0) / T / c.nLayers).toFixed(3),
    fwd_gflop: +(fl.total / 1e9).toFixed(3),
    fwd_ms: +fMs.toFixed(1),
    fwd_gflops: +(fl.total / (fMs * 1e6)).toFixed(2),
    fwdbwd_gflop: +((3 * fl.total) / 1e9).toFixed(3),
    fwdbwd_ms: +fbMs.toFixed(1),
    fwdbwd_gflops: +((3 * fl.total) / (fbMs * 1e6)).toFixed(2),
    fwdbwd_tokens_per_s: Math.round(T / (fbMs / 1000)),
    attn_share_of_flops: +(fl.attnCausal / fl.total).toFixed(3),
    attn_full_square_gflop: +(fl.attnFull / 1e9).toFixed(3),
    reps,
  });
  if (profile) {
    const info = await tf.profile(() => fwdBwd());
    const agg = new Map<string, { ms: number; count: number; mb: number }>();
    let total = 0;
    for (const k of info.kernels) {
      // 'forward' is tf.customGrad's wrapper: its inner kernels are profiled on their own.
      if (k.name === 'forward') continue;
      const ms = Number(await k.kernelTimeMs) || 0;
      total += ms;
      const a = agg.get(k.name) ?? { ms: 0, count: 0, mb: 0 };
      a.ms += ms;
      a.count++;
      a.mb += k.bytesAdded / 2 ** 20;
      agg.set(k.name, a);
    }
    const top = [...agg.entries()].sort((x, y) => y[1].ms - x[1].ms).slice(0, 10);
    for (const [kernel, a] of top) {
      emit({ bench: `profile: top kernels of one fwd+bwd step (${name}, ${backend})`, kernel, ms: +a.ms.toFixed(1), share: +(a.ms / total).toFixed(3), calls: a.count, mb_allocated: +a.mb.toFixed(1) });
    }
  }
  store.dispose();
}

async function main(): Promise<void> {
  const backends = arg('backends', 'wasm,cpu').split(',') as BackendName[];
  const configs = arg('configs', 'tiny,small').split(',');
  const reps = Number(arg('reps', '5'));
  for (const be of backends) {
    await selectBackend(be);
    // The pure-JS cpu backend is ~30x slower than wasm: reference numbers on tiny only.
    const cfgs = be === 'cpu' ? configs.filter((n) => n === 'tiny') : configs;
    matmulPeak(be, be === 'cpu' ? 2 : reps);
    for (const name of cfgs) await benchModel(be, name, reps, true);
  }
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
