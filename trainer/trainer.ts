/**
 * The training loop (DESIGN.md sections 2-4): per step, each rank runs its microbatches,
 * gradients are summed in the canonical microbatch tree (locally, then across ranks), checked
 * by the spike detector, clipped, applied by AdamW on the host (on webgpu: on the device, with
 * weights, gradients and moments resident there, trainer/deviceState.ts), and the expert biases
 * are updated from globally summed counts. Everything that feeds the weights is a pure function of
 * (config, seed, data, step): reruns, resumes and world sizes give the same bits.
 */
import * as path from 'path';
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { ModelConfig, targetFfnPerToken } from '../model/config';
import { flatLayout, flatten, FlatLayout, views } from '../model/flatParams';
import { initParams, paramHash, paramSpecs, ParamStore } from '../model/params';
import { initialBiases, ForwardOptions } from '../model/transformer';
import { updateExpertBias } from '../model/moe/biasController';
import { stepFingerprint } from '../core/hash';
import { ConfigError, TrainingError } from '../core/errors';
import { adamwStep, AdamWState, newAdamWState, ParamSlice } from './adamw';
import { TrainConfig } from './config';
import { DataSource } from './data';
import { Batch } from '../data/batch';
import { DataParallel, localMicrobatches, singleProcess } from './dataParallel';
import { MetricsWriter, StepMetrics } from './metrics';
import { microbatchGrad, microbatchGradOnDevice } from './microbatch';
import { DeviceSnapshot, DeviceState, residentRefusal } from './deviceState';
import { LossNorms } from './losses';
import { StepScalars } from './stepScalars';
import { biasUpdateRateAt, lrAt } from './schedule';
import { TreeAccumulator } from './treeSum';
import { addSquares, gradRmsByGroup, routerGradRatio, routerSimilarity, SpikeDetector } from './stability';
import { stepBoundary } from '../core/webgpu/stepBoundary';
import { chainedGradNorm, chainedGradRmsByGroup, Shard, shardAdamState, shardOf, slicesInShard } from './shardedOptimizer';
import { initParamShard, paramUnits, ShardedParams, Unit } from './fullShard';
import { fullShardGradients, UnitGradPool } from './fullShardStep';
import { checkStateBudget } from './stateBudget';
import { expertChainedGradNorm, expertChainedGradRms, ExpertShard, expertShardOf, gatherToRoot, hashToAll, heldFromGlobal, reduceExpertSharded } from './expertShard';

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
  /**
   * GPU-resident weights, gradients and Adam moments (trainer/deviceState.ts). Default: on
   * when the backend is webgpu and the optimizer is not sharded; false keeps the host path.
   */
  resident?: boolean;
  /**
   * With `moe` (expert parallelism) and `parallel.shard: none` on W > 1 ranks: each rank keeps
   * only its own experts' weights, gradients and Adam moments (trainer/expertShard.ts).
   */
  shardExperts?: boolean;
}

/** The reduced gradient of a step: a host array, or a device tensor on the resident path. */
type StepGrad = { host: Float32Array } | { device: tf.Tensor; groupRms: (scale: number) => Partial<Record<string, number>> };

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

/**
 * As cloneState, but sharing the weight and moment arrays: on the GPU-resident path they are
 * host mirrors refreshed only on demand, and the spike snapshot of the weights and moments
 * lives on the device (trainer/deviceState.ts), so copying them would move stale bytes.
 */
function cloneCounters(s: TrainerState): TrainerState {
  return {
    ...s,
    opt: { ...s.opt },
    biases: s.biases.map((b) => Float32Array.from(b)),
    skipped: [...s.skipped],
    spikes: [...s.spikes],
    detector: { loss: [...s.detector.loss], grad: [...s.detector.grad] },
  };
}

interface StepLosses {
  loss: number;
  lmLoss: number;
  balLoss: number;
  zLoss: number;
  hiddenRms: number;
  hiddenMax: number;
  stepTokens: number;
}

/** Loss parts summed over the global batch's microbatches in index order. */
function summariseLosses(g: StepScalars): StepLosses {
  const s: StepLosses = { loss: 0, lmLoss: 0, balLoss: 0, zLoss: 0, hiddenRms: 0, hiddenMax: 0, stepTokens: 0 };
  for (let m = 0; m < g.M; m++) {
    s.lmLoss += g.micro('lm', m);
    s.balLoss += g.micro('balance', m);
    s.zLoss += g.micro('z', m);
    s.hiddenRms += g.micro('hiddenRms', m) / g.M;
    s.hiddenMax = Math.max(s.hiddenMax, g.micro('hiddenMax', m));
    s.stepTokens += g.micro('tokens', m);
  }
  s.loss = s.lmLoss + s.balLoss + s.zLoss;
  return s;
}

