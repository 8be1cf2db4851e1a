/**
 * One training batch (a microbatch of B packed rows of S tokens): what data loaders produce and
 * what the trainer's losses consume. Row-major [B·S] arrays.
 */
export interface Batch {
  inputs: Int32Array;
  targets: Int32Array;
  /** 1 where the target counts in the loss, 0 elsewhere (padding, prompt tokens in SFT). */
  lossMask: Float32Array;
  /** Document index within each row (only with crossDocMask): attend only where equal. */
  segmentIds?: Int32Array;
  batchSize: number;
  seqLen: number;
  /** RoPE base for this batch (long-context stages), else the model's. */
  ropeBase?: number;
  /** Source of each row (mixture accounting; sources without a mixture leave it out). */
  sources?: string[];
  /** Name of the data stage the batch belongs to. */
  stage?: string;
}
