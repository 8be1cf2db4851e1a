/**
 * Hyperparameter transfer across width (DESIGN.md section 3): standard parameterisation with
 * Adam "LR full-align" (Everett et al. 2024, as used by the LongCat-Flash report). With width
 * factor s = d_target / d_proxy:
 *   embedding          init std σ,         LR η        (unchanged)
 *   hidden, router,    init std σ/sqrt(s), LR η/s      (attention, dense FFNs, experts, router)
 *   unembedding
 *   norm               unchanged (vectors, initialised to 1)
 * Depth, sparsity (experts, top-K, zero experts, K_e), batch and schedule stay as they are.
 *
 * The target keeps the proxy's base `optim.lr` and `model.initStd` (so the embeddings get the
 * proxy's values) and carries the width factor in the per-group multipliers `optim.lrScale` and
 * `optim.initScale`, composed with whatever multipliers the proxy already had.
 */
import * as tf from '@tensorflow/tfjs';
import YAML from 'yaml';
import { ConfigError } from '../core/errors';
import { ModelConfig } from '../model/config';
import { AttnContext, causalMask, ParamGetter, ropeDim } from '../model/attention';
import { gatherRows, ropeTables } from '../model/ops';
import { ParamGroup } from '../model/params';
import { scmoeLayer } from '../model/scmoeLayer';
import { loadTrainConfig, parseTrainConfig, TrainConfig } from './config';
import { bestPoint, readSweepResults, SweepPoint } from './sweep';
import { makeDataSource } from './dataSource';
import { Trainer } from './trainer';

export const PARAM_GROUPS: ParamGroup[] = ['embedding', 'hidden', 'unembedding', 'router', 'norm'];

/** The exponent of s in each group's multipliers: init std × s^init, LR × s^lr. */
export const TRANSFER_RULE: Record<ParamGroup, { init: number; lr: number }> = {
  embedding: { init: 0, lr: 0 },
  hidden: { init: -0.5, lr: -1 },
  unembedding: { init: -0.5, lr: -1 },
  router: { init: -0.5, lr: -1 },
  norm: { init: 0, lr: 0 },
};

/**
 * The width fields, as key paths into the model config. They all scale by s, so the hidden
 * sizes keep their ratio to dModel; head dimensions stay fixed (heads are added instead), which
 * keeps the attention softmax scale and MLA's sqrt(dModel/loraRank) factors unchanged.
 */
export function widthFields(m: ModelConfig): string[] {
  const attn = m.attention.type === 'mla' ? ['attention.nHeads', 'attention.qLoraRank', 'attention.kvLoraRank'] : ['attention.nHeads', 'attention.nKvHeads'];
  return ['dModel', 'ffnHidden', 'moe.expertHidden', ...attn];
}

function getPath(obj: unknown, key: string): unknown {
  return key.split('.').reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), obj);
}