/** Global gradient norm in a fixed order (float64). */
function globalGradNorm(grad: Float32Array): number {
  return Math.sqrt(addSquares(0, grad));
}

export class Trainer {
  readonly model: ModelConfig;
  readonly layout: FlatLayout;
  readonly store: ParamStore;
  readonly slices: ParamSlice[];
  readonly dp: DataParallel;
  /**
   * `parallel.shard: optimizer` or `full`: the elements whose Adam moments and update this rank
   * owns (null: all). Under `full`, `state.params` holds only these elements of the weights.
   */
  readonly shard: Shard | null;
  /** `parallel.shard: full`: the sharded weights, gathered unit by unit (null otherwise). */
  readonly full: { sp: ShardedParams; units: Unit[]; pool: UnitGradPool } | null;
  private readonly shardSlices: ParamSlice[] | null;
  /** Expert parallelism with sharded experts: this rank's layout and chain passes (null: every rank holds all). */
  readonly experts: ExpertShard | null;
  /** The layout of this rank's state vectors (`layout` unless the experts are sharded). */
  readonly held: FlatLayout;
  private readonly heldSlices: ParamSlice[];
  state: TrainerState;
  private readonly moe?: ForwardOptions['moe'];
  private readonly detector: SpikeDetector;
  private snapshot: TrainerState | null = null;
  /** Weights, moments and gradients on the device (webgpu), else null: the host path. */
  readonly resident: DeviceState | null;
  private deviceSnapshot: DeviceSnapshot | null = null;
  /** Warnings raised by the stability suite since the last call to takeWarnings(). */
  private warnings: string[] = [];

  constructor(readonly cfg: TrainConfig, readonly data: DataSource, opts: TrainerOptions = {}, init?: TrainerState) {
    this.model = cfg.model;
    this.dp = opts.dp ?? singleProcess;
    this.moe = opts.moe;
    this.layout = flatLayout(paramSpecs(cfg.model));
    checkStateBudget(cfg, this.layout, this.dp.worldSize);
    if (cfg.parallel.shard === 'full' && opts.moe) {
      throw new ConfigError('parallel.shard: full does not combine with expert parallelism yet', { where: '--expert-parallel', hint: 'use parallel.shard: optimizer with --expert-parallel, or drop --expert-parallel' });
    }
    const fullShard = cfg.parallel.shard === 'full' ? shardOf(this.layout.total, this.dp) : null;
    const shardExperts = !!opts.shardExperts && !!opts.moe && cfg.parallel.shard === 'none' && this.dp.worldSize > 1;
    this.experts = shardExperts ? expertShardOf(this.layout, this.model.moe.nExperts, this.dp) : null;
    this.held = this.experts?.held ?? this.layout;
    this.state = init ?? {
      step: 0,
      dataStep: 0,
      tokens: 0,
      params: fullShard ? initParamShard(this.model, this.layout, fullShard, cfg.seed, cfg.optim.initScale) : flatten(this.held, initParams(this.model, cfg.seed, cfg.optim.initScale, this.held.specs)),
      opt: newAdamWState(this.held.total),
      biases: initialBiases(this.model),
      skipped: [],
      spikes: [],
      detector: { loss: [], grad: [] },
      balanceScale: 1,
    };
    if (fullShard && this.state.params.length !== fullShard.hi - fullShard.lo) this.state.params = this.state.params.slice(fullShard.lo, fullShard.hi);
    if (this.experts) {
      const ex = this.experts;
      const o = this.state.opt;
      this.state = { ...this.state, params: heldFromGlobal(ex, this.layout, this.state.params), opt: { t: o.t, m: heldFromGlobal(ex, this.layout, o.m), v: heldFromGlobal(ex, this.layout, o.v) } };
    }
    // Under `full` no rank holds the whole model: the tfjs store stays empty.
    this.store = fullShard ? new ParamStore([], new Map()) : new ParamStore(this.held.specs, views(this.held, this.state.params));
    const slicesOf = (l: FlatLayout) => l.specs.map((s) => ({ offset: l.offsets.get(s.name)!, size: s.shape.reduce((a, b) => a * b, 1), group: s.group }));
    this.slices = slicesOf(this.layout);
    this.heldSlices = this.experts ? slicesOf(this.held) : this.slices;
    this.shard = cfg.parallel.shard === 'optimizer' ? shardOf(this.layout.total, this.dp) : fullShard;
    this.full = null;
    if (fullShard) {
      const units = paramUnits(this.layout);
      this.full = { sp: new ShardedParams(this.layout, this.dp, fullShard, () => this.state.params), units, pool: new UnitGradPool(Math.max(...units.map((u) => u.hi - u.lo))) };
    }
    this.shardSlices = this.shard ? slicesInShard(this.slices, this.shard) : null;
    if (this.shard) this.state.opt = shardAdamState(this.state.opt, this.layout.total, this.shard);
    const refusal = this.experts ? 'the experts are sharded over expert-parallel ranks (host path only)' : residentRefusal(this.layout.total, cfg.parallel.shard);
    const resident = opts.resident ?? refusal === null;
    if (resident && refusal) throw new TrainingError(`GPU-resident training cannot run: ${refusal}`, { hint: 'leave TrainerOptions.resident unset to take the host path' });
    this.resident = resident ? new DeviceState(this.layout, this.store, this.slices, this.state.opt) : null;
    this.detector = new SpikeDetector(cfg.stability.spike);
    this.detector.restore(this.state.detector);
    if (this.cfg.data.microBatches % this.dp.worldSize !== 0) {
      throw new TrainingError(`data.microBatches (${this.cfg.data.microBatches}) must be divisible by the world size (${this.dp.worldSize})`);
    }
  }

