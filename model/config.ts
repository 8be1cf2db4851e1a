/**
 * The architecture config: every field in one validated type (DESIGN.md section 2). A bad
 * field is refused with its key path and the reason, before any work starts.
 */
import { z } from 'zod';
import { ConfigError } from '../core/errors';

const attentionSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('mla'),
    nHeads: z.number().int().positive(),
    qLoraRank: z.number().int().positive(),
    kvLoraRank: z.number().int().positive(),
    nopeHeadDim: z.number().int().positive(),
    ropeHeadDim: z.number().int().positive().multipleOf(2),
    vHeadDim: z.number().int().positive(),
    /**
     * eps of the q/kv latent RMSNorms. Absent: the model's rmsEps. Hugging Face's longcat_flash
     * fixes it at 1e-6, so `moecat import` sets 1e-6 (docs/interop.md).
     */
    latentNormEps: z.number().positive().optional(),
  }).strict(),
  z.object({
    type: z.literal('gqa'),
    nHeads: z.number().int().positive(),
    nKvHeads: z.number().int().positive(),
    headDim: z.number().int().positive().multipleOf(2),
  }).strict(),
]);

const moeSchema = z.object({
  nExperts: z.number().int().positive(),
  nZeroExperts: z.number().int().nonnegative().default(0),
  topK: z.number().int().positive(),
  expertHidden: z.number().int().positive(),
  /**
   * Expert variance compensation (DESIGN.md section 2): gates are multiplied by it. Defaults to
   * 1 (no compensation), not to the fine-grained split factor the report uses: a config states
   * its own (the shipped configs use 2 or 4; LongCat-Flash ships 6.0).
   */
  routedScalingFactor: z.number().positive().default(1),
  /** K_e: target mean number of FFN experts per token. Defaults to topK (no zero-expert budget). */
  targetFfnPerToken: z.number().positive().optional(),
  /** mu of the aux-loss-free bias controller; 0 disables it. */
  biasUpdateRate: z.number().nonnegative().default(0.001),
  /** `constant`: mu every step; `lr`: mu times lr(step)/peak lr (warms up and decays with the LR). */
  biasUpdateSchedule: z.enum(['constant', 'lr']).default('constant'),
  /** alpha of the device-level balance loss; 0 disables it. */
  balanceAlpha: z.number().nonnegative().default(0.01),
  /** D: number of FFN expert groups (expert-parallel groups) in the balance loss. */
  expertGroups: z.number().int().positive().default(1),
}).strict();

export const modelConfigSchema = z.object({
  vocabSize: z.number().int().min(260),
  dModel: z.number().int().positive(),
  /** Number of LongCat-Flash layers; each holds two attention blocks, two dense FFNs and one MoE. */
  nLayers: z.number().int().positive(),
  /** `scmoe`: MoE on a shortcut from the first half; `sequential`: MoE replaces FFN0 in sequence. */
  layerType: z.enum(['scmoe', 'sequential']).default('scmoe'),
  attention: attentionSchema,
  ffnHidden: z.number().int().positive(),
  moe: moeSchema,
  maxSeqLen: z.number().int().positive(),
  ropeBase: z.number().positive().default(10000),
  rmsEps: z.number().positive().default(1e-5),
  initStd: z.number().positive().default(0.02),
}).strict().superRefine((c, ctx) => {
  if (c.moe.topK > c.moe.nExperts + c.moe.nZeroExperts) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['moe', 'topK'], message: `topK (${c.moe.topK}) exceeds the number of experts (${c.moe.nExperts + c.moe.nZeroExperts})` });
  }
  const ke = c.moe.targetFfnPerToken;
  if (ke !== undefined && ke > c.moe.topK) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['moe', 'targetFfnPerToken'], message: `K_e (${ke}) cannot exceed topK (${c.moe.topK})` });
  }
  if (ke !== undefined && ke > c.moe.nExperts) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['moe', 'targetFfnPerToken'], message: `K_e (${ke}) cannot exceed the number of FFN experts (${c.moe.nExperts})` });
  }
  if (ke !== undefined && ke < c.moe.topK && c.moe.nZeroExperts === 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['moe', 'targetFfnPerToken'], message: `K_e (${ke}) below topK (${c.moe.topK}) needs zero experts (nZeroExperts > 0)` });
  }
  if (c.moe.nExperts % c.moe.expertGroups !== 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['moe', 'expertGroups'], message: `nExperts (${c.moe.nExperts}) must be divisible by expertGroups (${c.moe.expertGroups})` });
  }
  if (c.attention.type === 'gqa' && c.attention.nHeads % c.attention.nKvHeads !== 0) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['attention', 'nKvHeads'], message: `nHeads (${c.attention.nHeads}) must be a multiple of nKvHeads (${c.attention.nKvHeads})` });
  }
});

export type ModelConfig = z.infer<typeof modelConfigSchema>;
export type ModelConfigInput = z.input<typeof modelConfigSchema>;

/** Formats zod issues as `key.path: reason` lines, prefixed by a root key path. */
export function formatIssues(err: z.ZodError, root = ''): string {
  return err.issues
    .map((i) => `${[root, ...i.path.map(String)].filter(Boolean).join('.') || '(root)'}: ${i.message}`)
    .join('; ');
}

/** Validates a model config; throws ConfigError naming the key path(s). */
export function parseModelConfig(raw: unknown, root = 'model'): ModelConfig {
  const r = modelConfigSchema.safeParse(raw);
  if (!r.success) {
    const first = r.error.issues[0];
    throw new ConfigError(formatIssues(r.error, root), { where: [root, ...first.path.map(String)].join('.') });
  }
  return r.data;
}

/** eps of the MLA latent RMSNorms (q_a_layernorm, kv_a_layernorm). */
export function latentNormEps(c: ModelConfig): number {
  return (c.attention.type === 'mla' ? c.attention.latentNormEps : undefined) ?? c.rmsEps;
}

/** K_e with its default. */
export function targetFfnPerToken(c: ModelConfig): number {
  return c.moe.targetFfnPerToken ?? Math.min(c.moe.topK, c.moe.nExperts);
}
