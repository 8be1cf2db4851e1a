/**
 * moecat model config <-> Hugging Face `longcat_flash` config.json (docs/interop.md has the
 * field table). Fields HF has no name for travel in a `moecat` block that transformers ignores;
 * a config.json without it (a released checkpoint) gets moecat's defaults for them.
 */
import { ConfigError } from '../../core/errors';
import { latentNormEps, ModelConfig, parseModelConfig } from '../config';

/** eps that transformers' longcat_flash uses for q_a_layernorm and kv_a_layernorm (hard-coded). */
export const HF_LATENT_NORM_EPS = 1e-6;
/** Version of the `moecat` block. */
export const MOECAT_BLOCK_FORMAT = 1;

type Json = Record<string, unknown>;

/** The model fields of the `moecat` block. */
const MOECAT_MODEL_KEYS = ['biasUpdateRate', 'balanceAlpha', 'expertGroups', 'targetFfnPerToken', 'latentNormEps'];

/** What moecat writes in config.json's `moecat` block. */
export interface MoecatBlock {
  format: number;
  /** Model fields with no HF name (all of them, defaults filled in). */
  model: Json;
  /** The run's config.yaml without its `model` section (seed, data, optim, train, ...). */
  training?: Json;
}

export interface SpecialIds {
  bos: number;
  eos: number[];
  pad: number;
}

/** Why a moecat model cannot be written as longcat_flash, or null when it can. */
export function exportBlocker(c: ModelConfig): string | null {
  if (c.attention.type !== 'mla') return 'model.attention.type is gqa; longcat_flash has MLA attention only';
  if (c.layerType !== 'scmoe') return 'model.layerType is sequential; longcat_flash layers are ScMoE (MoE on the shortcut)';
  return null;
}

/** The config.json object (insertion order is the file's key order). */
export function toHfConfig(c: ModelConfig, training: Json | undefined, special: SpecialIds | null): Json {
  const blocker = exportBlocker(c);
  if (blocker) throw new ConfigError(blocker, { where: 'model', hint: 'only MLA + ScMoE models have a longcat_flash form' });
  const a = c.attention as Extract<ModelConfig['attention'], { type: 'mla' }>;
  const moecatModel: Json = {
    biasUpdateRate: c.moe.biasUpdateRate,
    balanceAlpha: c.moe.balanceAlpha,
    expertGroups: c.moe.expertGroups,
    targetFfnPerToken: c.moe.targetFfnPerToken ?? null,
    latentNormEps: latentNormEps(c),
  };
  const block: MoecatBlock = { format: MOECAT_BLOCK_FORMAT, model: moecatModel };
  if (training) block.training = training;
  return {
    architectures: ['LongcatFlashForCausalLM'],
    model_type: 'longcat_flash',
    vocab_size: c.vocabSize,
    hidden_size: c.dModel,
    num_layers: c.nLayers,
    num_hidden_layers: 2 * c.nLayers,
    num_attention_heads: a.nHeads,
    num_key_value_heads: a.nHeads,
    ffn_hidden_size: c.ffnHidden,
    expert_ffn_hidden_size: c.moe.expertHidden,
    n_routed_experts: c.moe.nExperts,
    zero_expert_num: c.moe.nZeroExperts,
    zero_expert_type: 'identity',
    moe_topk: c.moe.topK,
    routed_scaling_factor: c.moe.routedScalingFactor,
    router_bias: false,
    q_lora_rank: a.qLoraRank,
    kv_lora_rank: a.kvLoraRank,
    qk_nope_head_dim: a.nopeHeadDim,
    qk_rope_head_dim: a.ropeHeadDim,
    qk_head_dim: a.nopeHeadDim + a.ropeHeadDim,
    // transformers sizes its rotary table by head_dim: it must be the rope part.
    head_dim: a.ropeHeadDim,
    v_head_dim: a.vHeadDim,
    mla_scale_q_lora: true,
    mla_scale_kv_lora: true,
    hidden_act: 'silu',
    attention_bias: false,
    attention_dropout: 0.0,
    max_position_embeddings: c.maxSeqLen,
    rope_theta: c.ropeBase,
    rope_parameters: { rope_type: 'default', rope_theta: c.ropeBase },
    rms_norm_eps: c.rmsEps,
    initializer_range: c.initStd,
    tie_word_embeddings: false,
    bos_token_id: special?.bos ?? null,
    eos_token_id: special ? (special.eos.length === 1 ? special.eos[0] : special.eos) : null,
    pad_token_id: special?.pad ?? null,
    torch_dtype: 'float32',
    use_cache: true,
    moecat: block,
  };
}

/** Fields read (or checked) by fromHfConfig; anything else in config.json is refused. */
const IGNORED = new Set(['architectures', 'model_type', 'auto_map', 'torch_dtype', 'dtype', 'transformers_version', 'use_cache', 'bos_token_id', 'eos_token_id', 'pad_token_id', '_name_or_path', 'num_hidden_layers']);

export interface ImportedConfig {
  model: ModelConfig;
  /** The model section as it goes into config.yaml (explicit, every field). */
  modelRaw: Json;
  training: Json | null;
}