  /**
   * The run's param_hash. Under `parallel.shard: full` on W > 1 ranks the weights are spread
   * over the ranks: this returns the hash paramHashGathered() computed for the current weights.
   * With sharded experts use paramHashGathered.
   */
  paramHash(): string {
    if (this.experts) throw new TrainingError('paramHash: this rank holds only its own experts', { hint: 'call paramHashGathered on every rank' });
    if (!this.full || this.dp.worldSize === 1) {
      this.resident?.syncParams(this.state.params);
      return paramHash(this.layout.specs, views(this.layout, this.state.params));
    }
    if (this.hashCache?.version !== this.paramsVersion) throw new TrainingError('param_hash under parallel.shard: full is computed collectively (every rank calls paramHashGathered)');
    return this.hashCache.hash;
  }

  /**
   * param_hash on every rank; under `full` the weights are gathered one parameter at a time, with
   * sharded experts rank 0 gathers them: a collective that every rank must join.
   */
  async paramHashGathered(): Promise<string> {
    if (this.experts) {
      const full = await gatherToRoot(this.dp, this.experts, this.layout, this.state.params);
      return hashToAll(this.dp, full ? paramHash(this.layout.specs, views(this.layout, full)) : null);
    }
    if (!this.full || this.dp.worldSize === 1) return this.paramHash();
    if (this.hashCache?.version !== this.paramsVersion) this.hashCache = { version: this.paramsVersion, hash: await this.full.sp.paramHash() };
    return this.hashCache.hash;
  }

  /** Bumped whenever the weights change (param_hash cache under `full`). */
  private paramsVersion = 0;
  private hashCache: { version: number; hash: string } | null = null;

  takeWarnings(): string[] {
    const w = this.warnings;
    this.warnings = [];
    return w;
  }

  /**
   * Host gradient buffers, reused from step to step: nothing holds a step's gradients once the
   * step returns (the optimizer update has been applied), so all are free when a step starts.
   * Within a step the tree accumulator hands back each buffer it has added in, so a rank with
   * k microbatches holds about log2(k) + 2 full-size buffers, not k.
   */
  private readonly gradBuffers: Float32Array[] = [];
  private freeGrads: Float32Array[] = [];
  private takeGradBuffer(): Float32Array {
    const b = this.freeGrads.pop();
    if (b) return b;
    const fresh = new Float32Array(this.held.total);
    this.gradBuffers.push(fresh);
    return fresh;
  }

  /** The model config with the balance alpha scaled by the R_g controller. */
  private effectiveModel(): ModelConfig {
    if (this.state.balanceScale === 1) return this.model;
    return { ...this.model, moe: { ...this.model.moe, balanceAlpha: this.model.moe.balanceAlpha * this.state.balanceScale } };
  }