function setPath(obj: Record<string, unknown>, key: string, value: unknown): void {
  const ks = key.split('.');
  let cur = obj;
  for (const k of ks.slice(0, -1)) {
    if (typeof cur[k] !== 'object' || cur[k] === null) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[ks[ks.length - 1]] = value;
}

export interface WidthChange {
  key: string;
  from: number;
  to: number;
}

/** s = targetWidth / dModel, refused unless every width field scales to a positive integer. */
export function widthChanges(m: ModelConfig, targetWidth: number): { s: number; changes: WidthChange[] } {
  if (!Number.isInteger(targetWidth) || targetWidth <= 0) throw new ConfigError(`the target width must be a positive integer, got ${targetWidth}`, { where: '--target-width' });
  const s = targetWidth / m.dModel;
  const changes: WidthChange[] = [];
  for (const key of widthFields(m)) {
    const from = getPath(m, key) as number;
    const exact = from * s;
    const to = Math.round(exact);
    if (to < 1 || Math.abs(to - exact) > 1e-9 * Math.max(1, exact)) {
      throw new ConfigError(`model.${key} = ${from} does not scale to an integer at width ${targetWidth} (s = ${s}: ${exact})`, {
        where: '--target-width',
        hint: `choose a width d_proxy·s where ${from}·s is a whole number for every width field (${widthFields(m).map((k) => `model.${k}`).join(', ')})`,
      });
    }
    changes.push({ key: `model.${key}`, from, to });
  }
  return { s, changes };
}

export type GroupScales = Partial<Record<ParamGroup, number>>;

/** The target's per-group multipliers: the proxy's multipliers × s^exponent of the rule. */
export function transferScales(s: number, proxy: { lrScale: GroupScales; initScale: GroupScales }): { lrScale: Record<ParamGroup, number>; initScale: Record<ParamGroup, number> } {
  const lrScale = {} as Record<ParamGroup, number>;
  const initScale = {} as Record<ParamGroup, number>;
  for (const g of PARAM_GROUPS) {
    lrScale[g] = (proxy.lrScale[g] ?? 1) * Math.pow(s, TRANSFER_RULE[g].lr);
    initScale[g] = (proxy.initScale[g] ?? 1) * Math.pow(s, TRANSFER_RULE[g].init);
  }
  return { lrScale, initScale };
}

/** The best proxy point a transfer starts from, and where it came from (for the comment block). */
export interface TransferSource {
  lr: number;
  initStd: number;
  proxyFile: string;
  resultsFile: string;
  pointName: string;
  finalLoss: number;
  /** e.g. "mean lm_loss of steps 91..100" */
  lossDefinition: string;
  pointsTotal: number;
}

export interface TransferResult {
  raw: Record<string, unknown>;
  s: number;
  changes: WidthChange[];
  lrScale: Record<ParamGroup, number>;
  initScale: Record<ParamGroup, number>;
  /** The YAML text to write: the provenance comment block, then the config. */
  text: string;
}

const fmt = (x: number): string => (Number.isInteger(x) ? String(x) : Number(x.toPrecision(6)).toString());

/**
 * Builds the target config from the proxy's raw YAML object and validated config: width fields
 * scaled, best proxy lr/initStd as the base values, per-group multipliers from the rule.
 */
export function transferConfig(proxyRaw: Record<string, unknown>, proxy: TrainConfig, src: TransferSource, targetWidth: number): TransferResult {
  const { s, changes } = widthChanges(proxy.model, targetWidth);
  const raw = structuredClone(proxyRaw);
  for (const c of changes) setPath(raw, c.key, c.to);
  setPath(raw, 'optim.lr', src.lr);
  setPath(raw, 'model.initStd', src.initStd);
  const { lrScale, initScale } = transferScales(s, proxy.optim);
  setPath(raw, 'optim.lrScale', { ...lrScale });
  setPath(raw, 'optim.initScale', { ...initScale });

  const sq = Math.sqrt(s);
  const lines = [
    'Written by `moecat transfer` (hyperparameter transfer: SP + Adam LR full-align, docs/scaling.md).',
    `proxy config:   ${src.proxyFile} (dModel ${proxy.model.dModel})`,
    `sweep results:  ${src.resultsFile} (${src.pointsTotal} points)`,
    `best point:     ${src.pointName}: lr ${fmt(src.lr)}, initStd ${fmt(src.initStd)}, final loss ${src.finalLoss.toFixed(4)} (${src.lossDefinition})`,
    `width factor:   s = ${targetWidth}/${proxy.model.dModel} = ${fmt(s)}`,
    ...changes.map((c) => `${c.key.padEnd(28)} ${c.from} -> ${c.to}  (x s)`),
    `${'optim.lr'.padEnd(28)} ${fmt(src.lr)}  (best proxy lr; the embedding and norm LR)`,
    `${'model.initStd'.padEnd(28)} ${fmt(src.initStd)}  (best proxy initStd; the embedding init std)`,
    ...PARAM_GROUPS.map((g) => {
      const p = proxy.optim.lrScale[g] ?? 1;
      const e = TRANSFER_RULE[g].lr;
      return `${`optim.lrScale.${g}`.padEnd(28)} ${fmt(lrScale[g])}  (proxy ${fmt(p)}${e === 0 ? ', unchanged' : ` x 1/s = ${fmt(p)} x ${fmt(1 / s)}`})`;
    }),
    ...PARAM_GROUPS.map((g) => {
      const p = proxy.optim.initScale[g] ?? 1;
      const e = TRANSFER_RULE[g].init;
      return `${`optim.initScale.${g}`.padEnd(28)} ${fmt(initScale[g])}  (proxy ${fmt(p)}${e === 0 ? ', unchanged' : ` x 1/sqrt(s) = ${fmt(p)} x ${fmt(1 / sq)}`})`;
    }),
    'everything else (depth, experts, top-K, zero experts, K_e, batch, schedule, steps) is the proxy\'s',
  ];
  const text = lines.map((l) => `# ${l}`).join('\n') + '\n' + YAML.stringify(raw);
  return { raw, s, changes, lrScale, initScale, text };
}

/** Model keys (dot paths) whose values differ between two configs. */
export function diffKeys(a: unknown, b: unknown, prefix = ''): string[] {
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].flatMap((k) => diffKeys((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], prefix ? `${prefix}.${k}` : k));
  }
  return JSON.stringify(a) === JSON.stringify(b) ? [] : [prefix];
}