const num = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Reads a longcat_flash config.json; refuses unsupported fields and values, naming them. */
export function fromHfConfig(j: Json, where = 'config.json'): ImportedConfig {
  const refuse = (key: string, what: string): never => {
    throw new ConfigError(`${key} ${what}`, { where: `${where}: ${key}`, hint: 'moecat imports longcat_flash models without these extensions; see docs/interop.md' });
  };
  if (j.model_type !== 'longcat_flash') refuse('model_type', `is ${JSON.stringify(j.model_type)}, expected "longcat_flash"`);
  const used = new Set<string>();
  const get = (key: string, dflt?: unknown): unknown => {
    used.add(key);
    const v = j[key];
    if (v === undefined || v === null) {
      if (dflt === undefined) refuse(key, 'is missing');
      return dflt;
    }
    return v;
  };
  const int = (key: string, dflt?: number): number => {
    const v = get(key, dflt);
    if (!Number.isInteger(v) || (v as number) < 0) refuse(key, `must be a non-negative integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const must = (key: string, want: unknown, dflt: unknown) => {
    const v = get(key, dflt);
    if (JSON.stringify(v) !== JSON.stringify(want)) refuse(key, `is ${JSON.stringify(v)}; only ${JSON.stringify(want)} is supported`);
  };
  const heads = int('num_attention_heads');
  const nope = int('qk_nope_head_dim');
  const rope = int('qk_rope_head_dim');
  used.add('q_lora_rank');
  const qLora = j.q_lora_rank;
  if (!Number.isInteger(qLora)) refuse('q_lora_rank', `is ${JSON.stringify(qLora)}; moecat's MLA needs a query LoRA (an integer rank)`);
  must('num_key_value_heads', heads, heads);
  must('qk_head_dim', nope + rope, nope + rope);
  must('head_dim', rope, rope);
  must('hidden_act', 'silu', 'silu');
  must('attention_bias', false, false);
  must('router_bias', false, false);
  must('tie_word_embeddings', false, false);
  must('mla_scale_q_lora', true, true);
  must('mla_scale_kv_lora', true, true);
  must('zero_expert_type', 'identity', 'identity');
  const dropout = get('attention_dropout', 0);
  if (dropout !== 0) refuse('attention_dropout', `is ${JSON.stringify(dropout)}; moecat has no dropout`);
  let theta = get('rope_theta', null) as number | null;
  const rp = get('rope_parameters', null) as Json | null;
  if (rp !== null) {
    if (typeof rp !== 'object' || (rp.rope_type ?? 'default') !== 'default') refuse('rope_parameters.rope_type', `is ${JSON.stringify(rp?.rope_type)}; only "default" RoPE is supported (no YaRN)`);
    const extra = Object.keys(rp).filter((k) => k !== 'rope_type' && k !== 'rope_theta');
    if (extra.length > 0) refuse(`rope_parameters.${extra[0]}`, 'is not supported');
    if (rp.rope_theta !== undefined) {
      if (theta !== null && theta !== rp.rope_theta) refuse('rope_parameters.rope_theta', `(${rp.rope_theta}) differs from rope_theta (${theta})`);
      theta = rp.rope_theta as number;
    }
  }
  const scaling = get('rope_scaling', null);
  if (scaling !== null) refuse('rope_scaling', `is ${JSON.stringify(scaling)}; only default RoPE is supported`);
  if (theta === null) theta = 10000000; // transformers' default_theta for longcat_flash
  if (!num(theta) || theta <= 0) refuse('rope_theta', `must be a positive number, got ${JSON.stringify(theta)}`);

  const block = get('moecat', null) as MoecatBlock | null;
  if (block !== null && (typeof block !== 'object' || block.format !== MOECAT_BLOCK_FORMAT || typeof block.model !== 'object')) {
    refuse('moecat', `is not a format-${MOECAT_BLOCK_FORMAT} moecat block`);
  }
  const extra: Json = block?.model ?? { latentNormEps: HF_LATENT_NORM_EPS };
  const unknownExtra = Object.keys(extra).filter((k) => !MOECAT_MODEL_KEYS.includes(k));
  if (unknownExtra.length > 0) refuse(`moecat.model.${unknownExtra[0]}`, `is not a moecat model field (known: ${MOECAT_MODEL_KEYS.join(', ')})`);
  const moe: Json = {
    nExperts: int('n_routed_experts'),
    // Absent fields take transformers' class defaults (256 zero experts, scaling 6.0); null is 0 there.
    nZeroExperts: j.zero_expert_num === null ? (used.add('zero_expert_num'), 0) : int('zero_expert_num', 256),
    topK: int('moe_topk'),
    expertHidden: int('expert_ffn_hidden_size'),
    routedScalingFactor: get('routed_scaling_factor', 6),
  };
  for (const k of ['biasUpdateRate', 'balanceAlpha', 'expertGroups', 'targetFfnPerToken']) if (extra[k] !== undefined && extra[k] !== null) moe[k] = extra[k];
  const attention: Json = { type: 'mla', nHeads: heads, qLoraRank: qLora, kvLoraRank: int('kv_lora_rank'), nopeHeadDim: nope, ropeHeadDim: rope, vHeadDim: int('v_head_dim') };
  if (extra.latentNormEps !== undefined) attention.latentNormEps = extra.latentNormEps;
  const modelRaw: Json = {
    vocabSize: int('vocab_size'),
    dModel: int('hidden_size'),
    nLayers: int('num_layers'),
    layerType: 'scmoe',
    attention,
    ffnHidden: int('ffn_hidden_size'),
    moe,
    maxSeqLen: int('max_position_embeddings'),
    ropeBase: theta,
    rmsEps: get('rms_norm_eps', 1e-5),
    initStd: get('initializer_range', 0.02),
  };
  const unknown = Object.keys(j).filter((k) => !used.has(k) && !IGNORED.has(k));
  if (unknown.length > 0) refuse(unknown.join(', '), `${unknown.length === 1 ? 'is' : 'are'} not part of longcat_flash as moecat supports it`);
  const model = parseModelConfig(modelRaw, `${where} (as moecat model)`);
  return { model, modelRaw, training: block?.training ?? null };
}