  /**
   * Runs one optimizer step, or reports a spike after rolling back to the last snapshot.
   * Phases: begin (snapshot, data cursor, this rank's microbatches), global loss normalisers,
   * microbatch forward/backward, reduce (gradient tree + exact scalars), spike check, optimizer,
   * controllers (expert bias), metrics (with the R_g balance controller).
   */
  async step(): Promise<StepOutcome> {
    await stepBoundary();
    const t0 = Date.now();
    const model = this.effectiveModel();
    const { step, dataStep, first, count, batches } = this.beginStep();
    const norms = await this.globalNorms(batches, count);
    const { grad, scalars, gradNorm } = this.resident ? await this.reduceOnDevice(this.resident, model, batches, norms, first, count, dataStep) : await this.reduceOnHost(model, batches, norms, first, count, dataStep);
    const losses = summariseLosses(scalars);
    let opt: { lr: number; groupRms: Record<string, number> };
    try {
      if (this.cfg.stability.spike.enabled) {
        const reason = this.detector.check(losses.loss, gradNorm);
        if (reason) return { kind: 'spike', event: this.rollback(step, dataStep, reason) };
      } else if (!Number.isFinite(losses.loss)) {
        throw new TrainingError(`step ${step}: loss is ${losses.loss}`, { hint: 'lower the learning rate or enable stability.spike' });
      }
      opt = await this.optimize(grad, gradNorm, step);
    } finally {
      if ('device' in grad) grad.device.dispose();
    }
    this.updateBiases(model, scalars, opt.lr);
    this.state.step += 1;
    this.state.dataStep += 1;
    this.state.tokens += losses.stepTokens;
    const metrics = this.stepMetrics(model, dataStep, losses, scalars, gradNorm, opt, batches, this.resident ? [] : await this.routerWeights(model));
    this.balanceController(model, batches, norms, metrics);
    if (this.state.step % this.cfg.train.paramHashEvery === 0 || this.state.step === this.cfg.train.steps) metrics.param_hash = await this.paramHashGathered();
    const ms = Date.now() - t0;
    metrics.step_ms = ms;
    metrics.tokens_per_s = (losses.stepTokens / Math.max(1, ms)) * 1000;
    return { kind: 'step', metrics };
  }

  /** Host path: microbatch gradients read back, the tree and the norm on the host. */
  private async reduceOnHost(model: ModelConfig, batches: Batch[], norms: LossNorms, first: number, count: number, dataStep: number): Promise<{ grad: StepGrad; scalars: StepScalars; gradNorm: number }> {
    const { grad, scalars } = this.full
      ? await this.fullShardReduce(model, batches, norms, first, dataStep)
      : await this.reduce(this.forwardBackward(model, batches, norms, first), first, count, dataStep);
    const gradNorm = this.shard ? await chainedGradNorm(this.dp, grad) : this.experts ? await expertChainedGradNorm(this.dp, this.experts, grad) : globalGradNorm(grad);
    return { grad: { host: grad }, scalars, gradNorm };
  }

  /**
   * GPU-resident path: microbatch gradients summed in the canonical tree on the device; with
   * W > 1 the local subtree crosses the host for the ranks' exchange (the only full read).
   */
  private async reduceOnDevice(dev: DeviceState, model: ModelConfig, batches: Batch[], norms: LossNorms, first: number, count: number, dataStep: number): Promise<{ grad: StepGrad; scalars: StepScalars; gradNorm: number }> {
    const M = this.cfg.data.microBatches;
    const local = new StepScalars(M, model.nLayers, model.moe.nExperts);
    const acc = dev.tree();
    batches.forEach((b, i) => {
      const r = microbatchGradOnDevice(model, this.store, this.layout, b, norms, { biases: this.state.biases, zLossCoef: this.cfg.train.zLossCoef, moe: this.moe });
      acc.push(r.grad);
      local.setMicro(first + i, { lm: r.lm, balance: r.balance, z: r.z, hiddenRms: r.hiddenRms, hiddenMax: r.hiddenMax, tokens: b.batchSize * b.seqLen });
      local.addRouting(r.moe);
    });
    let grad = acc.result();
    if (this.dp.worldSize > 1) {
      const host = await this.dp.treeAllReduceSubtree(dev.download(grad), first, count, M);
      grad.dispose();
      grad = dev.upload(host);
    }
    // Host bytes only (stateBytes): with W = 1 the reduced gradient never leaves the device.
    this.reducedGradLength = this.dp.worldSize > 1 ? this.layout.total : 0;
    const scalars = local.over(await this.dp.allReduceExact(local.data));
    const inject = this.cfg.train.injectGradScale.find((x) => x.dataStep === dataStep);
    if (inject) {
      const scaled = tf.tidy(() => tf.mul(grad, tf.scalar(inject.scale)));
      grad.dispose();
      grad = scaled;
    }
    const sq = dev.squares(grad);
    return { grad: { device: grad, groupRms: sq.groupRms }, scalars, gradNorm: sq.norm };
  }

