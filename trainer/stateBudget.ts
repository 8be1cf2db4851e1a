/**
 * The per-rank training-state budget (`parallel.maxStateBytes`, docs/ARCHITECTURE.md "Sharded
 * training state"): the bytes of weights, gradient buffers, reduced gradient and Adam moments
 * one rank holds under its `parallel.shard` mode, computed from the config before anything is
 * allocated or written. A run whose estimate exceeds the limit is refused at start-up with one
 * line (exit 2) naming the mode that would fit. Activations and the tfjs working set of one
 * layer are not counted; `train --memory-report` measures what a run really held.
 */
import { ConfigError } from '../core/errors';
import { FlatLayout } from '../model/flatParams';
import { shardRange } from '../parallel/tree';
import { TrainConfig } from './config';
import { paramUnits } from './fullShard';
import { ShardMode } from './shardedOptimizer';

export interface StateEstimate {
  /** Host weights plus their tfjs copy (none, optimizer) or the shard plus one gathered unit and its tensors (full). */
  params: number;
  /** Gradient buffers live at once while the rank's microbatches are summed, plus the reduced gradient. */
  grads: number;
  /** Adam moments m and v. */
  optimizer: number;
  total: number;
}

/** Buffers the streaming canonical tree holds at once for k leaves (trainer/treeSum.ts). */
export function treeBuffers(k: number): number {
  let peak = 0;
  const stack: number[] = [];
  for (let i = 0; i < k; i++) {
    peak = Math.max(peak, stack.length + 1);
    let size = 1;
    while (stack.length > 0 && stack[stack.length - 1] === size) {
      stack.pop();
      size *= 2;
    }
    stack.push(size);
  }
  return peak;
}

export function estimateStateBytes(layout: FlatLayout, mode: ShardMode, worldSize: number, microBatches: number): StateEstimate {
  const n = layout.total;
  const [lo, hi] = shardRange(n, worldSize, 0);
  const shard = hi - lo;
  const k = Math.max(1, Math.floor(microBatches / worldSize));
  let params: number;
  let grads: number;
  let optimizer: number;
  if (mode === 'full') {
    const unit = Math.max(...paramUnits(layout).map((u) => u.hi - u.lo));
    params = 4 * shard + 2 * 4 * unit;
    grads = treeBuffers(k) * 4 * unit + 4 * shard;
    optimizer = 8 * shard;
  } else {
    params = 2 * 4 * n;
    grads = treeBuffers(k) * 4 * n + 4 * (mode === 'optimizer' ? shard : n);
    optimizer = 8 * (mode === 'optimizer' ? shard : n);
  }
  return { params, grads, optimizer, total: params + grads + optimizer };
}

const mb = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;

/** Refuses a run whose per-rank state under its mode exceeds parallel.maxStateBytes. */
export function checkStateBudget(cfg: TrainConfig, layout: FlatLayout, worldSize: number): void {
  const limit = cfg.parallel.maxStateBytes;
  if (!(limit > 0)) return;
  const mode = cfg.parallel.shard;
  const e = estimateStateBytes(layout, mode, worldSize, cfg.data.microBatches);
  if (e.total <= limit) return;
  const fits = (['optimizer', 'full'] as const).filter((m) => m !== mode && estimateStateBytes(layout, m, worldSize, cfg.data.microBatches).total <= limit);
  const hint = fits.length > 0
    ? `use parallel.shard: ${fits[fits.length - 1]} on these ${worldSize} ranks, or raise the limit`
    : `use parallel.shard: full on more ranks, each holding about 1/W of it, or raise the limit`;
  throw new ConfigError(
    `one rank would hold ${mb(e.total)} of training state (weights ${mb(e.params)}, gradients ${mb(e.grads)}, Adam moments ${mb(e.optimizer)}) under parallel.shard: ${mode} on ${worldSize} rank${worldSize > 1 ? 's' : ''}, over the limit of ${mb(limit)}`,
    { where: 'parallel.maxStateBytes', hint },
  );
}
