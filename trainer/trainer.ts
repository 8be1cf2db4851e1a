/**
 * The training loop (DESIGN.md sections 2-4): per step, each rank runs its microbatches,
 * gradients are summed in the canonical microbatch tree (locally, then across ranks), clipped,
 * applied by AdamW on the host, and the expert biases are updated from globally summed counts.
 * Everything that feeds the weights is a pure function of (config, seed, data, step): reruns,
 * resumes and world sizes give the same bits.
 */
import * as path from 'path';
import * as fs from 'fs';
import { ModelConfig, targetFfnPerToken } from '../model/config';
import { flatLayout, flatten, FlatLayout, views } from '../model/flatParams';
import { initParams, paramHash, paramSpecs, ParamStore } from '../model/params';
import { initialBiases } from '../model/transformer';
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
import { ForwardOptions } from '../model/transformer';

export interface TrainerState {
  step: number;
  tokens: number;
  params: Float32Array;
  opt: AdamWState;
  biases: Float32Array[];
}

export interface TrainerOptions {
  dp?: DataParallel;
  /** Expert-parallel MoE override per layer (parallel/expertParallel). */
  moe?: ForwardOptions['moe'];
}

export class Trainer {
  readonly model: ModelConfig;
  readonly layout: FlatLayout;
  readonly store: ParamStore;
  readonly slices: ParamSlice[];
  readonly dp: DataParallel;
  state: TrainerState;

  constructor(readonly cfg: TrainConfig, readonly data: DataSource, opts: TrainerOptions = {}, init?: TrainerState) {
    this.model = cfg.model;
    this.dp = opts.dp ?? singleProcess;
    this.moe = opts.moe;
    this.layout = flatLayout(paramSpecs(cfg.model));
    const params = init?.params ?? flatten(this.layout, initParams(this.model, cfg.seed, cfg.optim.initScale));
    this.state = init ?? { step: 0, tokens: 0, params, opt: newAdamWState(this.layout.total), biases: initialBiases(this.model) };
    this.store = new ParamStore(this.layout.specs, views(this.layout, this.state.params));
    this.slices = this.layout.specs.map((s) => ({ offset: this.layout.offsets.get(s.name)!, size: s.shape.reduce((a, b) => a * b, 1), group: s.group }));
    if (this.cfg.data.microBatches % this.dp.worldSize !== 0) {
      throw new TrainingError(`data.microBatches (${this.cfg.data.microBatches}) must be divisible by the world size (${this.dp.worldSize})`);
    }
  }

  private readonly moe?: ForwardOptions['moe'];

  paramHash(): string {
    return paramHash(this.layout.specs, views(this.layout, this.state.params));
  }

  /** Runs one optimizer step and returns its metrics. */
  async step(): Promise<StepMetrics> {
    const t0 = Date.now();
    const { cfg, model, dp } = this;
    const step = this.state.step;
    const M = cfg.data.microBatches;
    const { first, count } = localMicrobatches(dp.rank, dp.worldSize, M);
    const batches = Array.from({ length: count }, (_, i) => this.data.microbatch(step, first + i));

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
      const r = microbatchGrad(model, this.store, this.layout, b, norms, { biases: this.state.biases, zLossCoef: cfg.train.zLossCoef, moe: this.moe });
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

    let loss = 0;
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
    loss = lmLoss + balLoss + zLoss;
    if (!Number.isFinite(loss)) throw new TrainingError(`step ${step}: loss is ${loss}`, { hint: 'lower the learning rate or enable loss-spike rollback' });

    // Global gradient norm in a fixed order (float64), then clipping folded into the update.
    let sq = 0;
    for (let i = 0; i < grad.length; i++) sq += grad[i] * grad[i];
    const gradNorm = Math.sqrt(sq);
    const clip = cfg.optim.clipNorm > 0 && gradNorm > cfg.optim.clipNorm ? cfg.optim.clipNorm / gradNorm : 1;
    const lr = lrAt(step, cfg.optim.lr, { ...cfg.optim.schedule, totalSteps: cfg.train.steps });
    adamwStep(this.state.params, grad, this.state.opt, this.slices, lr, cfg.optim, cfg.optim.lrScale, clip);
    this.store.assign(views(this.layout, this.state.params));

    // Aux-loss-free bias controller on globally summed routing counts.
    const ffnByLayer: number[] = [];
    const load: number[][] = [];
    for (let l = 0; l < L; l++) {
      const cnt = g.subarray(6 * M + l * N, 6 * M + (l + 1) * N);
      const toks = g[6 * M + L * N + l];
      updateExpertBias(this.state.biases[l], cnt, toks, { nFfn: N, topK: model.moe.topK, targetFfn: targetFfnPerToken(model), mu: model.moe.biasUpdateRate });
      ffnByLayer.push(g[6 * M + L * N + L + l] / toks);
      load.push(Array.from(cnt));
    }

    this.state.step += 1;
    this.state.tokens += stepTokens;
    const ms = Date.now() - t0;
    const metrics: StepMetrics = {
      step: this.state.step,
      tokens: this.state.tokens,
      loss,
      lm_loss: lmLoss,
      balance_loss: balLoss,
      z_loss: zLoss,
      lr,
      grad_norm: gradNorm,
      grad_rms: gradNorm / Math.sqrt(grad.length),
      tokens_per_s: (stepTokens / ms) * 1000,
      step_ms: ms,
      ffn_experts_per_token: ffnByLayer.reduce((a, b) => a + b, 0) / L,
      ffn_experts_per_token_by_layer: ffnByLayer,
      expert_load: load,
      hidden_rms: hiddenRms,
      hidden_max: hiddenMax,
      stage: batches[0]?.stage,
      fingerprint: stepFingerprint(loss, gradNorm),
    };
    if (this.state.step % cfg.train.paramHashEvery === 0 || this.state.step === cfg.train.steps) metrics.param_hash = this.paramHash();
    return metrics;
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