  /** Spike snapshot, skipped data steps, and this rank's block of microbatches. */
  private beginStep(): { step: number; dataStep: number; first: number; count: number; batches: Batch[] } {
    const spikeCfg = this.cfg.stability.spike;
    if (spikeCfg.enabled && (this.snapshot === null || this.state.step % spikeCfg.snapshotEvery === 0)) {
      if (this.snapshot?.step !== this.state.step) {
        if (this.resident) {
          this.snapshot = cloneCounters(this.syncDetector());
          DeviceState.disposeSnapshot(this.deviceSnapshot);
          this.deviceSnapshot = this.resident.snapshot();
        } else {
          this.snapshot = cloneState(this.syncDetector(), this.snapshot);
        }
      }
    }
    while (this.state.skipped.includes(this.state.dataStep)) this.state.dataStep++;
    const dataStep = this.state.dataStep;
    const { first, count } = localMicrobatches(this.dp.rank, this.dp.worldSize, this.cfg.data.microBatches);
    const batches = Array.from({ length: count }, (_, i) => this.data.microbatch(dataStep, first + i));
    return { step: this.state.step, dataStep, first, count, batches };
  }

  /** Global normalisers first: losses are divided by global counts, never per-rank means. */
  private async globalNorms(batches: Batch[], count: number): Promise<LossNorms> {
    let localTokens = 0;
    for (const b of batches) for (let i = 0; i < b.lossMask.length; i++) localTokens += b.lossMask[i];
    const counts = await this.dp.allReduceExact(new Float64Array([localTokens, count * this.cfg.data.microBatchSize]));
    const norms = { globalTokens: counts[0], globalSeqs: counts[1] };
    if (norms.globalTokens <= 0) throw new TrainingError(`step ${this.state.step}: the global batch has no target tokens`);
    return norms;
  }

  /** Forward + backward of this rank's microbatches: their gradient subtree and packed scalars. */
  private forwardBackward(model: ModelConfig, batches: Batch[], norms: LossNorms, first: number): { acc: TreeAccumulator; scalars: StepScalars } {
    const scalars = new StepScalars(this.cfg.data.microBatches, model.nLayers, model.moe.nExperts);
    this.freeGrads = [...this.gradBuffers];
    const acc = new TreeAccumulator((buf) => this.freeGrads.push(buf));
    batches.forEach((b, i) => {
      const r = microbatchGrad(model, this.store, this.held, b, norms, { biases: this.state.biases, zLossCoef: this.cfg.train.zLossCoef, moe: this.moe, gradOut: this.takeGradBuffer() });
      acc.push(r.grad);
      scalars.setMicro(first + i, { lm: r.lm, balance: r.balance, z: r.z, hiddenRms: r.hiddenRms, hiddenMax: r.hiddenMax, tokens: b.batchSize * b.seqLen });
      scalars.addRouting(r.moe);
    });
    return { acc, scalars };
  }

  /**
   * Gradient in the canonical tree across ranks (only this rank's shard of it under
   * `parallel.shard: optimizer`), scalars summed exactly; test-only gradient injection.
   */
  private async reduce(local: { acc: TreeAccumulator; scalars: StepScalars }, first: number, count: number, dataStep: number): Promise<{ grad: Float32Array; scalars: StepScalars }> {
    const M = this.cfg.data.microBatches;
    const sub = local.acc.result();
    const grad = this.shard
      ? await this.dp.treeReduceScatterSubtree(sub, first, count, M)
      : this.experts
        ? await reduceExpertSharded(this.dp, this.experts, sub, first, count, M)
        : await this.dp.treeAllReduceSubtree(sub, first, count, M);
    return this.finishReduce(grad, local.scalars, dataStep);
  }

  private async finishReduce(grad: Float32Array, local: StepScalars, dataStep: number): Promise<{ grad: Float32Array; scalars: StepScalars }> {
    this.reducedGradLength = grad.length;
    const scalars = local.over(await this.dp.allReduceExact(local.data));
    const inject = this.cfg.train.injectGradScale.find((x) => x.dataStep === dataStep);
    if (inject) for (let i = 0; i < grad.length; i++) grad[i] *= inject.scale;
    return { grad, scalars };
  }

  /** This rank's shard of the reduced gradient under `parallel.shard: full` (reused from step to step). */
  private fullGrad: Float32Array | null = null;

