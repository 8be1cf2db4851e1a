/**
 * `moecat report`: one self-contained HTML page about a training run — config summary, final
 * parameter hash, spike events, and inline SVG plots of every logged training signal (loss with
 * its free-knot spline fit and regime changes, LR, gradient norm and RMS, FFN experts per token,
 * expert load heatmaps, router similarity, R_g, hidden-state RMS/max). No scripts, no external
 * CSS or fonts: it renders offline.
 */
import { fitLossCurve, LossFit, LossFitOptions } from './lossFit';
import { expertLoadShares, finalParamHash, keyedSeries, layerSeries, readRun, RunData, scalarSeries } from './runData';
import { esc, fmt, heatmap, lineChart, PALETTE, Series, VMarker } from './svg';

export interface ReportOptions {
  /** Skip the spline fit and change detection (fast reports). */
  fit?: boolean;
  fitOptions?: LossFitOptions;
  /** Shown in the page footer (the caller passes a time; the page itself stays reproducible). */
  generatedAt?: string;
}

export interface Report {
  html: string;
  /** Ids of the plots on the page, in order. */
  plots: string[];
  run: RunData;
  fit: LossFit | null;
}

const SPIKE = '#d62728';
const JUMP = '#9467bd';
const SLOPE = '#8c564b';

const CSS = `
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ccd;padding-bottom:4px}
.sub{color:#555;font-size:13px;margin-bottom:16px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #dde;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:11px;color:#667;text-transform:uppercase;letter-spacing:.04em;font-weight:600}
.card span{font-size:16px}
code,.hash{font-family:Menlo,Consolas,monospace;font-size:12px} .hash{word-break:break-all}
.kv{display:inline-block;white-space:nowrap;margin-right:14px}
table{border-collapse:collapse;background:#fff;font-size:13px}
td,th{border:1px solid #dde;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(650px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #dde;border-radius:6px;padding:6px}
figcaption{font-size:12px;color:#555;padding:2px 6px 4px}
svg text{font-size:11px;fill:#333} svg .title{font-size:14px;font-weight:600;fill:#111} svg .label{font-size:12px;fill:#333}
svg .small{font-size:10px} svg .grid line{stroke:#e6e6e6;stroke-width:1} svg .axis line{stroke:#333;stroke-width:1}
.note{color:#777;font-size:12px}
`;

function card(label: string, value: string, cls = ''): string {
  return `<div class="card"><b>${esc(label)}</b><span class="${cls}">${value}</span></div>`;
}

function figure(id: string, svg: string, caption: string): string {
  return `<figure id="${id}">${svg}<figcaption>${caption}</figcaption></figure>`;
}

/** Config leaves as `a.b.c = value` rows, grouped by top-level section. */
function configTable(cfg: Record<string, unknown>): string {
  const rows: string[] = [];
  for (const [section, v] of Object.entries(cfg)) {
    const leaves: string[] = [];
    const walk = (prefix: string, x: unknown) => {
      if (x && typeof x === 'object' && !Array.isArray(x) && Object.keys(x).length) {
        for (const [k, y] of Object.entries(x as Record<string, unknown>)) walk(prefix ? `${prefix}.${k}` : k, y);
      } else {
        const val = esc(typeof x === 'string' ? x : JSON.stringify(x));
        leaves.push(prefix ? `<span class="kv"><code>${esc(prefix)}</code>=${val}</span>` : `<span class="kv">${val}</span>`);
      }
    };
    walk('', v);
    rows.push(`<tr><th>${esc(section)}</th><td>${leaves.join(' ')}</td></tr>`);
  }
  return `<table class="config">${rows.join('')}</table>`;
}

function num(cfg: Record<string, unknown> | null, p: string): number | undefined {
  let cur: unknown = cfg;
  for (const k of p.split('.')) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[k] : undefined;
  return typeof cur === 'number' ? cur : undefined;
}

