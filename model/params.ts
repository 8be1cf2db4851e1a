/**
 * Parameter specification and storage. Names follow the Hugging Face LongCat-Flash layout
 * (`model.layers.{i}.self_attn.{0,1}.q_a_proj.weight`, `mlp.experts.{j}.gate_proj.weight`, ...).
 * Linear weights are held as [in, out] so the forward pass uses plain matMuls (fast on wasm,
 * TFJS-NOTES); checkpoints store them in the HF [out, in] layout (see `linear`).
 */
import * as tf from '@tensorflow/tfjs';
import { ModelConfig } from './config';
import { RngStream } from '../core/rng';
import { hashNamedArrays } from '../core/hash';

/** Parameter groups drive per-group init variance and LR (hyperparameter transfer, section 3). */
export type ParamGroup = 'embedding' | 'hidden' | 'unembedding' | 'router' | 'norm';

export interface ParamSpec {
  name: string;
  shape: number[];
  group: ParamGroup;
  /** True for [in, out] linear weights that checkpoints store transposed ([out, in]). */
  linear: boolean;
  /** MoE layer index and expert index for expert weights (used by expert parallelism). */
  expert?: { layer: number; index: number };
}

function linear(name: string, inDim: number, outDim: number, group: ParamGroup = 'hidden', expert?: ParamSpec['expert']): ParamSpec {
  return { name, shape: [inDim, outDim], group, linear: true, expert };
}
function norm(name: string, dim: number): ParamSpec {
  return { name, shape: [dim], group: 'norm', linear: false };
}

function attentionSpecs(c: ModelConfig, p: string): ParamSpec[] {
  const a = c.attention;
  if (a.type === 'mla') {
    return [
      linear(`${p}.q_a_proj.weight`, c.dModel, a.qLoraRank),
      norm(`${p}.q_a_layernorm.weight`, a.qLoraRank),
      linear(`${p}.q_b_proj.weight`, a.qLoraRank, a.nHeads * (a.nopeHeadDim + a.ropeHeadDim)),
      linear(`${p}.kv_a_proj_with_mqa.weight`, c.dModel, a.kvLoraRank + a.ropeHeadDim),
      norm(`${p}.kv_a_layernorm.weight`, a.kvLoraRank),
      linear(`${p}.kv_b_proj.weight`, a.kvLoraRank, a.nHeads * (a.nopeHeadDim + a.vHeadDim)),
      linear(`${p}.o_proj.weight`, a.nHeads * a.vHeadDim, c.dModel),
    ];
  }
  return [
    linear(`${p}.q_proj.weight`, c.dModel, a.nHeads * a.headDim),
    linear(`${p}.k_proj.weight`, c.dModel, a.nKvHeads * a.headDim),
    linear(`${p}.v_proj.weight`, c.dModel, a.nKvHeads * a.headDim),
    linear(`${p}.o_proj.weight`, a.nHeads * a.headDim, c.dModel),
  ];
}

function ffnSpecs(p: string, d: number, hidden: number, expert?: ParamSpec['expert']): ParamSpec[] {
  return [
    linear(`${p}.gate_proj.weight`, d, hidden, 'hidden', expert),
    linear(`${p}.up_proj.weight`, d, hidden, 'hidden', expert),
    linear(`${p}.down_proj.weight`, hidden, d, 'hidden', expert),
  ];
}

/** All parameters of the model in a fixed order. */
export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const specs: ParamSpec[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocabSize, c.dModel], group: 'embedding', linear: false }];
  const nE = c.moe.nExperts + c.moe.nZeroExperts;
  for (let l = 0; l < c.nLayers; l++) {
    const p = `model.layers.${l}`;
    for (const j of [0, 1]) {
      specs.push(norm(`${p}.input_layernorm.${j}.weight`, c.dModel));
      specs.push(...attentionSpecs(c, `${p}.self_attn.${j}`));
      specs.push(norm(`${p}.post_attention_layernorm.${j}.weight`, c.dModel));
      // The sequential layer has no FFN0: its MoE takes FFN0's place (DESIGN.md section 2).
      if (!(j === 0 && c.layerType === 'sequential')) specs.push(...ffnSpecs(`${p}.mlps.${j}`, c.dModel, c.ffnHidden));
    }
    specs.push(linear(`${p}.mlp.router.classifier.weight`, c.dModel, nE, 'router'));
    for (let e = 0; e < c.moe.nExperts; e++) {
      specs.push(...ffnSpecs(`${p}.mlp.experts.${e}`, c.dModel, c.moe.expertHidden, { layer: l, index: e }));
    }
  }
  specs.push(norm('model.norm.weight', c.dModel));
  specs.push(linear('lm_head.weight', c.dModel, c.vocabSize, 'unembedding'));
  return specs;
}

