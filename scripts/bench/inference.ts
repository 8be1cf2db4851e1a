/**
 * Inference benchmark (`npm run bench -- inference`), configs/small.yaml-sized model with a
 * random init (speed does not depend on the weights' values, only on routing, which we steer).
 * Prints JSON lines; `bench` names the table:
 *
 *  - memory bandwidth: a large Float32Array copy (read + write bytes over time).
 *  - batch-1 decode vs the memory bound: measured decode tokens/s against
 *    bandwidth / (bytes of active weights + KV cache read per token). Active weights: every
 *    dense matrix (attention, dense FFNs, router, lm_head), one embedding row and only the FFN
 *    experts the token actually ran; KV read: every cached key/value at the mean context length.
 *  - continuous batching: aggregate tokens/s with 1, 4 and 16 concurrent requests on one engine
 *    (prefill included in the wall time, so this is what clients see together), interleaved
 *    with the batch-1 rounds (--rounds, default 3; medians), and the goal's ratio: 16 concurrent
 *    over batch-1, in wall and in CPU time.
 *  - the batched decode step alone: CPU time of one 16-row step against a 1-row step (no
 *    prefill, sampling or scheduling), interleaved over the rounds.
 *  - zero experts: decode time per token against the FFN experts actually run per token, with
 *    the expert bias pinning K−f slots on zero experts (so f FFN experts run per token); a linear
 *    fit gives the cost of one FFN expert and what the zero-expert slots save.
 *
 * Usage: node dist/scripts/bench/inference.js [--backend wasm] [--config small] [--tokens 64] [--steps host|tfjs] [--rounds 3]
 */
import * as fs from 'fs';
import * as os from 'os';
import * as tf from '@tensorflow/tfjs';
import YAML from 'yaml';
import { BackendName, selectBackend } from '../../core/backend';
import { ModelConfig, parseModelConfig } from '../../model/config';
import { initParams, numel, paramSpecs, ParamStore } from '../../model/params';
import { initialBiases } from '../../model/transformer';
import { ServingModel } from '../../inference/loadModel';
import { Engine, EngineTokenizer } from '../../inference/engine';
import * as tfjsSteps from '../../inference/engineStep';
import { disposeCaches, LayerCaches } from '../../inference/engineStep';
import { hostDecodeBatch, hostPrefill } from '../../inference/hostSteps';
import { cacheShape, kvShape } from '../../inference/hostDecode';
import { decodeKernels } from '../../inference/decodeKernels';
import { collectStats, SparsityPlan, thresholdsAt } from '../../inference/sparse';
import { arg, emit } from './args';

const now = () => performance.now();
/** CPU milliseconds of this process (user + system): stable on a shared, loaded machine. */
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const round = (x: number, d = 2) => +x.toFixed(d);
/** The forward passes measured: the engine's default (the batched host decode path) or, with --steps tfjs, the tfjs path. */
const STEPS = arg('steps', 'host');
const prefill = STEPS === 'tfjs' ? tfjsSteps.prefill : hostPrefill;
const decodeBatch = STEPS === 'tfjs' ? tfjsSteps.decodeBatch : hostDecodeBatch;
const stepsName = () => (STEPS === 'tfjs' ? 'tfjs' : `host-${decodeKernels().name}`);
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The benchmark never decodes text: a tokenizer stand-in with the special ids out of reach. */
const noTokenizer: EngineTokenizer = {
  vocabSize: 0,
  special: { bos: -1, eos: -2, end: -3 },
  encode: () => [],
  decode: () => '',
  renderChat: () => ({ ids: [] }),
};

function memoryBandwidth(): { gbPerS: number; mib: number } {
  const n = 64 << 20; // 256 MiB of float32
  const src = new Float32Array(n).fill(1);
  const dst = new Float32Array(n);
  const times: number[] = [];
  for (let i = 0; i < 6; i++) {
    const t0 = now();
    dst.set(src);
    times.push(now() - t0);
  }
  const ms = median(times.slice(1));
  return { gbPerS: (2 * n * 4) / (ms * 1e6), mib: (n * 4) / 2 ** 20 };
}

/** Floats read from the KV cache per position, summed over every attention block (host steps cache MLA's latent, hostDecode's cacheShape; tfjs steps the expanded heads). */
function kvFloatsPerPosition(c: ModelConfig): number {
  const s = STEPS === 'tfjs' ? kvShape(c) : cacheShape(c);
  return 2 * c.nLayers * s.Hk * (s.dk + s.dv);
}

