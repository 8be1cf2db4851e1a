/**
 * Learning-rate schedules as pure functions of the step (so resume needs no schedule state).
 * WSD: linear warmup, constant, then linear decay to minLr over the last `decaySteps`.
 * Cosine: linear warmup, then cosine to minLr at `totalSteps`.
 */
export interface ScheduleConfig {
  type: 'wsd' | 'cosine' | 'constant';
  warmupSteps: number;
  totalSteps: number;
  decaySteps: number;
  minLrRatio: number;
}

export function lrAt(step: number, peak: number, s: ScheduleConfig): number {
  // `step` counts completed optimizer steps; the update that produces step+1 uses lrAt(step).
  const t = step + 1;
  if (s.warmupSteps > 0 && t <= s.warmupSteps) return (peak * t) / s.warmupSteps;
  const minLr = peak * s.minLrRatio;
  if (s.type === 'constant') return peak;
  if (s.type === 'cosine') {
    const span = Math.max(1, s.totalSteps - s.warmupSteps);
    const p = Math.min(1, (t - s.warmupSteps) / span);
    return minLr + (peak - minLr) * 0.5 * (1 + Math.cos(Math.PI * p));
  }
  const decayStart = s.totalSteps - s.decaySteps;
  if (t <= decayStart) return peak;
  const p = Math.min(1, (t - decayStart) / Math.max(1, s.decaySteps));
  return peak + (minLr - peak) * p;
}

/**
 * The bias controller's update rate at a step: `mu` itself (`constant`), or `mu` scaled by the
 * LR schedule's lr(step)/peak (`lr`), so the expert biases settle as the LR decays.
 */
export function biasUpdateRateAt(mu: number, schedule: 'constant' | 'lr', lr: number, peakLr: number): number {
  return schedule === 'lr' ? mu * (lr / peakLr) : mu;
}
