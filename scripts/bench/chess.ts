/**
 * CHESS benchmark (arXiv 2409.01366) on the serving engine's native decode path
 * (inference/hostSteps.ts `hostDecodeBatch`, the engine's decode step; native/sparse.c's
 * kernels under a plan). Prints JSON lines; `bench` names the table:
 *  - chess.setup: the models, their weight bytes (all, and read per decode token) and the
 *    machine's cache sizes, so it is plain whether the weights fit in cache.
 *  - chess.calibration: calibration tokens and time (real text: the head of the prepared corpus).
 *  - chess.quality: held-out perplexity (the tail of each source, never calibrated on) of dense
 *    decode and CHESS at s = 0.5, every position through the decode step, with realised sparsity.
 *  - chess.decode: decode tokens/s, teacher-forced over held-out text after a dense prefill, for
 *    dense, CHESS FFN only and CHESS FFN + attention at s = 0.5, at batch 1 and 4. Rounds
 *    interleave the variants (best of the rounds), so load from other processes hits all alike;
 *    the 1-minute load average is reported with each row.
 * Models: `small` (configs/small.yaml, trained here for --train-steps on the prepared corpus
 * unless --checkpoint names one) and `wide` (small's layout at dModel 1024, FFN 4096, experts
 * 1024, random init: its weights read per token exceed the caches; thresholds are still
 * calibrated on real text, so its realised sparsity is real while its perplexity means nothing).
 *
 * Usage: node dist/scripts/bench/chess.js [--checkpoint DIR] [--data data/prepared/demo]
 *        [--train-steps 60] [--rounds 5] [--decode-tokens 192] [--models small,wide]
 * (--decode-tokens per round and sequence for small; wide decodes a quarter of it.)
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../core/backend';
import { loadPrepared, PreparedData } from '../../data/prepared';
import { loadServingModel, ServingModel } from '../../inference/loadModel';
import { hostDecodeBatch, hostPrefill } from '../../inference/hostSteps';
import { hostDecoder } from '../../inference/hostDecode';
import { decodeKernels } from '../../inference/decodeKernels';
import { LayerCaches } from '../../inference/engineStep';
import { collectStats, corpusWindows, thresholdsAt, SparsityPlan } from '../../inference/sparse';
import { ModelConfig, parseModelConfig } from '../../model/config';
import { initParams, paramSpecs, ParamStore } from '../../model/params';
import { initialBiases } from '../../model/transformer';
import YAML from 'yaml';
import { arg, emit } from './args';

const root = path.resolve(__dirname, '..', '..', '..');
const r4 = (x: number) => Math.round(x * 1e4) / 1e4;
const load = () => r4(os.loadavg()[0]);
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};
const PREFILL = 16;
const SPARSITY = 0.5;

function cacheSize(level: number): string {
  const dir = '/sys/devices/system/cpu/cpu0/cache';
  try {
    for (const e of fs.readdirSync(dir)) {
      if (!e.startsWith('index')) continue;
      const lv = fs.readFileSync(path.join(dir, e, 'level'), 'utf8').trim();
      const type = fs.readFileSync(path.join(dir, e, 'type'), 'utf8').trim();
      if (Number(lv) === level && type !== 'Instruction') return fs.readFileSync(path.join(dir, e, 'size'), 'utf8').trim();
    }
  } catch {
    // not Linux: unknown
  }
  return 'unknown';
}

/** Trains configs/small.yaml briefly on the prepared corpus (the CLI, as a user would) and returns the run dir. */
function trainSmall(dataDir: string, steps: number): string {
  const out = path.join(root, 'bench-results', 'tmp', 'chess-small');
  fs.rmSync(out, { recursive: true, force: true });
  const warm = Math.max(1, Math.floor(steps / 6));
  const args = ['train', '--config', 'configs/small.yaml', '--out', out, '--set', `train.steps=${steps}`, '--set', `train.checkpointEvery=${steps}`,
    '--set', `data.dir=${dataDir}`, '--set', `optim.schedule.warmupSteps=${warm}`, '--set', `optim.schedule.decaySteps=${Math.floor(steps / 3)}`];
  const r = spawnSync(process.execPath, [path.join(root, 'dist', 'cli', 'main.js'), ...args], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`moecat ${args.join(' ')} failed with exit ${r.status}`);
  return out;
}

