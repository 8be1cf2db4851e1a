/**
 * Long-context measurement: loss by position bucket (inside the old context, [0, 64), and
 * beyond it, [64, 256)) on fixed 256-token rows, for the parent's weights under the new config
 * (step 0) and every checkpoint of the long-context run. Writes results.json and an SVG plot.
 * Usage: node dist/scripts/experiments/posttrain/measure.js <longctx run dir> <out dir> [svg]
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../../core/backend';
import { listCheckpoints } from '../../../core/checkpoint';
import { MixtureLoader } from '../../../data/loader';
import { flatLayout, views } from '../../../model/flatParams';
import { paramSpecs, ParamStore } from '../../../model/params';
import { loadTrainerCheckpoint } from '../../../trainer/checkpointing';
import { initFromCheckpoint } from '../../../trainer/initFrom';
import { microbatchLoss } from '../../../trainer/losses';
import { Batch } from '../../../data/batch';
import { TrainConfig } from '../../../trainer/config';

const OLD_CONTEXT = 64;

function bucketLoss(cfg: TrainConfig, params: Float32Array, biases: Float32Array[], batches: Batch[]): { inside: number; beyond: number } {
  const layout = flatLayout(paramSpecs(cfg.model));
  const store = new ParamStore(layout.specs, views(layout, params));
  const res = { inside: 0, beyond: 0 };
  for (const key of ['inside', 'beyond'] as const) {
    const masked = batches.map((b) => {
      const m = new Float32Array(b.lossMask.length);
      for (let i = 0; i < m.length; i++) {
        const pos = i % b.seqLen;
        m[i] = (key === 'inside' ? pos < OLD_CONTEXT : pos >= OLD_CONTEXT) ? b.lossMask[i] : 0;
      }
      return { ...b, lossMask: m };
    });
    let n = 0;
    for (const b of masked) for (const v of b.lossMask) n += v;
    const norms = { globalTokens: n, globalSeqs: batches.length };
    for (const b of masked) tf.tidy(() => { res[key] += microbatchLoss(cfg.model, (k) => store.get(k), b, norms, { biases }).lm.dataSync()[0]; });
  }
  store.dispose();
  return res;
}

function svg(points: { step: number; inside: number; beyond: number }[]): string {
  const W = 560, H = 340, L = 60, R = 20, T = 30, B = 50;
  const xs = points.map((p) => p.step);
  const ys = points.flatMap((p) => [p.inside, p.beyond]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  const y0 = Math.floor(Math.min(...ys) * 10) / 10, y1 = Math.ceil(Math.max(...ys) * 10) / 10;
  const X = (v: number) => L + ((v - x0) / Math.max(1e-9, x1 - x0)) * (W - L - R);
  const Y = (v: number) => T + (1 - (v - y0) / Math.max(1e-9, y1 - y0)) * (H - T - B);
  const line = (k: 'inside' | 'beyond', color: string) =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.map((p) => `${X(p.step).toFixed(1)},${Y(p[k]).toFixed(1)}`).join(' ')}"/>` +
    points.map((p) => `<circle cx="${X(p.step).toFixed(1)}" cy="${Y(p[k]).toFixed(1)}" r="3" fill="${color}"/>`).join('');
  const ticksY = Array.from({ length: 5 }, (_, i) => y0 + ((y1 - y0) * i) / 4);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14">Long-context extension 64 → 256 tokens, RoPE base 1e4 → 1e5</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    ...xs.map((v) => `<text x="${X(v)}" y="${H - B + 16}" text-anchor="middle">${v}</text>`),
    ...ticksY.map((v) => `<text x="${L - 6}" y="${Y(v) + 4}" text-anchor="end">${v.toFixed(2)}</text><line x1="${L}" x2="${W - R}" y1="${Y(v)}" y2="${Y(v)}" stroke="#ddd"/>`),
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">step of the long-context stage</text>`,
    `<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">eval loss (nats/token)</text>`,
    line('inside', '#1f77b4'),
    line('beyond', '#d62728'),
    `<text x="${W - R - 200}" y="${T + 16}" fill="#1f77b4">positions 0–63 (old context)</text>`,
    `<text x="${W - R - 200}" y="${T + 32}" fill="#d62728">positions 64–255 (beyond it)</text>`,
    '</svg>',
  ].join('\n');
}

async function main(): Promise<void> {
  const [runDir, outDir, svgPath] = process.argv.slice(2);
  await selectBackend((process.env.BACKEND as 'wasm') ?? 'wasm');
  const cks = listCheckpoints(runDir);
  if (cks.length === 0) throw new Error(`no checkpoints in ${runDir}`);
  const first = loadTrainerCheckpoint(cks[0].dir, { withOptimizer: false });
  const cfg = first.config;
  // Fixed evaluation rows: prose and speeches at 256 tokens, drawn with another seed.
  const loader = new MixtureLoader({ dataDir: cfg.data.dir!, mixture: { sources: { prose: 0.5, speeches: 0.5 } }, seed: 9999, microBatchSize: 4, microBatches: 1, seqLen: 256, crossDocMask: true });
  const batches: Batch[] = [0, 1, 2].map((s) => loader.microbatch(s, 0));
  const points: { step: number; inside: number; beyond: number }[] = [];
  const parent = initFromCheckpoint(cfg, { checkpoint: (first.saved.lineage as { parent: string }).parent });
  points.push({ step: 0, ...bucketLoss(cfg, parent.state.params, parent.state.biases, batches) });
  for (const c of cks) {
    const ck = loadTrainerCheckpoint(c.dir, { withOptimizer: false });
    points.push({ step: c.step, ...bucketLoss(ck.config, ck.state.params, ck.state.biases, batches) });
  }
  for (const p of points) process.stdout.write(`step ${p.step}: loss[0,64) ${p.inside.toFixed(4)}  loss[64,256) ${p.beyond.toFixed(4)}\n`);
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'longctx.json'), JSON.stringify(points, null, 1));
  if (svgPath) fs.writeFileSync(svgPath, svg(points));
}

main().catch((e) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
});
