/**
 * Plots and tables for docs/scaling.md from the experiment directories.
 *   node dist/scripts/experiments/scaling/plot.js width  <out dir> [img dir] [file prefix]
 *   node dist/scripts/experiments/scaling/plot.js growth <out dir> [img dir] [file name]
 *   node dist/scripts/experiments/scaling/plot.js coord  <coord.json> [img dir]
 */
import * as fs from 'fs';
import * as path from 'path';
import { readMetrics } from '../../../trainer/metrics';
import { bestPoint, ChartSeries, readSweepResults, svgLineChart } from '../../../trainer/sweep';

const [mode, dir, imgArg, nameArg] = process.argv.slice(2);
const img = imgArg ?? 'docs/img';
fs.mkdirSync(img, { recursive: true });

function width(): void {
  const arms = [
    { key: 'w32', label: 'd=32 (proxy)' },
    { key: 'mu-w64', label: 'd=64 transfer' },
    { key: 'mu-w128', label: 'd=128 transfer' },
    { key: 'sp-w64', label: 'd=64 plain SP' },
    { key: 'sp-w128', label: 'd=128 plain SP' },
  ].filter((a) => fs.existsSync(path.join(dir, a.key, 'results.json')));
  const res = new Map(arms.map((a) => [a.key, readSweepResults(path.join(dir, a.key)).results]));
  const series = (k: string, label: string, dashed = false): ChartSeries => ({
    label,
    dashed,
    points: res.get(k)!.points.filter((p) => p.finalLoss !== null).sort((a, b) => a.lr - b.lr).map((p) => [p.lr, p.finalLoss!]),
  });
  const finite = [...res.values()].flatMap((r) => r.points.map((p) => p.finalLoss).filter((x): x is number => x !== null));
  const lo = Math.min(...finite);
  const yRange: [number, number] = [lo, Math.min(Math.max(...finite), lo + 3)];
  const steps = res.get('w32')?.steps ?? 0;
  for (const [name, keys] of [['transfer', ['w32', 'mu-w64', 'mu-w128']], ['sp', ['w32', 'sp-w64', 'sp-w128']]] as const) {
    const s = keys.filter((k) => res.has(k)).map((k) => series(k, arms.find((a) => a.key === k)!.label, k === 'w32'));
    const title = name === 'transfer' ? 'transfer rule (hidden LR lr/s, init std/sqrt(s))' : 'plain SP (same LR and init at every width)';
    fs.writeFileSync(path.join(img, `${nameArg ?? 'scaling-lr'}-${name}.svg`), svgLineChart(s, { title: `${title}, ${steps} steps`, xLabel: 'base peak LR', yLabel: 'final lm_loss (mean of last 10%)', logX: true, yRange }));
  }
  const lrs = [...new Set([...res.values()].flatMap((r) => r.points.map((p) => p.lr)))].sort((a, b) => a - b);
  const out: string[] = [`| LR | ${arms.map((a) => a.label).join(' | ')} |`, `|---|${arms.map(() => '---').join('|')}|`];
  for (const lr of lrs) {
    const cells = arms.map((a) => {
      const p = res.get(a.key)!.points.find((q) => q.lr === lr);
      if (!p) return ' ';
      const v = p.finalLoss === null ? 'diverged' : p.finalLoss.toFixed(3);
      return bestPoint(res.get(a.key)!.points)?.name === p.name ? `**${v}**` : v;
    });
    out.push(`| ${lr} | ${cells.join(' | ')} |`);
  }
  process.stdout.write(out.join('\n') + '\n\n');
  for (const a of arms) {
    const b = bestPoint(res.get(a.key)!.points);
    process.stdout.write(`${a.label}: best LR ${b?.lr} (loss ${b?.finalLoss?.toFixed(4)})\n`);
  }
}

function smooth(xs: [number, number][], k: number): [number, number][] {
  return xs.map((p, i) => {
    const w = xs.slice(Math.max(0, i - k + 1), i + 1);
    return [p[0], w.reduce((a, q) => a + q[1], 0) / w.length];
  });
}

function growth(): void {
  const runs = [
    { key: 'random', label: '4 layers, random init' },
    { key: 'grown-stack', label: 'grown, Adam stacked' },
    { key: 'grown-reset', label: 'grown, Adam reset' },
    { key: 'small', label: '2 layers (parent)' },
  ].filter((r) => fs.existsSync(path.join(dir, r.key, 'metrics.jsonl')));
  const series: ChartSeries[] = [];
  const rows: string[] = ['| run | tokens | final lm_loss (mean of last 10% of steps) |', '|---|---|---|'];
  for (const r of runs) {
    const ms = readMetrics(path.join(dir, r.key, 'metrics.jsonl')).filter((m) => m.fingerprint);
    series.push({ label: r.label, dashed: r.key === 'small', points: smooth(ms.map((m) => [m.tokens, m.lm_loss]), 10) });
    const last = ms[ms.length - 1];
    const k = Math.max(1, Math.ceil(last.step * 0.1));
    const tail = ms.filter((m) => m.step > last.step - k);
    rows.push(`| ${r.label} | ${last.tokens} | ${(tail.reduce((a, m) => a + m.lm_loss, 0) / tail.length).toFixed(4)} |`);
  }
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const lo = Math.min(...ys);
  fs.writeFileSync(path.join(img, nameArg ?? 'scaling-growth.svg'), svgLineChart(series, { title: `growth: stacked 2->4 layers vs random init, ${path.basename(dir)} (10-step moving mean)`, xLabel: 'tokens', yLabel: 'lm_loss', yRange: [lo, Math.min(Math.max(...ys), lo + 3)] }));
  process.stdout.write(rows.join('\n') + '\n');
}

function coord(): void {
  const data = JSON.parse(fs.readFileSync(dir, 'utf8')) as { widths: number[]; steps: number; rms: Record<string, number[][]> };
  const series: ChartSeries[] = [];
  for (const [rule, perWidth] of Object.entries(data.rms)) {
    const nProbe = perWidth[0].length;
    for (let j = 1; j < nProbe; j++) series.push({ label: `${rule}, after layer ${j}`, dashed: rule !== 'transfer', points: data.widths.map((w, i) => [w, perWidth[i][j]]) });
  }
  fs.writeFileSync(path.join(img, 'scaling-coord-check.svg'), svgLineChart(series, { title: `coordinate check: residual RMS after ${data.steps} steps`, xLabel: 'dModel', yLabel: 'activation RMS', logX: true }));
}

if (mode === 'width') width();
else if (mode === 'growth') growth();
else if (mode === 'coord') coord();
else {
  process.stderr.write('usage: plot.js width|growth <dir> [img dir] | coord <coord.json> [img dir]\n');
  process.exit(2);
}