export function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function countParams(specs: ParamSpec[]): number {
  return specs.reduce((n, s) => n + numel(s.shape), 0);
}

/** Per-group init std multipliers (hyperparameter transfer sets hidden/unembedding to 1/sqrt(s)). */
export type InitScales = Partial<Record<ParamGroup, number>>;

/**
 * Deterministic initialisation: each parameter draws from its own named stream
 * (seed, 'init:<name>'), so adding a parameter never shifts another's values, and a subset
 * `specs` (an expert-parallel rank's own experts) gets the same values as the whole model.
 */
export function initParams(c: ModelConfig, seed: number, scales: InitScales = {}, specs: ParamSpec[] = paramSpecs(c)): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const s of specs) out.set(s.name, initParam(c, s, seed, scales));
  return out;
}

/** One parameter's initial values (initParams draws each from its own stream). */
export function initParam(c: ModelConfig, s: ParamSpec, seed: number, scales: InitScales = {}): Float32Array {
  const n = numel(s.shape);
  if (s.group === 'norm') return new Float32Array(n).fill(1);
  return RngStream.of(seed, `init:${s.name}`).normalArray(n, c.initStd * (scales[s.group] ?? 1));
}

let storeCounter = 0;

/** The live parameters as tf.Variables, mirrored from host Float32Arrays. */
export class ParamStore {
  readonly specs: ParamSpec[];
  readonly vars = new Map<string, tf.Variable>();
  private readonly byName = new Map<string, ParamSpec>();
  /**
   * `get` as one long-lived function. Hot paths pass it as the model's parameter getter: a fresh
   * closure per step is inlined into optimised code and then dies, which made V8 throw that code
   * away (a "weak objects" deopt of routeTokens) and recompile it every step.
   */
  readonly getter = (name: string): tf.Variable => this.get(name);

  constructor(specs: ParamSpec[], values: Map<string, Float32Array>) {
    this.specs = specs;
    const id = storeCounter++;
    for (const s of specs) {
      const v = values.get(s.name);
      if (!v) throw new Error(`parameter ${s.name} has no value`);
      this.byName.set(s.name, s);
      this.vars.set(s.name, tf.variable(tf.tensor(v, s.shape, 'float32'), true, `${s.name}#${id}`));
    }
  }

  get(name: string): tf.Variable {
    const v = this.vars.get(name);
    if (!v) throw new Error(`unknown parameter ${name}`);
    return v;
  }

  has(name: string): boolean {
    return this.vars.has(name);
  }

  spec(name: string): ParamSpec {
    return this.byName.get(name)!;
  }

  /** Copies host values into the variables. */
  assign(values: Map<string, Float32Array>): void {
    for (const s of this.specs) {
      const v = values.get(s.name);
      if (v) tf.tidy(() => this.get(s.name).assign(tf.tensor(v, s.shape, 'float32')));
    }
  }

  /** Reads the variables back to host arrays. */
  read(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const s of this.specs) out.set(s.name, this.get(s.name).dataSync() as Float32Array);
    return out;
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
    this.vars.clear();
  }
}

/** sha256 over all parameters in sorted-name order (the run's `param_hash`). */
export function paramHash(specs: ParamSpec[], values: Map<string, Float32Array>): string {
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const s of specs) m.set(s.name, { shape: s.shape, data: values.get(s.name)! });
  return hashNamedArrays(m);
}