function activeWeightFloats(c: ModelConfig, ffnExpertsPerToken: number): number {
  const specs = paramSpecs(c);
  const dense = specs.filter((s) => !s.expert && s.name !== 'model.embed_tokens.weight').reduce((n, s) => n + numel(s.shape), 0);
  return dense + c.dModel + ffnExpertsPerToken * c.nLayers * 3 * c.dModel * c.moe.expertHidden;
}

/** Prompt of n ids spread over the vocabulary. */
const promptOf = (c: ModelConfig, n: number, salt: number) => Array.from({ length: n }, (_, i) => (i * 7919 + salt * 104729 + 13) % c.vocabSize);

/** Median decode wall and CPU ms per token at batch 1 (caches grow from `prompt` to prompt + tokens). */
function decodeMsPerToken(m: ServingModel, promptLen: number, tokens: number, plan: SparsityPlan | null = null): { ms: number; cpu: number; ffnPerToken: number } {
  const p = prefill(m, promptOf(m.config, promptLen, 1));
  p.logits.dispose();
  let caches: LayerCaches = p.caches[0];
  const times: number[] = [];
  const cpus: number[] = [];
  let ffn = 0;
  let tl = 0;
  let tok = 1;
  for (let i = 0; i < tokens; i++) {
    const t0 = now();
    const c0 = cpuMs();
    const r = plan ? hostDecodeBatch(m, [tok], [promptLen + i], [caches], plan) : decodeBatch(m, [tok], [promptLen + i], [caches]);
    const logits = r.logits.dataSync();
    times.push(now() - t0);
    cpus.push(cpuMs() - c0);
    tok = (tok * 31 + 7 + Math.floor(Math.abs(logits[0]) * 1000)) % m.config.vocabSize;
    r.logits.dispose();
    disposeCaches(caches);
    caches = r.caches[0];
    ffn += r.ffnRows;
    tl += r.tokenLayers;
  }
  disposeCaches(caches);
  return { ms: median(times.slice(2)), cpu: median(cpus.slice(2)), ffnPerToken: ffn / tl };
}

