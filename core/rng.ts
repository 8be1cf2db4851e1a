/**
 * Named, seeded random streams (DESIGN.md section 4): every draw comes from a stream derived
 * from (seed, purpose, indices), never from global state or wall-clock time. A stream's state
 * can be saved into a checkpoint and restored exactly.
 */
import { createHash } from 'crypto';
import seedrandom from 'seedrandom';

export type StreamState = { key: string; state: object };

/** Deterministic string key for (seed, purpose, indices). */
export function streamKey(seed: number, purpose: string, ...indices: number[]): string {
  return createHash('sha256').update(`moecat|${seed}|${purpose}|${indices.join(',')}`).digest('hex');
}

/** A reproducible random stream (alea). Draws are float64 in [0, 1). */
export class RngStream {
  readonly key: string;
  private prng: { (): number; state(): object };

  constructor(key: string, state?: object) {
    this.key = key;
    // seedrandom's alea supports exporting and importing its full state.
    this.prng = (state
      ? seedrandom.alea('', { state: state as seedrandom.State.Alea })
      : seedrandom.alea(key, { state: true }));
  }

  static of(seed: number, purpose: string, ...indices: number[]): RngStream {
    return new RngStream(streamKey(seed, purpose, ...indices));
  }

  static restore(s: StreamState): RngStream {
    return new RngStream(s.key, s.state);
  }

  save(): StreamState {
    return { key: this.key, state: this.prng.state() };
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.prng();
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.prng() * n);
  }

  /** Standard normal via Box-Muller (one draw per call, deterministic). */
  normal(): number {
    let u = 0;
    while (u === 0) u = this.prng();
    const v = this.prng();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }

  /** Fills a Float32Array with N(0, std^2) draws. */
  normalArray(n: number, std = 1): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.normal() * std;
    return out;
  }

  /** In-place Fisher-Yates shuffle. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = a[i]; a[i] = a[j]; a[j] = t;
    }
    return a;
  }

  /** Samples an index from unnormalised non-negative weights. */
  categorical(weights: ArrayLike<number>): number {
    let total = 0;
    for (let i = 0; i < weights.length; i++) total += weights[i];
    let r = this.prng() * total;
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i];
      if (r < 0) return i;
    }
    return weights.length - 1;
  }
}
