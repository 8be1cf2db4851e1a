/**
 * metrics.jsonl: one JSON object per step. On resume the file is cut back to the resumed step
 * so a resumed run's file equals an uninterrupted run's (fingerprints included).
 */
import * as fs from 'fs';

export interface StepMetrics {
  step: number;
  tokens: number;
  loss: number;
  lm_loss: number;
  balance_loss: number;
  z_loss: number;
  lr: number;
  grad_norm: number;
  grad_rms: number;
  tokens_per_s: number;
  step_ms: number;
  ffn_experts_per_token: number;
  ffn_experts_per_token_by_layer: number[];
  expert_load: number[][];
  hidden_rms: number;
  hidden_max: number;
  stage?: string;
  fingerprint: string;
  param_hash?: string;
  [k: string]: unknown;
}

export class MetricsWriter {
  constructor(readonly file: string) {}

  /** Drops lines (steps and events) after `step` (resume, rollback); returns how many were kept. */
  truncateAfter(step: number): number {
    if (!fs.existsSync(this.file)) return 0;
    const keep = fs.readFileSync(this.file, 'utf8').split('\n').filter((l) => {
      if (!l.trim()) return false;
      try {
        return (JSON.parse(l) as { step: number }).step <= step;
      } catch {
        return false;
      }
    });
    fs.writeFileSync(this.file, keep.map((l) => l + '\n').join(''));
    return keep.length;
  }

  /** Appends one step's metrics, or an event line (`event` names it, e.g. a loss spike's rollback). */
  append(m: StepMetrics | { event: string; step: number }): void {
    fs.appendFileSync(this.file, JSON.stringify(m) + '\n');
  }
}

export function readMetrics(file: string): StepMetrics[] {
  return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as StepMetrics);
}