/** small.yaml's layout, wide: weights read per decode token far beyond the caches. Random init. */
function wideModel(): ServingModel {
  const raw = (YAML.parse(fs.readFileSync(path.join(root, 'configs', 'small.yaml'), 'utf8')) as { model: Record<string, unknown> }).model;
  const config = parseModelConfig({
    ...raw, dModel: 1024, nLayers: 4, ffnHidden: 4096, maxSeqLen: 128,
    attention: { type: 'mla', nHeads: 8, qLoraRank: 256, kvLoraRank: 128, nopeHeadDim: 64, ropeHeadDim: 32, vHeadDim: 64 },
    moe: { ...(raw.moe as Record<string, unknown>), nExperts: 8, nZeroExperts: 4, topK: 4, expertHidden: 1024, targetFfnPerToken: 3 },
  });
  return { dir: '(memory)', step: 0, config, store: new ParamStore(paramSpecs(config), initParams(config, 11)), biases: initialBiases(config), tokenizerJson: null };
}

/** MiB of weights: all, and read by one decode token (dense layers, top-K experts at the measured FFN-expert rate, lm_head). */
function weightMiB(c: ModelConfig, ffnExpertsPerToken: number): { all: number; perToken: number } {
  let all = 0;
  let expert = 0;
  for (const s of paramSpecs(c)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    all += n;
    if (/\.mlp\.experts\./.test(s.name)) expert += n;
  }
  const embed = c.vocabSize * c.dModel;
  const perToken = all - embed - expert + (expert / (c.moe.nExperts * c.nLayers)) * ffnExpertsPerToken * c.nLayers;
  return { all: r4((4 * all) / 2 ** 20), perToken: r4((4 * perToken) / 2 ** 20) };
}

interface Variant {
  name: string;
  plan: SparsityPlan | null;
}

/** Decodes `windows` teacher-forced (B sequences at a time) after a dense prefill; ms/token wall and CPU, realised sparsity. */
function decodeRun(m: ServingModel, plan: SparsityPlan | null, windows: Int32Array[], B: number, nll?: { sum: number; n: number }) {
  const dec = hostDecoder(m);
  const c0 = { ...dec.counters };
  let ms = 0;
  let cpu = 0;
  let tokens = 0;
  const V = m.config.vocabSize;
  for (let w0 = 0; w0 + B <= windows.length; w0 += B) {
    const ws = windows.slice(w0, w0 + B);
    let caches: LayerCaches[] = ws.map((w) => {
      const p = hostPrefill(m, Array.from(w.subarray(0, PREFILL)));
      p.logits.dispose();
      return p.caches[0];
    });
    const len = Math.min(...ws.map((w) => w.length));
    const t0 = performance.now();
    const u0 = cpuMs();
    for (let t = PREFILL; t < len; t++) {
      const s = hostDecodeBatch(m, ws.map((w) => w[t]), ws.map(() => t), caches, plan);
      if (nll && t + 1 < len) {
        const z = s.logits.dataSync() as Float32Array;
        ws.forEach((w, b) => {
          let max = -Infinity;
          for (let i = 0; i < V; i++) max = Math.max(max, z[b * V + i]);
          let e = 0;
          for (let i = 0; i < V; i++) e += Math.exp(z[b * V + i] - max);
          nll.sum += max + Math.log(e) - z[b * V + w[t + 1]];
          nll.n++;
        });
      }
      s.logits.dispose();
      caches = s.caches;
      tokens += B;
    }
    ms += performance.now() - t0;
    cpu += cpuMs() - u0;
  }
  const k = dec.counters;
  const ffnTotal = k.ffnTotal - c0.ffnTotal;
  const attnTotal = k.attnTotal - c0.attnTotal;
  return {
    msPerToken: ms / tokens, cpuMsPerToken: cpu / tokens, tokens,
    realisedFfn: ffnTotal ? 1 - (k.ffnKept - c0.ffnKept) / ffnTotal : 0,
    realisedAttn: attnTotal ? 1 - (k.attnKept - c0.attnKept) / attnTotal : 0,
    ffnExpertsPerToken: (k.ffnExpertRows - c0.ffnExpertRows) / (k.tokens - c0.tokens) / m.config.nLayers,
  };
}