/**
 * `moecat transfer`: reads the proxy config and the sweep results, checks the sweep ran this
 * proxy's model (init std aside, which the sweep may vary), picks the best point (or `point`)
 * and builds the target config (validated).
 */
export function transferFromSweep(o: { proxy: string; sets?: string[]; results: string; targetWidth: number; point?: string }): TransferResult & { chosen: SweepPoint } {
  const { config: proxy, raw } = loadTrainConfig(o.proxy, o.sets ?? []);
  const { file, results } = readSweepResults(o.results);
  const differ = diffKeys({ ...results.proxy.model, initStd: 0 }, { ...proxy.model, initStd: 0 });
  if (differ.length) throw new ConfigError(`the sweep ran a different model than ${o.proxy}: ${differ.map((k) => `model.${k}`).join(', ')} differ`, { where: file });
  const chosen = o.point ? results.points.find((p) => p.name === o.point) : bestPoint(results.points);
  if (!chosen) throw new ConfigError(o.point ? `no point named ${o.point}` : 'no point of the sweep finished without diverging', { where: file });
  if (chosen.finalLoss === null) throw new ConfigError(`point ${chosen.name} diverged`, { where: '--point' });
  const t = transferConfig(raw, proxy, {
    lr: chosen.lr,
    initStd: chosen.initStd,
    proxyFile: o.proxy,
    resultsFile: file,
    pointName: chosen.name,
    finalLoss: chosen.finalLoss,
    lossDefinition: results.lossDefinition,
    pointsTotal: results.points.length,
  }, o.targetWidth);
  parseTrainConfig(t.raw, 'transferred config');
  return { ...t, chosen };
}

/**
 * Coordinate check probe: RMS of the residual stream after the embedding (index 0) and after
 * each layer (index l+1), for one batch. Used to check that activations stay O(1) across widths
 * after training under the transfer rule.
 */
export function activationRmsByLayer(c: ModelConfig, P: ParamGetter, tokens: Int32Array, B: number, S: number, biases: Float32Array[]): number[] {
  return tf.tidy(() => {
    const rope = ropeTables(S, ropeDim(c), c.ropeBase);
    const half = ropeDim(c) / 2;
    const ctx: AttnContext = { B, S, cos: tf.tensor2d(rope.cos, [S, half]), sin: tf.tensor2d(rope.sin, [S, half]), mask: S > 1 ? causalMask(S) : null };
    const rms = (t: tf.Tensor) => Math.sqrt(tf.mean(tf.square(t)).dataSync()[0]);
    let x = gatherRows(P('model.embed_tokens.weight') as tf.Tensor2D, tokens);
    const out = [rms(x)];
    for (let l = 0; l < c.nLayers; l++) {
      x = scmoeLayer(c, P, l, x, ctx, biases[l], { balance: false }).out;
      out.push(rms(x));
    }
    return out;
  });
}

/**
 * The coordinate check (as in the muP papers): train `steps` optimizer steps from init, then
 * probe the residual-stream RMS after every layer on a held-out batch (data step 10^6).
 */
export async function coordinateCheck(cfg: TrainConfig, steps: number): Promise<number[]> {
  const data = makeDataSource(cfg);
  const t = new Trainer(cfg, data);
  try {
    for (let i = 0; i < steps; i++) {
      const r = await t.step();
      if (r.kind !== 'step') throw new Error(`coordinate check: unexpected ${r.kind} at step ${i + 1}`);
    }
    const b = data.microbatch(1_000_000, 0);
    return activationRmsByLayer(cfg.model, (n) => t.store.get(n), b.inputs, b.batchSize, b.seqLen, t.state.biases);
  } finally {
    t.dispose();
  }
}

/** `--set` overrides that put a config at width `d` (from its own width) under a rule. */
export function widthSets(m: ModelConfig, d: number, rule: 'transfer' | 'sp', proxyScales: { lrScale: GroupScales; initScale: GroupScales } = { lrScale: {}, initScale: {} }): string[] {
  const { s, changes } = widthChanges(m, d);
  const sets = changes.map((c) => `${c.key}=${c.to}`);
  if (rule === 'transfer') {
    const t = transferScales(s, proxyScales);
    sets.push(`optim.lrScale=${JSON.stringify(t.lrScale)}`, `optim.initScale=${JSON.stringify(t.initScale)}`);
  }
  return sets;
}
