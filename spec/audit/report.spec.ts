import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import { spawnSync } from 'child_process';
import { buildReport, Report } from '../../analysis/report/report';
import { DataError } from '../../core/errors';
import { readMetrics } from '../../trainer/metrics';
import { moecat, SPIKY, tmpDir, trainedRun } from './helpers';

const CHROMIUM = '/usr/bin/chromium';

/** The <svg> inside `<figure id="...">`. */
function figure(html: string, id: string): string {
  const at = html.indexOf(`<figure id="${id}">`);
  assert.ok(at >= 0, `figure ${id} is on the page`);
  return html.slice(at, html.indexOf('</figure>', at));
}

/** Number of L/M commands in the path of the series called `name`. */
function seriesPoints(svg: string, name: string): number {
  const m = new RegExp(`<path class="series" data-name="${name}" d="([^"]*)"`).exec(svg);
  return m ? (m[1].match(/[ML]/g) ?? []).length : 0;
}

/** Minimal PNG decoder (8-bit RGB/RGBA, non-interlaced: what Chromium writes). */
function decodePng(buf: Buffer): { width: number; height: number; rgb: (x: number, y: number) => [number, number, number] } {
  assert.equal(buf.subarray(0, 8).toString('hex'), '89504e470d0a1a0a', 'PNG signature');
  let pos = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos);
    const type = buf.toString('latin1', pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.equal(data[8], 8, 'bit depth 8');
      channels = ({ 2: 3, 6: 4 } as Record<number, number>)[data[9]];
      assert.ok(channels, `colour type ${data[9]}`);
      assert.equal(data[12], 0, 'not interlaced');
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') break;
    pos += 12 + len;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const px = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? px[y * stride + i - channels] : 0;
      const b = y > 0 ? px[(y - 1) * stride + i] : 0;
      const c = y > 0 && i >= channels ? px[(y - 1) * stride + i - channels] : 0;
      let pred = 0;
      if (f === 1) pred = a;
      else if (f === 2) pred = b;
      else if (f === 3) pred = (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      px[y * stride + i] = (line[i] + pred) & 255;
    }
  }
  return { width, height, rgb: (x, y) => [px[y * stride + x * channels], px[y * stride + x * channels + 1], px[y * stride + x * channels + 2]] };
}