  /** `parallel.shard: full`: forward/backward unit by unit (trainer/fullShardStep.ts), then as reduce(). */
  private async fullShardReduce(model: ModelConfig, batches: Batch[], norms: LossNorms, first: number, dataStep: number): Promise<{ grad: Float32Array; scalars: StepScalars }> {
    const { sp, units, pool } = this.full!;
    this.fullGrad ??= new Float32Array(sp.shard.hi - sp.shard.lo);
    const r = await fullShardGradients({
      c: model, sp, units, pool, batches, norms, first, M: this.cfg.data.microBatches, biases: this.state.biases, zLossCoef: this.cfg.train.zLossCoef, gradOut: this.fullGrad,
    });
    const scalars = new StepScalars(this.cfg.data.microBatches, model.nLayers, model.moe.nExperts);
    r.micro.forEach((m, i) => {
      const b = batches[i];
      scalars.setMicro(first + i, { lm: m.lm, balance: m.balance, z: m.z, hiddenRms: m.hiddenRms, hiddenMax: m.hiddenMax, tokens: b.batchSize * b.seqLen });
      scalars.addRouting(m.moe);
    });
    return this.finishReduce(r.grad, scalars, dataStep);
  }

  /** Each layer's router weights (gathered under `full`, views otherwise), for the similarity metric. */
  private async routerWeights(model: ModelConfig): Promise<Float32Array[]> {
    const E = model.moe.nExperts + model.moe.nZeroExperts;
    const out: Float32Array[] = [];
    for (let l = 0; l < model.nLayers; l++) {
      // Router weights are replicated (never expert-sharded): `held` has them at its own offsets.
      const o = (this.full ? this.layout : this.held).offsets.get(`model.layers.${l}.mlp.router.classifier.weight`)!;
      out.push(this.full ? await this.full.sp.gather(o, o + model.dModel * E) : this.state.params.subarray(o, o + model.dModel * E));
    }
    return out;
  }

  /**
   * Clip factor, learning rate, eps warnings, AdamW on the host, weights back to the store.
   * Sharded: `grad` is this rank's shard; the update runs on the shard and the updated
   * shards are all-gathered into every rank's full weights.
   */
  private async optimize(stepGrad: StepGrad, gradNorm: number, step: number): Promise<{ lr: number; groupRms: Record<string, number> }> {
    const { cfg } = this;
    const clip = cfg.optim.clipNorm > 0 && gradNorm > cfg.optim.clipNorm ? cfg.optim.clipNorm / gradNorm : 1;
    const lr = lrAt(step, cfg.optim.lr, { ...cfg.optim.schedule, totalSteps: cfg.train.steps });
    if ('device' in stepGrad) {
      // GPU-resident: per-group RMS from the block partials, AdamW as device kernels.
      const groupRms = stepGrad.groupRms(clip) as Record<string, number>;
      this.warnEps(groupRms, step);
      this.resident!.adamw(stepGrad.device, this.state.opt, lr, cfg.optim, cfg.optim.lrScale, clip);
      return { lr, groupRms };
    }
    const grad = stepGrad.host;
    const groupRms = this.shard
      ? await chainedGradRmsByGroup(this.dp, grad, this.slices, this.shardSlices!, clip)
      : this.experts
        ? await expertChainedGradRms(this.dp, this.experts, grad, this.slices, clip)
        : gradRmsByGroup(grad, this.slices, clip);
    this.warnEps(groupRms, step);
    this.paramsVersion++;
    if (this.full) {
      // The weights are this rank's shard: nothing to gather, nothing in the tfjs store.
      adamwStep(this.state.params, grad, this.state.opt, this.shardSlices!, lr, cfg.optim, cfg.optim.lrScale, clip);
      return { lr, groupRms };
    }
    if (this.shard) {
      const mine = this.state.params.subarray(this.shard.lo, this.shard.hi);
      adamwStep(mine, grad, this.state.opt, this.shardSlices!, lr, cfg.optim, cfg.optim.lrScale, clip);
      this.state.params.set(await this.dp.allGather(mine));
    } else {
      adamwStep(this.state.params, grad, this.state.opt, this.heldSlices, lr, cfg.optim, cfg.optim.lrScale, clip);
    }
    this.store.assign(views(this.held, this.state.params));
    return { lr, groupRms };
  }