async function main(): Promise<void> {
  const backend = arg('backend', 'wasm') as BackendName;
  const cfgName = arg('config', 'small');
  const genTokens = Number(arg('tokens', '64'));
  await selectBackend(backend);
  const raw = YAML.parse(fs.readFileSync(`configs/${cfgName}.yaml`, 'utf8'));
  const c = parseModelConfig(raw.model);
  const m: ServingModel = { dir: '(random init)', step: 0, config: c, store: new ParamStore(paramSpecs(c), initParams(c, 1234)), biases: initialBiases(c), tokenizerJson: null };
  const K = c.moe.topK;
  const N = c.moe.nExperts;
  const Z = c.moe.nZeroExperts;

  const bw = memoryBandwidth();
  emit({ bench: 'memory bandwidth (Float32Array copy)', buffer_mib: bw.mib, gb_per_s: round(bw.gbPerS) });

  // Warm up kernels, the JIT and the wasm heap (the first hundred steps run slower).
  for (let i = 0; i < 3; i++) decodeMsPerToken(m, 16 + 40 * i, 32);

  // Batch-1 decode against the memory bound (the model's own, untrained, routing) and aggregate
  // throughput with 1, 4 and 16 concurrent requests on one engine (continuous batching; prefill
  // included in the wall time, so this is what clients see together), interleaved over ROUNDS
  // rounds so machine noise spreads over all of them; medians per row.
  const promptLen = 32;
  const ROUNDS = Number(arg('rounds', '3'));
  const CONC = [1, 4, 16];
  const b1: { ms: number; cpu: number; ffnPerToken: number }[] = [];
  const conc = new Map<number, { tps: number; cpuTps: number; wall: number; step: number | null; ttft: number }[]>();
  for (let round = 0; round < ROUNDS; round++) {
    b1.push(decodeMsPerToken(m, promptLen, genTokens));
    for (const n of CONC) {
      const engine = new Engine(m, noTokenizer, { maxBatch: 16, steps: STEPS === 'tfjs' ? { prefill, decodeBatch } : undefined });
      const t0 = now();
      const c0 = cpuMs();
      const results = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          engine.submit({ promptIds: promptOf(c, promptLen, i + 2), maxTokens: genTokens, sampling: { temperature: 1, topP: 1, topK: 0, seed: i } }).result,
        ),
      );
      const seconds = (now() - t0) / 1000;
      const cpuSeconds = (cpuMs() - c0) / 1000;
      const tokens = results.reduce((k, r) => k + r.completionTokens, 0);
      const text = engine.metrics.render();
      const step = text.match(/^moecat_decode_step_seconds_sum (\S+)$/m);
      const steps = text.match(/^moecat_decode_step_seconds_count (\S+)$/m);
      await engine.close();
      const rows = conc.get(n) ?? [];
      rows.push({
        tps: tokens / seconds,
        cpuTps: tokens / cpuSeconds,
        wall: seconds,
        step: step && steps ? (1000 * Number(step[1])) / Number(steps[1]) : null,
        ttft: (1000 * results.reduce((k, r) => k + r.timeToFirstToken, 0)) / n,
      });
      conc.set(n, rows);
    }
  }
  const d1 = { ms: median(b1.map((r) => r.ms)), cpu: median(b1.map((r) => r.cpu)), ffnPerToken: b1[0].ffnPerToken };
  const ctx = promptLen + genTokens / 2;
  const wBytes = 4 * activeWeightFloats(c, d1.ffnPerToken);
  const kvBytes = 4 * kvFloatsPerPosition(c) * ctx;
  const boundTps = (bw.gbPerS * 1e9) / (wBytes + kvBytes);
  emit({
    bench: 'batch-1 decode vs memory bound',
    backend,
    steps: stepsName(),
    config: cfgName,
    rounds: ROUNDS,
    mean_context: ctx,
    ffn_experts_per_token: round(d1.ffnPerToken, 3),
    active_weight_mib: round(wBytes / 2 ** 20, 3),
    kv_read_mib: round(kvBytes / 2 ** 20, 3),
    ms_per_token: round(d1.ms),
    cpu_ms_per_token: round(d1.cpu),
    tokens_per_s: round(1000 / d1.ms, 1),
    tokens_per_cpu_s: round(1000 / d1.cpu, 1),
    memory_bound_tokens_per_s: Math.round(boundTps),
    fraction_of_bound: round(1000 / d1.ms / boundTps, 4),
    load_avg_1m: round(os.loadavg()[0], 1),
  });
  const med = (n: number, f: (r: { tps: number; cpuTps: number; wall: number; step: number | null; ttft: number }) => number) => median(conc.get(n)!.map(f));
  for (const n of CONC) {
    const steps = conc.get(n)!.map((r) => r.step).filter((x): x is number => x !== null);
    emit({
      bench: 'continuous batching: aggregate throughput',
      backend,
      steps: stepsName(),
      config: cfgName,
      rounds: ROUNDS,
      concurrent_requests: n,
      prompt_tokens: promptLen,
      tokens_per_request: genTokens,
      wall_s: round(med(n, (r) => r.wall)),
      aggregate_tokens_per_s: round(med(n, (r) => r.tps), 1),
      per_request_tokens_per_s: round(med(n, (r) => r.tps) / n, 1),
      aggregate_tokens_per_cpu_s: round(med(n, (r) => r.cpuTps), 1),
      mean_decode_step_ms: steps.length ? round(median(steps)) : null,
      mean_ttft_ms: round(med(n, (r) => r.ttft), 1),
      load_avg_1m: round(os.loadavg()[0], 1),
    });
  }
  // The goal's ratio (16 concurrent aggregate over batch-1 decode), in wall time and in CPU time
  // (steadier on a shared machine), and over the engine's own single request (which, like the 16,
  // pays prefill, sampling and scheduling).
  emit({
    bench: 'continuous batching: 16 concurrent vs batch-1',
    backend,
    steps: stepsName(),
    config: cfgName,
    rounds: ROUNDS,
    batch1_tokens_per_s: round(1000 / d1.ms, 1),
    concurrent16_tokens_per_s: round(med(16, (r) => r.tps), 1),
    ratio_wall: round(med(16, (r) => r.tps) / (1000 / d1.ms), 2),
    ratio_cpu: round(med(16, (r) => r.cpuTps) / (1000 / d1.cpu), 2),
    ratio_wall_vs_engine_1: round(med(16, (r) => r.tps) / med(1, (r) => r.tps), 2),
    ratio_cpu_vs_engine_1: round(med(16, (r) => r.cpuTps) / med(1, (r) => r.cpuTps), 2),
    goal: 6,
    load_avg_1m: round(os.loadavg()[0], 1),
  });

  // The decode step alone (no prefill, sampling or scheduling): B rows of B sequences in one
  // batched step against one row, interleaved over rounds; medians of the CPU time per step.
  {
    const stepCpu = (B: number, steps: number): number => {
      let caches: LayerCaches[] = Array.from({ length: B }, (_, i) => {
        const p = prefill(m, promptOf(c, promptLen, 300 + i));
        p.logits.dispose();
        return p.caches[0];
      });
      let tokens = Array.from({ length: B }, (_, i) => (i * 17 + 1) % c.vocabSize);
      const cpus: number[] = [];
      for (let s = 0; s < steps; s++) {
        const c0 = cpuMs();
        const r = decodeBatch(m, tokens, caches.map(() => promptLen + s), caches);
        const logits = r.logits.dataSync();
        cpus.push(cpuMs() - c0);
        tokens = tokens.map((t, b) => (t * 31 + 7 + Math.floor(Math.abs(logits[b * c.vocabSize]) * 1000)) % c.vocabSize);
        r.logits.dispose();
        caches.forEach(disposeCaches);
        caches = r.caches;
      }
      caches.forEach(disposeCaches);
      return median(cpus.slice(2));
    };
    const one: number[] = [];
    const sixteen: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      one.push(stepCpu(1, genTokens));
      sixteen.push(stepCpu(16, genTokens));
    }
    const c1 = median(one);
    const c16 = median(sixteen);
    emit({
      bench: 'batched decode step: 16 rows vs 1 (decode only)',
      backend,
      steps: stepsName(),
      config: cfgName,
      rounds: ROUNDS,
      mean_context: promptLen + genTokens / 2,
      cpu_ms_per_step_1_row: round(c1, 3),
      cpu_ms_per_step_16_rows: round(c16, 3),
      tokens_per_cpu_s_1_row: round(1000 / c1, 1),
      tokens_per_cpu_s_16_rows: round((16 * 1000) / c16, 1),
      ratio_cpu: round((16 * c1) / c16, 2),
      load_avg_1m: round(os.loadavg()[0], 1),
    });
  }

  // Time to first token for a 512-token prompt: one request alone on an engine (prefill + the
  // first sample), on the same weights with the context raised to fit the prompt.
  {
    const long: ServingModel = { ...m, config: { ...c, maxSeqLen: Math.max(c.maxSeqLen, 1024) } };
    const ttft: number[] = [];
    const cpu: number[] = [];
    for (let rep = 0; rep < 3; rep++) {
      const engine = new Engine(long, noTokenizer, { maxBatch: 1, steps: STEPS === 'tfjs' ? { prefill, decodeBatch } : undefined });
      const c0 = cpuMs();
      const r = await engine.submit({ promptIds: promptOf(c, 512, 50 + rep), maxTokens: 1, sampling: { temperature: 0, topP: 1, topK: 0, seed: 0 } }).result;
      cpu.push(cpuMs() - c0);
      ttft.push(r.timeToFirstToken * 1000);
      await engine.close();
    }
    emit({ bench: 'time to first token (512-token prompt)', backend, steps: stepsName(), config: cfgName, prompt_tokens: 512, ttft_ms: round(median(ttft), 1), cpu_ms: round(median(cpu), 1), prompt_tokens_per_s: round(512000 / median(ttft), 1), load_avg_1m: round(os.loadavg()[0], 1) });
  }

  // CHESS at s = 0.5 on the batched host decode path: thresholds calibrated on this model's own
  // activations over random token windows (a random init: the realised sparsity, not the
  // quality, is what this row shows), batch-1 decode with and without the plan, interleaved.
  if (STEPS !== 'tfjs') {
    const windows = Array.from({ length: 8 }, (_, i) => Int32Array.from(promptOf(c, 64, 200 + i)));
    const thresholds = thresholdsAt(collectStats(m, windows), 0.5);
    const variants: { name: string; plan: SparsityPlan | null }[] = [
      { name: 'dense', plan: null },
      { name: 'chess (FFN + attention)', plan: { ffn: 'chess', attention: true, thresholds } },
      { name: 'chess-ffn', plan: { ffn: 'chess', attention: false, thresholds } },
    ];
    const best = variants.map(() => ({ ms: Infinity, cpu: Infinity }));
    for (let rep = 0; rep < 5; rep++) {
      variants.forEach((v, i) => {
        const r = decodeMsPerToken(m, promptLen, 32, v.plan);
        best[i] = { ms: Math.min(best[i].ms, r.ms), cpu: Math.min(best[i].cpu, r.cpu) };
      });
    }
    variants.forEach((v, i) =>
      emit({ bench: 'CHESS s=0.5 batch-1 decode', backend, steps: stepsName(), config: cfgName, variant: v.name, ms_per_token: round(best[i].ms), cpu_ms_per_token: round(best[i].cpu), speedup_vs_dense_cpu: round(best[0].cpu / best[i].cpu, 3) }),
    );
  }

  // Decode time against FFN experts actually run: K−f slots pinned on zero experts by the bias.
  // Rounds interleave the settings so machine noise spreads evenly over them; medians per f.
  const settings: number[] = [];
  for (let f = 0; f <= Math.min(K, N); f++) if (K - f <= Z) settings.push(f);
  const pinned = (f: number) =>
    Array.from({ length: c.nLayers }, () => {
      const b = new Float32Array(N + Z);
      for (let z = 0; z < Z; z++) b[N + z] = z < K - f ? 1 : -1;
      return b;
    });
  const samples = new Map<number, { ms: number[]; cpu: number[]; ffn: number }>();
  for (let rep = 0; rep < 5; rep++) {
    for (const f of settings) {
      m.biases = pinned(f);
      const r = decodeMsPerToken(m, promptLen, 24);
      const s = samples.get(f) ?? { ms: [], cpu: [], ffn: r.ffnPerToken };
      s.ms.push(r.ms);
      s.cpu.push(r.cpu);
      samples.set(f, s);
    }
  }
  const rows: { f: number; ms: number }[] = [];
  for (const f of settings) {
    const s = samples.get(f)!;
    const ms = median(s.ms);
    const cpu = median(s.cpu);
    // The fit uses CPU time: wall time on a shared machine carries other processes' load.
    rows.push({ f: s.ffn, ms: cpu });
    const bytes = 4 * activeWeightFloats(c, s.ffn) + 4 * kvFloatsPerPosition(c) * (promptLen + 12);
    emit({
      bench: 'decode time vs FFN experts run (zero experts)',
      backend,
    steps: stepsName(),
      config: cfgName,
      top_k: K,
      zero_expert_slots: K - f,
      ffn_experts_per_token: round(s.ffn, 3),
      ms_per_token: round(ms),
      cpu_ms_per_token: round(cpu),
      tokens_per_s: round(1000 / ms, 1),
      active_weight_and_kv_mib: round(bytes / 2 ** 20, 3),
      load_avg_1m: round(os.loadavg()[0], 1),
    });
  }
  // Least-squares line ms = a + b·f: b is one FFN expert's cost per token, a everything else.
  const n = rows.length;
  const mx = rows.reduce((s, r) => s + r.f, 0) / n;
  const my = rows.reduce((s, r) => s + r.ms, 0) / n;
  const b = rows.reduce((s, r) => s + (r.f - mx) * (r.ms - my), 0) / rows.reduce((s, r) => s + (r.f - mx) ** 2, 0);
  const a = my - b * mx;
  const allFfn = rows.find((r) => Math.abs(r.f - K) < 1e-9);
  const target = c.moe.targetFfnPerToken ?? K;
  const expertBytes = 4 * c.nLayers * 3 * c.dModel * c.moe.expertHidden;
  const bytesAtK = 4 * activeWeightFloats(c, K) + 4 * kvFloatsPerPosition(c) * (promptLen + 12);
  emit({
    bench: 'zero experts: fitted cost',
    backend,
    steps: stepsName(),
    config: cfgName,
    cpu_ms_per_token_without_experts: round(a),
    cpu_ms_per_ffn_expert: round(b, 3),
    expert_share_at_top_k: allFfn ? round((b * K) / allFfn.ms, 3) : null,
    predicted_saving_at_target_ke: round(((K - target) * b) / (a + K * b), 3),
    // Ideal: a skipped FFN expert saves its share of the bytes a token reads at top-k (weights + KV).
    ideal_share_per_expert: round(expertBytes / bytesAtK, 4),
    measured_share_per_expert: allFfn ? round(b / allFfn.ms, 4) : null,
    saving_vs_ideal: allFfn ? round(b / allFfn.ms / (expertBytes / bytesAtK), 3) : null,
    target_ffn_experts_per_token: target,
  });
  m.store.dispose();
  tf.disposeVariables();
}

main().catch((e) => {
  process.stderr.write(`${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