/** Builds the report of a run directory. */
export function buildReport(runPath: string, o: ReportOptions = {}): Report {
  const run = readRun(runPath);
  const plots: string[] = [];
  const figs: string[] = [];
  const add = (id: string, svg: string, caption: string) => {
    plots.push(id);
    figs.push(figure(id, svg, caption));
  };
  const last = run.steps[run.steps.length - 1];
  const spikeMarkers: VMarker[] = run.spikes.map((e) => ({ x: e.step, label: `loss spike at step ${e.step} (data step ${e.data_step}, rolled back to ${e.restored_to})`, color: SPIKE }));

  // Loss, its spline fit, regime changes and spikes.
  const loss = scalarSeries(run, 'loss');
  const lm = scalarSeries(run, 'lm_loss');
  let fit: LossFit | null = null;
  if (o.fit !== false) fit = fitLossCurve(loss.x, loss.y, o.fitOptions);
  const lossSeries: Series[] = [{ name: 'loss', color: PALETTE[0], ...loss, width: 1.6, dots: loss.x.length <= 60 }];
  if (lm.y.some((v, i) => v !== loss.y[i])) lossSeries.push({ name: 'LM loss', color: PALETTE[1], ...lm, width: 1.2 });
  const bands = [];
  if (fit?.curve) {
    lossSeries.push({ name: 'free-knot spline (posterior mean)', color: PALETTE[2], x: fit.curve.x, y: fit.curve.mean, width: 2.5 });
    bands.push({ name: '95% band', color: PALETTE[2], x: fit.curve.x, lo: fit.curve.lower, hi: fit.curve.upper });
  }
  const changeMarkers: VMarker[] = (fit?.changes ?? []).map((c) => ({
    x: c.step,
    label: `${c.kind === 'jump' ? 'jump' : 'regime change'} at step ${c.step} (p=${c.probability.toFixed(2)})`,
    color: c.kind === 'jump' ? JUMP : SLOPE,
    dash: '2 3',
  }));
  const fitNote = !fit ? 'spline fit skipped' : fit.note ? fit.note : `${fit.changes.length} regime change(s)/jump(s) detected`;
  add('plot-loss', lineChart({ title: 'Training loss', xLabel: 'step', yLabel: 'loss (nats/token)', series: lossSeries, bands, markers: [...spikeMarkers, ...changeMarkers], id: 'loss' }),
    `Loss per step. ${esc(fitNote)}. ${run.spikes.length} loss spike(s) marked in red.`);

  const aux: Series[] = [];
  const bal = scalarSeries(run, 'balance_loss');
  const z = scalarSeries(run, 'z_loss');
  if (bal.y.some((v) => v !== 0)) aux.push({ name: 'balance loss', color: PALETTE[4], ...bal });
  if (z.y.some((v) => v !== 0)) aux.push({ name: 'hidden z-loss', color: PALETTE[5], ...z });
  if (aux.length) add('plot-aux', lineChart({ title: 'Auxiliary losses', xLabel: 'step', yLabel: 'loss', series: aux, id: 'aux' }), `${aux.map((s) => s.name).join(' and ')} (included in the loss above).`);

  const lr = scalarSeries(run, 'lr');
  if (lr.x.length) add('plot-lr', lineChart({ title: 'Learning rate', xLabel: 'step', yLabel: 'learning rate', series: [{ name: 'lr', color: PALETTE[0], ...lr }], id: 'lr' }), 'Scheduled learning rate of each step.');

  const gn = scalarSeries(run, 'grad_norm');
  if (gn.x.length) {
    const clip = num(run.config, 'optim.clipNorm');
    add('plot-grad-norm', lineChart({
      title: 'Gradient norm', xLabel: 'step', yLabel: 'global gradient norm', logY: gn.y.every((v) => v > 0),
      series: [{ name: 'grad norm (before clipping)', color: PALETTE[3], ...gn, dots: gn.x.length <= 60 }],
      hlines: clip ? [{ y: clip, label: `clip norm ${fmt(clip)}`, color: '#555' }] : [], markers: spikeMarkers, id: 'grad-norm',
    }), 'Global gradient norm per accepted step; rejected spikes are marked.');
  }

  const rms = keyedSeries(run, 'grad_rms_by_group');
  if (rms.size) {
    const eps = scalarSeries(run, 'adam_eps');
    const series = [...rms.entries()].map(([g, s], i) => ({ name: g, color: PALETTE[i % PALETTE.length], ...s }));
    add('plot-grad-rms', lineChart({
      title: 'Gradient RMS by parameter group', xLabel: 'step', yLabel: 'gradient RMS', logY: true, series,
      hlines: eps.y.length ? [{ y: eps.y[eps.y.length - 1], label: `Adam eps ${fmt(eps.y[eps.y.length - 1])}`, color: '#000' }] : [], id: 'grad-rms',
    }), "Gradient RMS per group (after clipping) beside Adam's eps: eps must stay far below.");
  }

  const ffn = layerSeries(run, 'ffn_experts_per_token_by_layer');
  if (ffn.length) {
    const series: Series[] = ffn.map((s, l) => ({ name: `layer ${l}`, color: PALETTE[l % PALETTE.length], ...s, width: 1.4 }));
    const mean = scalarSeries(run, 'ffn_experts_per_token');
    if (ffn.length > 1 && mean.x.length) series.push({ name: 'mean', color: '#000', ...mean, width: 2.2 });
    const target = num(run.config, 'model.moe.targetFfnPerToken');
    const topK = num(run.config, 'model.moe.topK');
    const hl = [];
    if (target !== undefined) hl.push({ y: target, label: `target K_e = ${fmt(target)}`, color: '#777' });
    add('plot-ffn', lineChart({ title: 'FFN experts per token', xLabel: 'step', yLabel: 'FFN experts / token', series, hlines: hl, id: 'ffn' }),
      `Mean number of FFN (non-zero) experts each token ran${topK ? ` (top-K = ${topK})` : ''}; the rest of the K slots went to zero experts.`);
  }

  const load = expertLoadShares(run);
  // One colour scale for all layers so their heatmaps compare directly.
  let loadMax = 0;
  for (const layer of load.shares) for (const row of layer) for (const v of row) if (v > loadMax) loadMax = v;
  load.shares.forEach((layer, l) => {
    const n = layer.length;
    add(`plot-load-${l}`, heatmap({
      title: `Expert load, layer ${l}`, xLabel: 'step', yLabel: 'FFN expert', x: load.x, values: layer,
      rowLabels: layer.map((_, e) => `E${e}`), valueLabel: 'share', id: `load-${l}`, range: [0, loadMax || 1],
    }), `Share of layer ${l}'s FFN routing slots per expert and step (uniform = ${fmt(1 / Math.max(1, n))}).`);
  });

  const sim = layerSeries(run, 'router_similarity');
  if (sim.length) {
    add('plot-router-sim', lineChart({
      title: 'Router expert similarity', xLabel: 'step', yLabel: 'mean pairwise cosine', id: 'router-sim',
      series: sim.map((s, l) => ({ name: `layer ${l}`, color: PALETTE[l % PALETTE.length], ...s })),
    }), 'Mean pairwise cosine similarity of the router rows (experts collapsing shows as a rise).');
  }

  const rg = layerSeries(run, 'router_grad_ratio');
  if (rg.some((s) => s.x.length)) {
    const max = num(run.config, 'stability.routerRatioMax') || 0.1;
    add('plot-rg', lineChart({
      title: 'Router gradient ratio R_g', xLabel: 'step', yLabel: 'R_g', id: 'rg',
      series: rg.map((s, l) => ({ name: `layer ${l}`, color: PALETTE[l % PALETTE.length], ...s, dots: true })),
      hlines: [{ y: max, label: `limit ${fmt(max)}`, color: SPIKE }],
    }), 'R_g = ||grad of the balance loss|| / ||grad of the LM loss|| on the router weights.');
  }

  const hr = scalarSeries(run, 'hidden_rms');
  const hm = scalarSeries(run, 'hidden_max');
  if (hr.x.length) add('plot-hidden-rms', lineChart({ title: 'Last-layer hidden RMS', xLabel: 'step', yLabel: 'RMS', series: [{ name: 'hidden RMS', color: PALETTE[9], ...hr }], id: 'hidden-rms' }), 'RMS of the last layer\'s hidden states.');
  if (hm.x.length) add('plot-hidden-max', lineChart({ title: 'Last-layer hidden max |h|', xLabel: 'step', yLabel: 'max |h|', series: [{ name: 'hidden max', color: PALETTE[8], ...hm }], id: 'hidden-max' }), 'Largest absolute hidden activation (massive activations show here).');

  // Header.
  const ph = finalParamHash(run);
  const backend = run.checkpoints.map((c) => c.backend).filter(Boolean).pop();
  const minLoss = loss.y.reduce((a, b) => Math.min(a, b), Infinity);
  const cards = [
    card('steps recorded', `${run.steps[0].step}..${last.step}`),
    card('tokens', typeof last.tokens === 'number' ? last.tokens.toLocaleString('en-US') : '?'),
    card('final loss', typeof last.loss === 'number' ? last.loss.toFixed(4) : '?'),
    card('min loss', Number.isFinite(minLoss) ? minLoss.toFixed(4) : '?'),
    card('loss spikes', String(run.spikes.length)),
    card('checkpoints', run.checkpoints.length ? `${run.checkpoints.length} (last: step ${run.checkpoints[run.checkpoints.length - 1].step})` : 'none'),
    card('backend', esc(backend ?? 'unknown')),
    card(`final param hash${ph ? ` (step ${ph.step})` : ''}`, ph ? esc(ph.hash) : 'none recorded', 'hash'),
  ];
  const spikeTable = run.spikes.length
    ? `<table class="spikes"><tr><th>step</th><th>data step (skipped)</th><th>reason</th><th>rolled back to step</th></tr>${run.spikes
        .map((e) => `<tr class="spike-event"><td>${e.step}</td><td>${e.data_step}</td><td>${esc(e.reason)}</td><td>${e.restored_to}</td></tr>`)
        .join('')}</table>`
    : '<p class="note">No loss spikes were recorded.</p>';
  const changes = fit?.changes.length
    ? `<table><tr><th>step</th><th>kind</th><th>posterior probability</th></tr>${fit.changes.map((c) => `<tr><td>${c.step}</td><td>${c.kind === 'jump' ? 'jump (level shift)' : 'regime change (slope)'}</td><td>${c.probability.toFixed(2)}</td></tr>`).join('')}</table>`
    : `<p class="note">${esc(fitNote)}.</p>`;

  const html = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>moecat report: ${esc(run.name)}</title><style>${CSS}</style></head>
<body>
<h1>moecat training report: ${esc(run.name)}</h1>
<div class="sub">${esc(run.dir)} &middot; ${run.steps.length} step records${o.generatedAt ? ` &middot; generated ${esc(o.generatedAt)}` : ''}</div>
<div class="cards">${cards.join('')}</div>
<h2>Configuration</h2>
${run.config ? configTable(run.config) : '<p class="note">No config.yaml in the run directory.</p>'}
<h2>Loss spikes</h2>
${spikeTable}
<h2>Regime changes in the loss (free-knot splines)</h2>
${changes}
<h2>Plots</h2>
<div class="grid">
${figs.join('\n')}
</div>
</body></html>
`;
  return { html, plots, run, fit };
}
