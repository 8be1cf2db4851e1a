/**
 * Tables and plots for docs/experiments.md (issue 15) from the runs of run.sh.
 *   node dist/scripts/experiments/ablations/analyze.js <out dir> [img dir]
 * Per run (<arm>-s<seed>/): final train lm_loss (mean of the last 10% of steps), FFN experts per
 * token (mean over the last 10% of steps, per layer), last-layer hidden RMS/max, parameter count,
 * and from the final checkpoint on fixed evaluation rows (loader seed 9999, i.e. other draws from
 * the same corpus, not a disjoint split): eval lm_loss and the per-token distribution of FFN
 * experts per MoE layer (how many of a token's top-K slots went to FFN experts, not zero experts).
 * Writes <out dir>/results.json, <out dir>/tables.md and docs/img/ablation-*.svg.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../../core/backend';
import { MixtureLoader } from '../../../data/loader';
import { parseMixture } from '../../../data/mixture';
import { flatLayout, views } from '../../../model/flatParams';
import { countParams, paramSpecs, ParamStore } from '../../../model/params';
import { forward } from '../../../model/transformer';
import { loadTrainerCheckpoint } from '../../../trainer/checkpointing';
import { microbatchLoss } from '../../../trainer/losses';
import { Batch } from '../../../data/batch';
import { readMetrics, StepMetrics } from '../../../trainer/metrics';
import { ChartSeries, svgLineChart } from '../../../trainer/sweep';

interface RunResult {
  arm: string;
  seed: number;
  steps: number;
  params: number;
  finalLmLoss: number;
  finalLoss: number;
  ffnPerToken: number;
  ffnPerTokenByLayer: number[];
  hiddenRms: number;
  hiddenMax: number;
  hiddenMaxPeak: number;
  evalLmLoss: number;
  /** Per layer: fraction of tokens with 0..K FFN experts, and the per-token std. */
  perTokenHist: number[][];
  perTokenStd: number[];
  seconds: number | null;
}

const LABELS: Record<string, string> = {
  zero: 'ScMoE, N=8 + Z=4 zero, top-3, K_e=2',
  fixed: 'ScMoE, N=8, fixed top-2',
  seq: 'sequential, N=8 + Z=4 zero, top-3',
  zloss: 'zero + hidden z-loss 1e-4',
  zloss3: 'zero + hidden z-loss 1e-3',
};

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const std = (xs: number[]) => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)));
const tail = (ms: StepMetrics[]) => ms.slice(ms.length - Math.max(1, Math.round(ms.length * 0.1)));

function evalRun(runDir: string, batches: Batch[]): { evalLmLoss: number; hist: number[][]; std: number[]; params: number } {
  const ck = loadTrainerCheckpoint(runDir, { withOptimizer: false });
  const c = ck.config.model;
  const specs = paramSpecs(c);
  const layout = flatLayout(specs);
  const store = new ParamStore(layout.specs, views(layout, ck.state.params));
  const biases = ck.state.biases;
  let n = 0;
  for (const b of batches) for (const v of b.lossMask) n += v;
  const norms = { globalTokens: n, globalSeqs: batches.length };
  let lm = 0;
  const K = c.moe.topK;
  const counts = Array.from({ length: c.nLayers }, () => new Array<number>(K + 1).fill(0));
  for (const b of batches) {
    tf.tidy(() => {
      lm += microbatchLoss(c, (k) => store.get(k), b, norms, { biases }).lm.dataSync()[0];
      const f = forward(c, (k) => store.get(k), b.inputs, b.batchSize, b.seqLen, { biases, segmentIds: b.segmentIds, ropeBase: b.ropeBase });
      f.moe.forEach((m, l) => {
        const r = m.routing;
        for (let t = 0; t < r.T; t++) {
          let ffn = 0;
          for (let k = 0; k < r.K; k++) if (r.idx[t * r.K + k] < c.moe.nExperts) ffn++;
          counts[l][ffn]++;
        }
      });
    });
  }
  store.dispose();
  const hist = counts.map((row) => {
    const tot = row.reduce((a, b) => a + b, 0);
    return row.map((x) => x / tot);
  });
  const sd = hist.map((h) => {
    const mu = h.reduce((a, p, i) => a + p * i, 0);
    return Math.sqrt(h.reduce((a, p, i) => a + p * (i - mu) ** 2, 0));
  });
  return { evalLmLoss: lm, hist, std: sd, params: countParams(specs) };
}

