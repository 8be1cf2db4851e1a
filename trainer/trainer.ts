/**
 * The training loop (DESIGN.md sections 2-4): per step, each rank runs its microbatches,
 * gradients are summed in the canonical microbatch tree (locally, then across ranks), checked
 * by the spike detector, clipped, applied by AdamW on the host, and the expert biases are
 * updated from globally summed counts. Everything that feeds the weights is a pure function of
 * (config, seed, data, step): reruns, resumes and world sizes give the same bits.
 */
import * as path from 'path';
import * as fs from 'fs';
import { ModelConfig, targetFfnPerToken } from '../model/config';
import { flatLayout, flatten, FlatLayout, views } from '../model/flatParams';
import { initParams, paramHash, paramSpecs, ParamStore } from '../model/params';
import { initialBiases, ForwardOptions } from '../model/transformer';
import { updateExpertBias } from '../model/moe/biasController';
import { stepFingerprint } from '../core/hash';
import { TrainingError } from '../core/errors';
import { adamwStep, AdamWState, newAdamWState, ParamSlice } from './adamw';
import { TrainConfig } from './config';
import { DataSource } from './data';
import { DataParallel, localMicrobatches, singleProcess } from './dataParallel';
import { MetricsWriter, StepMetrics } from './metrics';
import { microbatchGrad } from './microbatch';
import { lrAt } from './schedule';
import { TreeAccumulator } from './treeSum';
import { gradRmsByGroup, routerGradRatio, routerSimilarity, SpikeDetector } from './stability';
import { stepBoundary } from '../core/webgpu/stepBoundary';

export interface SpikeEvent {
  step: number;
  data_step: number;
  reason: string;
  restored_to: number;
}

export interface TrainerState {
  /** Optimizer steps applied. */
  step: number;
  /** Batches consumed, skipped ones included (the data cursor). */
  dataStep: number;
  tokens: number;
  params: Float32Array;
  opt: AdamWState;
  biases: Float32Array[];
  /** Data steps skipped after loss spikes. */
  skipped: number[];
  spikes: SpikeEvent[];
  detector: { loss: number[]; grad: number[] };
  /** Multiplier on the balance-loss alpha (the R_g controller lowers it). */
  balanceScale: number;
}

export interface TrainerOptions {
  dp?: DataParallel;
  /** Expert-parallel MoE override per layer (parallel/expertParallel). */
  moe?: ForwardOptions['moe'];
}

export type StepOutcome = { kind: 'step'; metrics: StepMetrics } | { kind: 'spike'; event: SpikeEvent };

/** Copy of src, written into reuse when its length matches (no fresh pages), else a new array. */
function copyF32(src: Float32Array, reuse?: Float32Array): Float32Array {
  if (!reuse || reuse.length !== src.length) return Float32Array.from(src);
  reuse.set(src);
  return reuse;
}

/**
 * Deep copy of a trainer state. `reuse` (a copy this trainer owns, e.g. the previous spike
 * snapshot) donates its arrays: a snapshot of small's 6.85M parameters and Adam moments is
 * 82 MB, and fresh arrays page-faulted every tenth step (20k faults, +400 ms).
 */
function cloneState(s: TrainerState, reuse?: TrainerState | null): TrainerState {
  return {
    ...s,
    params: copyF32(s.params, reuse?.params),
    opt: { t: s.opt.t, m: copyF32(s.opt.m, reuse?.opt.m), v: copyF32(s.opt.v, reuse?.opt.v) },
    biases: s.biases.map((b, i) => copyF32(b, reuse?.biases[i])),
    skipped: [...s.skipped],
    spikes: [...s.spikes],
    detector: { loss: [...s.detector.loss], grad: [...s.detector.grad] },
  };
}

export class Trainer {
  readonly model: ModelConfig;
  readonly layout: FlatLayout;
  readonly store: ParamStore;
  readonly slices: ParamSlice[];
  readonly dp: DataParallel;
  state: TrainerState;
  private readonly moe?: ForwardOptions['moe'];
  private readonly detector: SpikeDetector;
  private snapshot: TrainerState | null = null;
  /** Warnings raised by the stability suite since the last call to takeWarnings(). */
  private warnings: string[] = [];

