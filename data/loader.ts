/**
 * MixtureLoader: packed training batches drawn from prepared sources by a staged mixture.
 * `microbatch(step, mb)` is a pure function of (seed, step, mb) and the data: the step fixes
 * the stage (stages are laid out on the step axis up front), a seeded per-step shuffle spreads
 * the step's rows over microbatches, the source chain picks each row's source and its read
 * cursor in closed form, and the source stream supplies the packed window. So any rank can read
 * any microbatch, and the loader state is a handful of numbers (DESIGN.md sections 4 and 7).
 */
import { ConfigError, DataError } from '../core/errors';
import { RngStream } from '../core/rng';
import { sha256Hex } from '../core/hash';
import { manifestFingerprint, readManifest } from './manifest';
import { loadPrepared, PreparedData } from './prepared';
import { MixtureConfig, parseMixture, planStages, Stage } from './mixture';
import { SourceStream } from './sourceStream';
import { Batch } from './batch';

export type { Batch };

export interface LoaderOptions {
  dataDir: string;
  mixture: MixtureConfig;
  seed: number;
  microBatchSize: number;
  microBatches: number;
  /** Sequence length for stages that do not set their own. */
  seqLen: number;
  crossDocMask?: boolean;
  /** Already-loaded data (tests and benchmarks share one load). */
  data?: PreparedData;
}

export interface LoaderState {
  kind: 'mixture';
  version: 1;
  seed: number;
  /** Next step to read. */
  step: number;
  /** Tokens consumed before `step`. */
  tokens: number;
  stage: string;
  /** Fingerprints that make resuming on different data or a different mixture an error. */
  data: string;
  mixture: string;
  rowsPerStep: number;
}

export interface RowPlan {
  source: string;
  /** Start of the row's window in the source's stream. */
  position: number;
}

export class MixtureLoader {
  readonly data: PreparedData;
  readonly stages: Stage[];
  private readonly opts: LoaderOptions;
  private readonly rowsPerStep: number;
  private readonly streams = new Map<string, SourceStream>();
  private readonly mixtureHash: string;
  private nextStep = 0;
  private permCache: { step: number; perm: Int32Array } | null = null;

  constructor(opts: LoaderOptions) {
    const mixture = parseMixture(opts.mixture);
    for (const k of ['microBatchSize', 'microBatches', 'seqLen'] as const) {
      if (!Number.isInteger(opts[k]) || opts[k] <= 0) throw new ConfigError(`must be a positive integer, got ${opts[k]}`, { where: k });
    }
    this.opts = { ...opts, mixture };
    this.rowsPerStep = opts.microBatchSize * opts.microBatches;
    const used = Object.keys(mixture.sources).filter((k) => mixtureUses(mixture, k));
    // Check the names against the manifest before loading any shard.
    const manifest = opts.data?.manifest ?? readManifest(opts.dataDir);
    for (const name of used) {
      if (!manifest.sources[name]) {
        throw new ConfigError(`source "${name}" is not in the prepared data at ${opts.dataDir} (it has: ${Object.keys(manifest.sources).join(', ')})`, { where: `mixture.sources.${name}` });
      }
    }
    this.data = opts.data ?? loadPrepared(opts.dataDir, used);
    for (const name of used) {
      const src = this.data.sources.get(name);
      if (!src) throw new DataError(`source "${name}" was not loaded`, { where: opts.dataDir });
      this.streams.set(name, new SourceStream(src, opts.seed, this.data.manifest.tokenizer.eos));
    }
    this.stages = planStages(mixture, { seed: opts.seed, rowsPerStep: this.rowsPerStep, seqLen: opts.seqLen });
    this.mixtureHash = sha256Hex(JSON.stringify([mixture, opts.seqLen, this.rowsPerStep])).slice(0, 16);
  }

  /** The stage that runs at `step`. */
  stageAtStep(step: number): Stage {
    let s = this.stages[0];
    for (const st of this.stages) if (st.steps > 0 && st.startStep <= step) s = st;
    return s;
  }

  /** The stage active once `tokens` global tokens have been consumed. */
  stageAt(tokens: number): Stage {
    let s = this.stages[0];
    for (const st of this.stages) if (st.steps > 0 && st.startTokensActual <= tokens) s = st;
    return s;
  }

  tokensPerStep(step: number): number {
    return this.stageAtStep(step).tokensPerStep;
  }

  /** Global tokens consumed before `step`. */
  tokensBefore(step: number): number {
    const st = this.stageAtStep(step);
    return st.startTokensActual + (step - st.startStep) * st.tokensPerStep;
  }

  /** Where each row of microbatch `mb` at `step` reads (exposed for accounting and tests). */
  rowPlan(step: number, mb: number): RowPlan[] {
    this.checkIndex(step, mb);
    const st = this.stageAtStep(step);
    const perm = this.rowPerm(step);
    const B = this.opts.microBatchSize;
    const plan: RowPlan[] = [];
    for (let b = 0; b < B; b++) {
      const g = (step - st.startStep) * this.rowsPerStep + perm[mb * B + b];
      const { source, ordinal } = st.chain.assign(g);
      plan.push({ source, position: st.cursorBase.get(source)! + ordinal * st.seqLen });
    }
    return plan;
  }