  /** The stability suite's eps check: Adam eps close to a group's gradient RMS. */
  private warnEps(groupRms: Record<string, number>, step: number): void {
    const { cfg } = this;
    for (const [group, rms] of Object.entries(groupRms)) {
      if (rms > 0 && cfg.optim.eps * cfg.stability.epsWarnFactor > rms) {
        this.warnings.push(`step ${step + 1}: Adam eps ${cfg.optim.eps} is within ${cfg.stability.epsWarnFactor}x of the ${group} gradient RMS ${rms.toExponential(2)}`);
      }
    }
  }

  /** Aux-loss-free bias controller on globally summed routing counts. */
  private updateBiases(model: ModelConfig, g: StepScalars, lr: number): void {
    const N = model.moe.nExperts;
    const mu = biasUpdateRateAt(model.moe.biasUpdateRate, model.moe.biasUpdateSchedule, lr, this.cfg.optim.lr);
    for (let l = 0; l < model.nLayers; l++) {
      updateExpertBias(this.state.biases[l], g.expertCounts(l), g.layerTokens(l), { nFfn: N, topK: model.moe.topK, targetFfn: targetFfnPerToken(model), mu });
    }
  }

  private stepMetrics(
    model: ModelConfig, dataStep: number, losses: StepLosses, g: StepScalars, gradNorm: number,
    opt: { lr: number; groupRms: Record<string, number> }, batches: Batch[], router: Float32Array[],
  ): StepMetrics {
    const L = model.nLayers;
    const E = model.moe.nExperts + model.moe.nZeroExperts;
    const ffnByLayer: number[] = [];
    const load: number[][] = [];
    const routers = Array.from({ length: L }, (_, l) => `model.layers.${l}.mlp.router.classifier.weight`);
    const similarity: number[] = this.resident ? this.resident.routerSimilarity(routers) : [];
    for (let l = 0; l < L; l++) {
      ffnByLayer.push(g.layerFfnRows(l) / g.layerTokens(l));
      load.push(Array.from(g.expertCounts(l)));
      if (this.resident) continue;
      similarity.push(routerSimilarity(router[l], model.dModel, E));
    }
    return {
      step: this.state.step,
      data_step: dataStep,
      tokens: this.state.tokens,
      loss: losses.loss,
      lm_loss: losses.lmLoss,
      balance_loss: losses.balLoss,
      z_loss: losses.zLoss,
      lr: opt.lr,
      grad_norm: gradNorm,
      grad_rms: gradNorm / Math.sqrt(this.layout.total),
      grad_rms_by_group: opt.groupRms,
      adam_eps: this.cfg.optim.eps,
      tokens_per_s: 0,
      step_ms: 0,
      ffn_experts_per_token: ffnByLayer.reduce((a, b) => a + b, 0) / L,
      ffn_experts_per_token_by_layer: ffnByLayer,
      expert_load: load,
      router_similarity: similarity,
      hidden_rms: losses.hiddenRms,
      hidden_max: losses.hiddenMax,
      balance_alpha: model.moe.balanceAlpha,
      stage: batches[0]?.stage,
      fingerprint: stepFingerprint(losses.loss, gradNorm),
    };
  }

  /** Every routerRatioEvery steps: R_g into the metrics, and the balance alpha halved when it is too high. */
  private balanceController(model: ModelConfig, batches: Batch[], norms: LossNorms, metrics: StepMetrics): void {
    const { stability } = this.cfg;
    if (!(stability.routerRatioEvery > 0 && this.state.step % stability.routerRatioEvery === 0 && batches.length > 0)) return;
    // Sharded experts: the ratio's passes run the expert-parallel MoE (every rank joins them).
    const rg = routerGradRatio(model, this.store, batches[0], norms, this.state.biases, this.experts ? this.moe : undefined);
    metrics.router_grad_ratio = rg;
    if (stability.routerRatioMax > 0 && Math.max(...rg) > stability.routerRatioMax) {
      this.state.balanceScale *= 0.5;
      this.warnings.push(`step ${this.state.step}: R_g ${Math.max(...rg).toFixed(3)} > ${stability.routerRatioMax}; balance alpha halved`);
    }
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
    const clone = this.resident ? cloneCounters : cloneState;
    this.state = clone(snap);
    this.state.skipped = skipped;
    this.state.spikes = spikes;
    this.detector.restore(this.state.detector);
    this.snapshot = clone(this.state);
    if (this.resident) this.resident.restore(this.deviceSnapshot!);
    else this.store.assign(views(this.held, this.state.params));
    this.paramsVersion++;
    return event;
  }

  /** Elements of the reduced gradient this rank received in the last step (all, or its shard). */
  private reducedGradLength = 0;