  constructor(readonly cfg: TrainConfig, readonly data: DataSource, opts: TrainerOptions = {}, init?: TrainerState) {
    this.model = cfg.model;
    this.dp = opts.dp ?? singleProcess;
    this.moe = opts.moe;
    this.layout = flatLayout(paramSpecs(cfg.model));
    this.state = init ?? {
      step: 0,
      dataStep: 0,
      tokens: 0,
      params: flatten(this.layout, initParams(this.model, cfg.seed, cfg.optim.initScale)),
      opt: newAdamWState(this.layout.total),
      biases: initialBiases(this.model),
      skipped: [],
      spikes: [],
      detector: { loss: [], grad: [] },
      balanceScale: 1,
    };
    this.store = new ParamStore(this.layout.specs, views(this.layout, this.state.params));
    this.slices = this.layout.specs.map((s) => ({ offset: this.layout.offsets.get(s.name)!, size: s.shape.reduce((a, b) => a * b, 1), group: s.group }));
    this.detector = new SpikeDetector(cfg.stability.spike);
    this.detector.restore(this.state.detector);
    if (this.cfg.data.microBatches % this.dp.worldSize !== 0) {
      throw new TrainingError(`data.microBatches (${this.cfg.data.microBatches}) must be divisible by the world size (${this.dp.worldSize})`);
    }
  }

  paramHash(): string {
    return paramHash(this.layout.specs, views(this.layout, this.state.params));
  }

  takeWarnings(): string[] {
    const w = this.warnings;
    this.warnings = [];
    return w;
  }

  /**
   * Host gradient buffers, one per microbatch slot of a step, reused from step to step: nothing
   * holds a step's gradients once the step returns (the optimizer update has been applied).
   */
  private readonly gradBuffers: Float32Array[] = [];
  private gradBuffer(i: number): Float32Array {
    return (this.gradBuffers[i] ??= new Float32Array(this.layout.total));
  }

  /** The model config with the balance alpha scaled by the R_g controller. */
  private effectiveModel(): ModelConfig {
    if (this.state.balanceScale === 1) return this.model;
    return { ...this.model, moe: { ...this.model.moe, balanceAlpha: this.model.moe.balanceAlpha * this.state.balanceScale } };
  }