function chromium(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const profile = tmpDir('chromium-profile');
  const r = spawnSync(CHROMIUM, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`, ...args,
  ], { encoding: 'utf8', timeout: 120000, maxBuffer: 64 << 20 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('moecat report', function () {
  this.timeout(300000);
  let run: string;
  let report: Report;
  let file: string;
  before(async () => {
    run = await trainedRun('spiky', SPIKY);
    report = buildReport(run, { fitOptions: { iters: 2000 } });
    file = path.join(tmpDir('report'), 'report.html');
    fs.writeFileSync(file, report.html);
  });

  it('has one plot per training signal, each with drawn data', () => {
    assert.deepEqual(report.plots, [
      'plot-loss', 'plot-aux', 'plot-lr', 'plot-grad-norm', 'plot-grad-rms', 'plot-ffn', 'plot-load-0', 'plot-load-1',
      'plot-router-sim', 'plot-rg', 'plot-hidden-rms', 'plot-hidden-max',
    ]);
    const h = report.html;
    assert.equal(seriesPoints(figure(h, 'plot-loss'), 'loss'), 16);
    assert.equal(seriesPoints(figure(h, 'plot-lr'), 'lr'), 16);
    assert.equal(seriesPoints(figure(h, 'plot-grad-norm'), 'grad norm \\(before clipping\\)'), 16);
    for (const l of [0, 1]) assert.equal(seriesPoints(figure(h, 'plot-ffn'), `layer ${l}`), 16);
    assert.equal(seriesPoints(figure(h, 'plot-router-sim'), 'layer 1'), 16);
    assert.equal(seriesPoints(figure(h, 'plot-hidden-max'), 'hidden max'), 16);
    // R_g is computed every 3 steps: steps 3, 6, ..., 15.
    assert.equal(seriesPoints(figure(h, 'plot-rg'), 'layer 0'), 5);
    assert.match(figure(h, 'plot-ffn'), /target K_e = 2/);
  });

  it('draws the expert load as one heatmap per layer, one cell per expert and step', () => {
    for (const l of [0, 1]) {
      const svg = figure(report.html, `plot-load-${l}`);
      const cells = svg.slice(svg.indexOf('<g class="cells"'), svg.indexOf('</g>', svg.indexOf('<g class="cells"')));
      assert.equal((cells.match(/<rect /g) ?? []).length, 8 * 16, '8 FFN experts x 16 steps');
      assert.match(svg, />E7</);
    }
  });

  it('fits the free-knot spline to the loss with a band, and lists regime changes', () => {
    const svg = figure(report.html, 'plot-loss');
    assert.ok(report.fit?.curve, 'a fit exists');
    assert.equal(seriesPoints(svg, 'free-knot spline \\(posterior mean\\)'), 160);
    assert.match(svg, /<path class="band" d="M[^"]+Z"/);
    for (const c of report.fit!.changes) assert.match(svg, new RegExp(`data-label="(jump|regime change) at step ${c.step} `));
    assert.match(report.html, /Regime changes in the loss/);
  });

  it('skips the fit with a note when the curve is too short', () => {
    const dir = tmpDir('short');
    const lines = fs.readFileSync(path.join(run, 'metrics.jsonl'), 'utf8').split('\n').filter((l) => l.includes('"fingerprint"')).slice(0, 6);
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), lines.join('\n') + '\n');
    const r = buildReport(dir);
    assert.equal(r.fit?.curve, undefined);
    assert.match(r.html, /spline fit needs at least 10 points \(have 6\)/);
    assert.equal(seriesPoints(figure(r.html, 'plot-loss'), 'loss'), 6);
    assert.match(r.html, /No config\.yaml in the run directory/);
  });

  it('heads the page with the config summary and the final parameter hash', () => {
    const last = readMetrics(path.join(run, 'metrics.jsonl')).filter((m) => m.fingerprint).pop()!;
    assert.match(String(last.param_hash), /^[0-9a-f]{64}$/);
    assert.match(report.html, new RegExp(`FINAL PARAM HASH \\(step 16\\)</b><span class="hash">${last.param_hash}</span>`, 'i'));
    assert.match(report.html, /<code>dModel<\/code>=64/);
    assert.match(report.html, /<code>moe\.nExperts<\/code>=8/);
    assert.match(report.html, /<b>steps recorded<\/b><span class="">1\.\.16<\/span>/);
  });

  it('is self-contained (no scripts, stylesheets or remote resources) and reproducible', () => {
    assert.doesNotMatch(report.html, /<script|<link|<img|@import|url\(http/i);
    const urls = report.html.match(/https?:\/\/[^"'\s<)]+/g) ?? [];
    assert.deepEqual([...new Set(urls)], ['http://www.w3.org/2000/svg'], 'only the SVG namespace');
    assert.ok(buildReport(run, { fitOptions: { iters: 2000 } }).html === report.html, 'the same run gives the same page, byte for byte');
  });

  it('refuses a missing run or a run without step records with clear errors', () => {
    assert.throws(() => buildReport(path.join(tmpDir('x'), 'missing')), (e: unknown) => e instanceof DataError && /no such run directory/.test(e.message));
    assert.throws(() => buildReport(tmpDir('nometrics')), (e: unknown) => e instanceof DataError && /no metrics\.jsonl/.test(e.message));
    const dir = tmpDir('events-only');
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), '{"event":"spike","step":3,"data_step":2,"reason":"x","restored_to":0}\n');
    assert.throws(() => buildReport(dir), (e: unknown) => e instanceof DataError && /no step records/.test(e.message));
    fs.writeFileSync(path.join(dir, 'metrics.jsonl'), '{"step":1,"loss":2}\n{oops\n');
    assert.throws(() => buildReport(dir), (e: unknown) => e instanceof DataError && /metrics\.jsonl:2: not valid JSON/.test(e.message));
  });

  it('the CLI writes the page and exits 0, and exits 2 on a missing run', () => {
    const out = path.join(tmpDir('cli-report'), 'r.html');
    const r = moecat(['report', run, '--out', out, '--iters', '500']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /wrote .*r\.html: 12 plots, steps 1\.\.16, 1 spike\(s\)/);
    assert.match(fs.readFileSync(out, 'utf8'), /<figure id="plot-loss">/);
    const bad = moecat(['report', path.join(run, 'nope')]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /no such run directory/);
  });

  describe('in a real browser (headless Chromium)', () => {
    before(function () {
      if (!fs.existsSync(CHROMIUM)) {
        console.log(`    (skipped: ${CHROMIUM} is absent; install the Debian package 'chromium' to run the browser checks)`);
        this.skip();
      }
    });

    it('renders the plots: a screenshot holds plenty of ink and the plots\' stroke and heatmap colours', () => {
      const png = path.join(path.dirname(file), 'report.png');
      const r = chromium([`--screenshot=${png}`, '--window-size=1400,3000', `file://${file}`]);
      assert.ok(fs.existsSync(png), `no screenshot (status ${r.status}): ${r.stderr.slice(-2000)}`);
      const img = decodePng(fs.readFileSync(png));
      assert.deepEqual([img.width, img.height], [1400, 3000]);
      let ink = 0;
      const near = (p: number[], q: number[], tol: number) => p.every((v, i) => Math.abs(v - q[i]) <= tol);
      const want: Record<string, number[]> = {
        'loss blue #1f77b4': [31, 119, 180], 'spike red #d62728': [214, 39, 40], 'spline green #2ca02c': [44, 160, 44],
        'viridis dark #440154': [68, 1, 84], 'viridis teal #21918c': [33, 145, 140],
      };
      const counts: Record<string, number> = Object.fromEntries(Object.keys(want).map((k) => [k, 0]));
      for (let y = 0; y < img.height; y++) {
        for (let x = 0; x < img.width; x++) {
          const p = img.rgb(x, y);
          if (Math.min(...p) < 200) ink++;
          for (const [k, c] of Object.entries(want)) if (near(p, c, 12)) counts[k]++;
        }
      }
      const frac = ink / (img.width * img.height);
      assert.ok(frac > 0.03, `ink covers ${(frac * 100).toFixed(2)}% of the page`);
      for (const [k, n] of Object.entries(counts)) assert.ok(n > 100, `${k}: ${n} pixels`);
    });

    it('parses every plot as SVG with non-empty paths (--dump-dom)', () => {
      const r = chromium(['--dump-dom', `file://${file}`]);
      assert.equal(r.status, 0, r.stderr.slice(-2000));
      const dom = r.stdout;
      assert.equal((dom.match(/<svg /g) ?? []).length, report.plots.length);
      for (const id of report.plots) assert.match(figure(dom, id), /<(path class="series"|g class="cells")/, id);
      assert.equal((dom.match(/<path class="series"[^>]* d=""/g) ?? []).length, 0, 'no empty series path');
    });
  });
});