  microbatch(step: number, mb: number): Batch {
    const plan = this.rowPlan(step, mb);
    const st = this.stageAtStep(step);
    const B = this.opts.microBatchSize;
    const L = st.seqLen;
    const inputs = new Int32Array(B * L);
    const targets = new Int32Array(B * L);
    const segmentIds = this.opts.crossDocMask ? new Int32Array(B * L) : undefined;
    const win = new Int32Array(L + 1);
    const seg = segmentIds ? new Int32Array(L + 1) : undefined;
    plan.forEach((r, b) => {
      // L+1 tokens: inputs are the first L, targets the last L (next-token prediction).
      this.streams.get(r.source)!.read(r.position, L + 1, win, seg);
      inputs.set(win.subarray(0, L), b * L);
      targets.set(win.subarray(1), b * L);
      if (segmentIds && seg) segmentIds.set(seg.subarray(0, L), b * L);
    });
    this.nextStep = Math.max(this.nextStep, step + 1);
    return {
      inputs,
      targets,
      lossMask: new Float32Array(B * L).fill(1),
      segmentIds,
      batchSize: B,
      seqLen: L,
      sources: plan.map((r) => r.source),
      ropeBase: st.ropeBase,
      stage: st.name,
    };
  }

  /** Microbatch indices rank `rank` of `world` reads: a contiguous share of the global batch. */
  static rankMicrobatches(rank: number, world: number, microBatches: number): number[] {
    if (!Number.isInteger(world) || world <= 0 || microBatches % world !== 0) {
      throw new ConfigError(`${microBatches} microbatches do not split evenly over ${world} ranks`, { where: 'data.microBatches', hint: 'use a multiple of the world size' });
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= world) throw new ConfigError(`rank ${rank} is outside 0..${world - 1}`, { where: 'rank' });
    const per = microBatches / world;
    return Array.from({ length: per }, (_, i) => rank * per + i);
  }

  state(): LoaderState {
    return {
      kind: 'mixture',
      version: 1,
      seed: this.opts.seed,
      step: this.nextStep,
      tokens: this.tokensBefore(this.nextStep),
      stage: this.stageAtStep(this.nextStep).name,
      data: manifestFingerprint(this.data.manifest),
      mixture: this.mixtureHash,
      rowsPerStep: this.rowsPerStep,
    };
  }

  /** Continues from a saved state; refuses one taken on other data, mixture, seed or batch. */
  loadState(s: LoaderState): void {
    if (!s || s.kind !== 'mixture' || s.version !== 1) throw new DataError('loader state is not a mixture loader state (version 1)', { where: 'state.json data' });
    const fp = manifestFingerprint(this.data.manifest);
    if (s.data !== fp) throw new DataError(`loader state was taken on different prepared data (${s.data}, now ${fp})`, { where: this.opts.dataDir, hint: 'resume with the same prepared directory' });
    if (s.mixture !== this.mixtureHash || s.seed !== this.opts.seed || s.rowsPerStep !== this.rowsPerStep) {
      throw new ConfigError('loader state was taken with a different mixture, sequence length, seed or global batch', { where: 'data', hint: 'resume with the run\'s original config' });
    }
    this.nextStep = s.step;
  }

  static restore(opts: LoaderOptions, s: LoaderState): MixtureLoader {
    const l = new MixtureLoader(opts);
    l.loadState(s);
    return l;
  }

  /** The next unread step (1 + the highest step read or restored). */
  get step(): number {
    return this.nextStep;
  }

  tokenizerJson(): string {
    return this.data.tokenizerJson;
  }

  describe(): string {
    const m = this.data.manifest;
    const srcs = [...this.streams.keys()].map((k) => `${k} (${m.sources[k].tokens} tok)`).join(', ');
    const stages = this.stages.filter((s) => s.steps > 0).map((s) => `${s.name}@${s.startTokensActual}`).join(' -> ');
    return `prepared ${this.opts.dataDir}: ${srcs}; stages ${stages}`;
  }

  private checkIndex(step: number, mb: number): void {
    if (!Number.isInteger(step) || step < 0) throw new ConfigError(`step must be a non-negative integer, got ${step}`, { where: 'microbatch' });
    if (!Number.isInteger(mb) || mb < 0 || mb >= this.opts.microBatches) throw new ConfigError(`microbatch ${mb} is outside 0..${this.opts.microBatches - 1}`, { where: 'microbatch' });
  }

  /** Seeded shuffle of the step's rows, so microbatches are mixed while the step's mix is exact. */
  private rowPerm(step: number): Int32Array {
    if (this.permCache?.step === step) return this.permCache.perm;
    const order = Array.from({ length: this.rowsPerStep }, (_, i) => i);
    RngStream.of(this.opts.seed, 'mixture', step).shuffle(order);
    this.permCache = { step, perm: Int32Array.from(order) };
    return this.permCache.perm;
  }
}

function mixtureUses(m: MixtureConfig, name: string): boolean {
  return (m.sources[name] ?? 0) > 0 || (m.stages ?? []).some((s) => (s.weights[name] ?? 0) > 0);
}