  /** Runs one optimizer step, or reports a spike after rolling back to the last snapshot. */
  async step(): Promise<StepOutcome> {
    await stepBoundary();
    const t0 = Date.now();
    const { cfg, dp } = this;
    const model = this.effectiveModel();
    const spikeCfg = cfg.stability.spike;
    if (spikeCfg.enabled && (this.snapshot === null || this.state.step % spikeCfg.snapshotEvery === 0)) {
      if (this.snapshot?.step !== this.state.step) this.snapshot = cloneState(this.syncDetector(), this.snapshot);
    }
    while (this.state.skipped.includes(this.state.dataStep)) this.state.dataStep++;
    const step = this.state.step;
    const dataStep = this.state.dataStep;
    const M = cfg.data.microBatches;
    const { first, count } = localMicrobatches(dp.rank, dp.worldSize, M);
    const batches = Array.from({ length: count }, (_, i) => this.data.microbatch(dataStep, first + i));

    // Global normalisers first: losses are divided by global counts, never per-rank means.
    let localTokens = 0;
    for (const b of batches) for (let i = 0; i < b.lossMask.length; i++) localTokens += b.lossMask[i];
    const counts = await dp.allReduceExact(new Float64Array([localTokens, count * cfg.data.microBatchSize]));
    const norms = { globalTokens: counts[0], globalSeqs: counts[1] };
    if (norms.globalTokens <= 0) throw new TrainingError(`step ${step}: the global batch has no target tokens`);

    const L = model.nLayers;
    const N = model.moe.nExperts;
    // Per-microbatch scalars placed at their global index (exact when summed across ranks),
    // then routing counts per layer and expert, tokens routed per layer, FFN rows per layer.
    const scal = new Float64Array(6 * M + L * N + 2 * L);
    const acc = new TreeAccumulator();
    batches.forEach((b, i) => {
      const r = microbatchGrad(model, this.store, this.layout, b, norms, { biases: this.state.biases, zLossCoef: cfg.train.zLossCoef, moe: this.moe, gradOut: this.gradBuffer(i) });
      acc.push(r.grad);
      const m = first + i;
      scal[m] = r.lm;
      scal[M + m] = r.balance;
      scal[2 * M + m] = r.z;
      scal[3 * M + m] = r.hiddenRms;
      scal[4 * M + m] = r.hiddenMax;
      scal[5 * M + m] = b.batchSize * b.seqLen;
      r.moe.forEach((s, l) => {
        for (let e = 0; e < N; e++) scal[6 * M + l * N + e] += s.ffnCounts[e];
        scal[6 * M + L * N + l] += s.tokens;
        scal[6 * M + L * N + L + l] += s.ffnRows;
      });
    });
    const grad = await dp.treeAllReduce(acc.result(), first, count, M);
    const g = await dp.allReduceExact(scal);
    const inject = cfg.train.injectGradScale.find((x) => x.dataStep === dataStep);
    if (inject) for (let i = 0; i < grad.length; i++) grad[i] *= inject.scale;

    let lmLoss = 0;
    let balLoss = 0;
    let zLoss = 0;
    let hiddenRms = 0;
    let hiddenMax = 0;
    let stepTokens = 0;
    for (let m = 0; m < M; m++) {
      lmLoss += g[m];
      balLoss += g[M + m];
      zLoss += g[2 * M + m];
      hiddenRms += g[3 * M + m] / M;
      hiddenMax = Math.max(hiddenMax, g[4 * M + m]);
      stepTokens += g[5 * M + m];
    }
    const loss = lmLoss + balLoss + zLoss;

    // Global gradient norm in a fixed order (float64).
    let sq = 0;
    for (let i = 0; i < grad.length; i++) sq += grad[i] * grad[i];
    const gradNorm = Math.sqrt(sq);

    if (spikeCfg.enabled) {
      const reason = this.detector.check(loss, gradNorm);
      if (reason) return { kind: 'spike', event: this.rollback(step, dataStep, reason) };
    } else if (!Number.isFinite(loss)) {
      throw new TrainingError(`step ${step}: loss is ${loss}`, { hint: 'lower the learning rate or enable stability.spike' });
    }

    const clip = cfg.optim.clipNorm > 0 && gradNorm > cfg.optim.clipNorm ? cfg.optim.clipNorm / gradNorm : 1;
    const lr = lrAt(step, cfg.optim.lr, { ...cfg.optim.schedule, totalSteps: cfg.train.steps });
    const groupRms = gradRmsByGroup(grad, this.slices, clip);
    for (const [group, rms] of Object.entries(groupRms)) {
      if (rms > 0 && cfg.optim.eps * cfg.stability.epsWarnFactor > rms) {
        this.warnings.push(`step ${step + 1}: Adam eps ${cfg.optim.eps} is within ${cfg.stability.epsWarnFactor}x of the ${group} gradient RMS ${rms.toExponential(2)}`);
      }
    }
    adamwStep(this.state.params, grad, this.state.opt, this.slices, lr, cfg.optim, cfg.optim.lrScale, clip);
    this.store.assign(views(this.layout, this.state.params));

    // Aux-loss-free bias controller on globally summed routing counts.
    const ffnByLayer: number[] = [];
    const load: number[][] = [];
    const similarity: number[] = [];
    const E = N + model.moe.nZeroExperts;
    for (let l = 0; l < L; l++) {
      const cnt = g.subarray(6 * M + l * N, 6 * M + (l + 1) * N);
      const toks = g[6 * M + L * N + l];
      updateExpertBias(this.state.biases[l], cnt, toks, { nFfn: N, topK: model.moe.topK, targetFfn: targetFfnPerToken(model), mu: model.moe.biasUpdateRate });
      ffnByLayer.push(g[6 * M + L * N + L + l] / toks);
      load.push(Array.from(cnt));
      const o = this.layout.offsets.get(`model.layers.${l}.mlp.router.classifier.weight`)!;
      similarity.push(routerSimilarity(this.state.params.subarray(o, o + model.dModel * E), model.dModel, E));
    }

    this.state.step += 1;
    this.state.dataStep += 1;
    this.state.tokens += stepTokens;
    const metrics: StepMetrics = {
      step: this.state.step,
      data_step: dataStep,
      tokens: this.state.tokens,
      loss,
      lm_loss: lmLoss,
      balance_loss: balLoss,
      z_loss: zLoss,
      lr,
      grad_norm: gradNorm,
      grad_rms: gradNorm / Math.sqrt(grad.length),
      grad_rms_by_group: groupRms,
      adam_eps: cfg.optim.eps,
      tokens_per_s: 0,
      step_ms: 0,
      ffn_experts_per_token: ffnByLayer.reduce((a, b) => a + b, 0) / L,
      ffn_experts_per_token_by_layer: ffnByLayer,
      expert_load: load,
      router_similarity: similarity,
      hidden_rms: hiddenRms,
      hidden_max: hiddenMax,
      balance_alpha: model.moe.balanceAlpha,
      stage: batches[0]?.stage,
      fingerprint: stepFingerprint(loss, gradNorm),
    };
    const rgEvery = cfg.stability.routerRatioEvery;
    if (rgEvery > 0 && this.state.step % rgEvery === 0 && batches.length > 0) {
      const rg = routerGradRatio(model, this.store, batches[0], norms, this.state.biases);
      metrics.router_grad_ratio = rg;
      if (cfg.stability.routerRatioMax > 0 && Math.max(...rg) > cfg.stability.routerRatioMax) {
        this.state.balanceScale *= 0.5;
        this.warnings.push(`step ${this.state.step}: R_g ${Math.max(...rg).toFixed(3)} > ${cfg.stability.routerRatioMax}; balance alpha halved`);
      }
    }
    if (this.state.step % cfg.train.paramHashEvery === 0 || this.state.step === cfg.train.steps) metrics.param_hash = this.paramHash();
    const ms = Date.now() - t0;
    metrics.step_ms = ms;
    metrics.tokens_per_s = (stepTokens / Math.max(1, ms)) * 1000;
    return { kind: 'step', metrics };
  }