function benchModel(name: string, m: ServingModel, data: PreparedData, o: { rounds: number; decodeTokens: number; quality: boolean; trainSteps: number | null }): void {
  const c = m.config;
  const seqLen = Math.min(64, c.maxSeqLen);
  const calib = corpusWindows(data, name === 'wide' ? 512 : 2048, seqLen, 'head', c.vocabSize);
  const t0 = performance.now();
  const stats = collectStats(m, calib);
  const thresholds = thresholdsAt(stats, SPARSITY, m.step);
  emit({ bench: 'chess.calibration', model: name, tokens: stats.tokens, seconds: r4((performance.now() - t0) / 1000), sparsity: SPARSITY });
  const variants: Variant[] = [
    { name: 'dense', plan: null },
    { name: 'chess-ffn', plan: { ffn: 'chess', attention: false, thresholds } },
    { name: 'chess (FFN + attention)', plan: { ffn: 'chess', attention: true, thresholds } },
  ];
  const perWindow = seqLen - PREFILL;
  /** Held-out windows: enough for `tokens` decode steps of each of B sequences. */
  const heldOut = (tokens: number, B = 1) => corpusWindows(data, B * Math.ceil(tokens / perWindow) * seqLen, seqLen, 'tail', c.vocabSize);
  const probe = decodeRun(m, null, heldOut(perWindow), 1);
  const w = weightMiB(c, probe.ffnExpertsPerToken);
  emit({
    bench: 'chess.setup', model: name, checkpoint: m.dir === '(memory)' ? 'random init' : path.relative(root, m.dir), trainSteps: o.trainSteps, step: m.step,
    dModel: c.dModel, nLayers: c.nLayers, ffnHidden: c.ffnHidden, expertHidden: c.moe.expertHidden, experts: `${c.moe.nExperts}+${c.moe.nZeroExperts} zero, top-${c.moe.topK}`,
    weightsMiB: w.all, readPerTokenMiB: w.perToken, ffnExpertsPerToken: r4(probe.ffnExpertsPerToken), l2: cacheSize(2), l3: cacheSize(3), kernels: decodeKernels().name,
  });
  if (o.quality) {
    const evalW = heldOut(1024);
    let dense = 0;
    for (const v of variants) {
      const nll = { sum: 0, n: 0 };
      const r = decodeRun(m, v.plan, evalW, 1, nll);
      const ppl = Math.exp(nll.sum / nll.n);
      if (!v.plan) dense = ppl;
      emit({ bench: 'chess.quality', model: name, variant: v.name, sparsity: v.plan ? SPARSITY : 0, ppl: r4(ppl), dPpl: r4(ppl - dense), tokens: nll.n, realisedFfn: r4(r.realisedFfn), realisedAttn: r4(r.realisedAttn) });
    }
  }
  for (const B of [1, 4]) {
    const windows = heldOut(o.decodeTokens, B);
    const best = variants.map(() => ({ ms: Infinity, cpu: Infinity, r: probe }));
    const loads: number[] = [];
    for (let round = 0; round < o.rounds; round++) {
      loads.push(load());
      variants.forEach((v, i) => {
        const r = decodeRun(m, v.plan, windows, B);
        best[i] = { ms: Math.min(best[i].ms, r.msPerToken), cpu: Math.min(best[i].cpu, r.cpuMsPerToken), r };
      });
    }
    variants.forEach((v, i) =>
      emit({
        bench: 'chess.decode', model: name, batch: B, variant: v.name, sparsity: v.plan ? SPARSITY : 0, tokens_per_s: r4(1000 / best[i].ms), ms_per_token: r4(best[i].ms),
        cpu_ms_per_token: r4(best[i].cpu), speedup_vs_dense: r4(best[0].ms / best[i].ms), speedup_vs_dense_cpu: r4(best[0].cpu / best[i].cpu),
        realisedFfn: r4(best[i].r.realisedFfn), realisedAttn: r4(best[i].r.realisedAttn), rounds: o.rounds, load_avg_1m: r4(loads.reduce((a, x) => a + x, 0) / loads.length),
      }),
    );
  }
}

async function main(): Promise<void> {
  await selectBackend('auto');
  const dataDir = arg('data', 'data/prepared/demo');
  const data = loadPrepared(dataDir);
  const models = arg('models', 'small,wide').split(',');
  const o = { rounds: Number(arg('rounds', '5')), decodeTokens: Number(arg('decode-tokens', '192')) };
  if (models.includes('small')) {
    const given = arg('checkpoint', '');
    const steps = Number(arg('train-steps', '60'));
    const m = loadServingModel(given || trainSmall(dataDir, steps));
    benchModel('small', m, data, { ...o, quality: true, trainSteps: given ? null : steps });
    m.store.dispose();
  }
  if (models.includes('wide')) {
    const m = wideModel();
    benchModel('wide', m, data, { ...o, decodeTokens: Math.ceil(o.decodeTokens / 4), quality: false, trainSteps: null });
    m.store.dispose();
  }
  tf.disposeVariables();
}

main().catch((e: Error) => {
  process.stderr.write(`chess bench: ${e.message}\n(needs the prepared demo corpus: run \`npm run demo\`, or pass --data and --checkpoint)\n`);
  process.exit(1);
});