function smooth(pts: [number, number][], w = 9): [number, number][] {
  return pts.map((p, i) => {
    const lo = Math.max(0, i - Math.floor(w / 2));
    const hi = Math.min(pts.length, i + Math.floor(w / 2) + 1);
    return [p[0], mean(pts.slice(lo, hi).map((q) => q[1]))];
  });
}

async function main(): Promise<void> {
  const [outDir, imgArg] = process.argv.slice(2);
  const img = imgArg ?? 'docs/img';
  fs.mkdirSync(img, { recursive: true });
  await selectBackend((process.env.BACKEND as 'cpu-native') ?? 'auto');
  const runs = fs
    .readdirSync(outDir)
    .filter((d) => /^[a-z0-9]+-s\d+$/.test(d) && fs.existsSync(path.join(outDir, d, 'done')))
    .sort();
  const metrics = new Map<string, StepMetrics[]>();
  const results: RunResult[] = [];
  let batches: Batch[] | null = null;
  for (const r of runs) {
    const [arm, s] = r.split('-s');
    const dir = path.join(outDir, r);
    const ms = readMetrics(path.join(dir, 'metrics.jsonl'));
    metrics.set(r, ms);
    if (!batches) {
      const cfg = loadTrainerCheckpoint(dir, { withOptimizer: false }).config;
      const loader = new MixtureLoader({ dataDir: cfg.data.dir!, mixture: parseMixture(cfg.data.mixture, "data.mixture"), seed: 9999, microBatchSize: 8, microBatches: 1, seqLen: cfg.data.seqLen, crossDocMask: cfg.data.crossDocMask });
      batches = [0, 1, 2, 3].map((st) => loader.microbatch(st, 0));
    }
    const ev = evalRun(dir, batches);
    const t = tail(ms);
    const L = t[0].ffn_experts_per_token_by_layer.length;
    results.push({
      arm,
      seed: Number(s),
      steps: ms.length,
      params: ev.params,
      finalLmLoss: mean(t.map((m) => m.lm_loss)),
      finalLoss: mean(t.map((m) => m.loss)),
      ffnPerToken: mean(t.map((m) => m.ffn_experts_per_token)),
      ffnPerTokenByLayer: Array.from({ length: L }, (_, l) => mean(t.map((m) => m.ffn_experts_per_token_by_layer[l]))),
      hiddenRms: mean(t.map((m) => m.hidden_rms)),
      hiddenMax: mean(t.map((m) => m.hidden_max)),
      hiddenMaxPeak: Math.max(...ms.map((m) => m.hidden_max)),
      evalLmLoss: ev.evalLmLoss,
      perTokenHist: ev.hist,
      perTokenStd: ev.std,
      seconds: fs.existsSync(path.join(dir, 'done')) ? Number(fs.readFileSync(path.join(dir, 'done'), 'utf8')) : null,
    });
    process.stderr.write(`${r}: lm ${results[results.length - 1].finalLmLoss.toFixed(4)} eval ${ev.evalLmLoss.toFixed(4)}\n`);
  }
  fs.writeFileSync(path.join(outDir, 'results.json'), JSON.stringify(results, null, 1));

  // Tables: one row per arm, mean ± sample std over seeds (and the per-seed values).
  const arms = [...new Set(results.map((r) => r.arm))];
  const by = (a: string) => results.filter((r) => r.arm === a);
  const pm = (xs: number[], d = 3) => (xs.length > 1 ? `${mean(xs).toFixed(d)} ± ${std(xs).toFixed(d)}` : mean(xs).toFixed(d));
  const seedsOf = (xs: number[], d = 3) => xs.map((x) => x.toFixed(d)).join(', ');
  const lines: string[] = [];
  lines.push('| arm | params | seeds | final train lm_loss (last 10%) | per seed | eval lm_loss | FFN/token (mean) | FFN/token by layer | per-token std by layer | hidden RMS (last 10%) | hidden max (last 10%) | peak hidden max |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const a of arms) {
    const rs = by(a);
    const L = rs[0].ffnPerTokenByLayer.length;
    lines.push(
      `| ${a} (${LABELS[a] ?? a}) | ${rs[0].params.toLocaleString('en-US')} | ${rs.length} | ${pm(rs.map((r) => r.finalLmLoss))} | ${seedsOf(rs.map((r) => r.finalLmLoss))} | ${pm(rs.map((r) => r.evalLmLoss))} | ${pm(rs.map((r) => r.ffnPerToken), 2)} | ${Array.from({ length: L }, (_, l) => mean(rs.map((r) => r.ffnPerTokenByLayer[l])).toFixed(2)).join(' / ')} | ${Array.from({ length: L }, (_, l) => mean(rs.map((r) => r.perTokenStd[l])).toFixed(2)).join(' / ')} | ${pm(rs.map((r) => r.hiddenRms))} | ${pm(rs.map((r) => r.hiddenMax), 2)} | ${pm(rs.map((r) => r.hiddenMaxPeak), 2)} |`,
    );
  }
  lines.push('');
  lines.push('Per-token FFN experts (fraction of eval tokens with 0, 1, ..., K FFN experts; mean over seeds):');
  lines.push('');
  for (const a of arms) {
    const rs = by(a);
    const hs = rs[0].perTokenHist.map((h, l) => h.map((_, i) => mean(rs.map((r) => r.perTokenHist[l][i]))));
    lines.push(`- ${a}: ${hs.map((h, l) => `layer ${l} [${h.map((p) => p.toFixed(2)).join(', ')}]`).join('; ')}`);
  }
  lines.push('');
  lines.push('Paired differences (same seed), final train lm_loss:');
  lines.push('');
  for (const [x, y] of [['zero', 'fixed'], ['zero', 'seq'], ['zloss', 'zero'], ['zloss3', 'zero']] as const) {
    const ds = by(x).map((r) => {
      const o = by(y).find((q) => q.seed === r.seed);
      return o ? r.finalLmLoss - o.finalLmLoss : NaN;
    }).filter((d) => !Number.isNaN(d));
    if (ds.length) lines.push(`- ${x} − ${y}: ${seedsOf(ds)} (mean ${mean(ds).toFixed(3)})`);
  }
  fs.writeFileSync(path.join(outDir, 'tables.md'), lines.join('\n') + '\n');
  process.stdout.write(lines.join('\n') + '\n');

  // Plots.
  const series = (arm: string, key: (m: StepMetrics) => number, w = 9, dashedSeeds = true): ChartSeries[] =>
    by(arm).map((r, i) => ({
      label: `${arm} s${r.seed}`,
      dashed: dashedSeeds && i > 0,
      points: smooth(metrics.get(`${arm}-s${r.seed}`)!.map((m) => [m.step, key(m)] as [number, number]), w),
    }));
  const yLoss = (all: ChartSeries[]): [number, number] => {
    const ys = all.flatMap((s) => s.points.filter((p) => p[0] >= 20).map((p) => p[1]));
    return [Math.min(...ys), Math.max(...ys)];
  };
  const lossChart = (file: string, armsIn: string[], title: string) => {
    const s = armsIn.filter((a) => by(a).length).flatMap((a) => series(a, (m) => m.lm_loss));
    if (!s.length) return;
    fs.writeFileSync(path.join(img, file), svgLineChart(s, { title, xLabel: 'step (1,024 tokens each)', yLabel: 'train lm_loss (9-step moving mean)', yRange: yLoss(s) }));
  };
  lossChart('ablation-zero-experts-loss.svg', ['zero', 'fixed'], 'zero experts (K_e=2 target) vs fixed top-2');
  const ffn = ['zero', 'fixed'].filter((a) => by(a).length).flatMap((a) => series(a, (m) => m.ffn_experts_per_token, 5));
  if (ffn.length) fs.writeFileSync(path.join(img, 'ablation-zero-experts-ffn.svg'), svgLineChart(ffn, { title: 'FFN experts per token (mean over layers)', xLabel: 'step', yLabel: 'FFN experts / token (5-step mean)' }));
  lossChart('ablation-scmoe-loss.svg', ['zero', 'seq'], 'ScMoE vs sequential layer, equal tokens');
  lossChart('ablation-zloss-loss.svg', ['zero', 'zloss', 'zloss3'], 'hidden z-loss on vs off');
  const hz = ['zero', 'zloss', 'zloss3'].filter((a) => by(a).length);
  for (const [key, name, label] of [['hidden_rms', 'rms', 'last-layer hidden RMS'], ['hidden_max', 'max', 'last-layer hidden max |h|']] as const) {
    const s = hz.flatMap((a) => series(a, (m) => m[key], 5));
    if (s.length) fs.writeFileSync(path.join(img, `ablation-zloss-hidden-${name}.svg`), svgLineChart(s, { title: `${label}, z-loss on vs off`, xLabel: 'step', yLabel: `${label} (5-step mean)` }));
  }
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