  private syncDetector(): TrainerState {
    this.state.detector = this.detector.save();
    return this.state;
  }

  /** Restores the last snapshot, marks the offending batch skipped, records the event. */
  private rollback(step: number, dataStep: number, reason: string): SpikeEvent {
    const max = this.cfg.stability.spike.maxRollbacks;
    if (this.state.spikes.length >= max) {
      throw new TrainingError(`step ${step + 1}: loss spike (${reason}) after ${max} rollbacks already; giving up`, { hint: 'lower the learning rate, inspect the data at this step, or raise stability.spike.maxRollbacks' });
    }
    const snap = this.snapshot!;
    const event: SpikeEvent = { step: step + 1, data_step: dataStep, reason, restored_to: snap.step };
    const skipped = [...this.state.skipped, dataStep];
    const spikes = [...this.state.spikes, event];
    this.state = cloneState(snap);
    this.state.skipped = skipped;
    this.state.spikes = spikes;
    this.detector.restore(this.state.detector);
    this.snapshot = cloneState(this.state);
    this.store.assign(views(this.layout, this.state.params));
    return event;
  }

  /** A deep copy of the full state (weights, optimizer, biases, detector window). */
  snapshotState(): TrainerState {
    return cloneState(this.syncDetector());
  }

  /** Restores a snapshot taken by snapshotState() (the snapshot itself stays untouched). */
  restoreState(s: TrainerState): void {
    this.state = cloneState(s);
    this.detector.restore(this.state.detector);
    this.store.assign(views(this.layout, this.state.params));
  }

  /** State for checkpoints, with the detector window included. */
  checkpointState(): TrainerState {
    return this.syncDetector();
  }

  dispose(): void {
    this.store.dispose();
  }
}

/** Ensures a run directory exists and returns its metrics writer. */
export function openRun(outDir: string): MetricsWriter {
  fs.mkdirSync(path.join(outDir, 'checkpoints'), { recursive: true });
  return new MetricsWriter(path.join(outDir, 'metrics.jsonl'));
}
