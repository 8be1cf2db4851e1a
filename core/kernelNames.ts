/**
 * Names of the fused MoE kernels. model/moe/nativeKernels.ts implements them on the native CPU
 * path and core/webgpu/fusedKernels.ts on WebGPU; the names live here so that core/ needs
 * nothing from model/.
 */
export const EXPERTS_KERNEL = 'MoecatExperts';
export const EXPERTS_GRAD_KERNEL = 'MoecatExpertsGrad';
export const COMBINE_KERNEL = 'MoecatCombine';
export const COMBINE_GRAD_KERNEL = 'MoecatCombineGrad';
/** Rotate-half RoPE on [B, S, H, dim] and its gradient (fused on webgpu only). */
export const ROPE_KERNEL = 'MoecatRope';
export const ROPE_GRAD_KERNEL = 'MoecatRopeGrad';
/** concat([a [B, S, H, da], broadcast of r [B, S, 1, dr] over H], 3) and its gradient (webgpu). */
export const CONCAT_SHARED_KERNEL = 'MoecatConcatShared';
export const CONCAT_SHARED_GRAD_KERNEL = 'MoecatConcatSharedGrad';
/** Scaled dot-product attention on token-major q, k, v (outputs o and the probabilities) and its gradient (webgpu). */
export const ATTENTION_KERNEL = 'MoecatAttention';
export const ATTENTION_GRAD_KERNEL = 'MoecatAttentionGrad';