  /**
   * Bytes this rank holds in host Float32Arrays (memory figures): the flat weights, the
   * per-microbatch gradient buffers, the reduced gradient and the Adam moments (and how much of
   * the weights are FFN experts). The weights' tfjs variables (ParamStore) are one more copy
   * of `params`, not counted here. On the GPU-resident path `params` and the moments are host
   * mirrors (the live copies are on the device) and no gradient buffer is held on the host
   * with W = 1. Under `parallel.shard: full`: `params` is this rank's shard, `gradBuffers` the
   * unit-sized buffers, `gathered` the peak of one gathered unit (host copy plus its tensors);
   * the store is empty.
   */
  stateBytes(): { params: number; gradBuffers: number; reducedGrad: number; optimizer: number; gathered: number; expertParams: number } {
    return {
      params: this.state.params.byteLength,
      // The FFN experts' part of `params`: all experts, or this rank's own when they are sharded.
      expertParams: this.held.specs.reduce((n, s) => n + (s.expert ? 4 * s.shape.reduce((a, b) => a * b, 1) : 0), 0),
      gradBuffers: this.full ? this.full.pool.bytes : this.gradBuffers.reduce((n, b) => n + (b ? b.byteLength : 0), 0),
      gathered: this.full ? this.full.sp.stats.peakBytes : 0,
      reducedGrad: this.reducedGradLength * 4,
      optimizer: this.state.opt.m.byteLength + this.state.opt.v.byteLength,
    };
  }

  /** A deep copy of the full state (weights, optimizer, biases, detector window). */
  snapshotState(): TrainerState {
    return cloneState(this.syncHost());
  }

  /** Restores a snapshot taken by snapshotState() (the snapshot itself stays untouched). */
  restoreState(s: TrainerState): void {
    this.state = cloneState(s);
    this.detector.restore(this.state.detector);
    if (this.resident) this.resident.load(this.state.params, this.state.opt);
    else this.store.assign(views(this.held, this.state.params));
    this.paramsVersion++;
  }

  /** State for checkpoints, with the detector window included. */
  checkpointState(): TrainerState {
    return this.syncHost();
  }

  /** The detector window, and on the resident path the weights and moments read back. */
  private syncHost(): TrainerState {
    this.resident?.syncParams(this.state.params);
    this.resident?.syncMoments(this.state.opt);
    return this.syncDetector();
  }

  /**
   * As checkpointState, with full-length Adam moments: under `parallel.shard: optimizer` every
   * rank must call it (the moments' shards are all-gathered); otherwise it is checkpointState.
   */
  async checkpointStateGathered(): Promise<TrainerState> {
    const s = this.syncHost();
    if (this.experts) throw new TrainingError('checkpointStateGathered: the experts are sharded', { hint: 'call checkpointStateAtRoot on every rank' });
    if (!this.shard) return s;
    const m = await this.dp.allGather(s.opt.m);
    const v = await this.dp.allGather(s.opt.v);
    const params = this.full ? (await this.full.sp.gatherAll(this.full.units, true))! : s.params;
    return { ...s, params, opt: { t: s.opt.t, m, v } };
  }

  /**
   * The full weights for a checkpoint writer (`keep`) under `parallel.shard: full`, gathered unit
   * by unit (every rank calls it; the others get null); `state.params` otherwise.
   */
  async gatheredParams(keep: boolean): Promise<Float32Array | null> {
    if (!this.full) return this.state.params;
    return this.full.sp.gatherAll(this.full.units, keep);
  }

  /**
   * With sharded experts: the full state (every expert's weights and moments, global layout) on
   * rank 0, null elsewhere; every rank must call it. Otherwise checkpointState on every rank.
   */
  async checkpointStateAtRoot(): Promise<TrainerState | null> {
    const s = this.syncDetector();
    if (!this.experts) return s;
    const g = (x: Float32Array) => gatherToRoot(this.dp, this.experts!, this.layout, x);
    const params = await g(s.params);
    const m = await g(s.opt.m);
    const v = await g(s.opt.v);
    return params && m && v ? { ...s, params, opt: { t: s.opt.t, m, v } } : null;
  }

  dispose(): void {
    DeviceState.disposeSnapshot(this.deviceSnapshot);
    this.deviceSnapshot = null;
    this.resident?.dispose();
    this.store.dispose();
  }
}

/** Ensures a run directory exists and returns its metrics writer. */
export function openRun(outDir: string): MetricsWriter {
  fs.mkdirSync(path.join(outDir, 'checkpoints'), { recursive: true });
  return new MetricsWriter(path.join(outDir, 'metrics.jsonl'));
}
