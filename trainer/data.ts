/**
 * What the trainer reads: microbatches as a pure function of (step, microbatch index), so a
 * rank reads only its share and resume needs only the step (DESIGN.md sections 4 and 7).
 */
import { RngStream } from '../core/rng';
import { Batch } from '../data/batch';

export interface DataSource {
  microbatch(step: number, mb: number): Batch;
  /** Serializable loader state for state.json. */
  state(): unknown;
  /** The tokenizer that produced the tokens (copied into checkpoints), if any. */
  tokenizerJson(): string | null;
  describe(): string;
}

/**
 * A synthetic first-order Markov source over the vocabulary: each token has 4 likely
 * successors, so a model that learns the table can reach ~ln 4 nats. For tests and benchmarks.
 */
export class MarkovSource implements DataSource {
  private readonly next: Int32Array;
  constructor(private readonly seed: number, private readonly vocab: number, private readonly B: number, private readonly S: number) {
    const rng = RngStream.of(seed, 'synthetic:table');
    this.next = new Int32Array(vocab * 4);
    for (let i = 0; i < this.next.length; i++) this.next[i] = rng.int(vocab);
  }

  microbatch(step: number, mb: number): Batch {
    const { B, S } = this;
    const inputs = new Int32Array(B * S);
    const targets = new Int32Array(B * S);
    for (let b = 0; b < B; b++) {
      const rng = RngStream.of(this.seed, 'synthetic:rows', step, mb, b);
      let tok = rng.int(this.vocab);
      for (let s = 0; s <= S; s++) {
        if (s < S) inputs[b * S + s] = tok;
        if (s > 0) targets[b * S + s - 1] = tok;
        tok = this.next[tok * 4 + rng.int(4)];
      }
    }
    return { inputs, targets, lossMask: new Float32Array(B * S).fill(1), batchSize: B, seqLen: S, stage: 'synthetic' };
  }

  state(): unknown {
    return { kind: 'markov', seed: this.seed };
  }

  tokenizerJson(): string | null {
    return null;
  }

  describe(): string {
    return `synthetic markov source (vocab ${this.vocab})`;
  }
}
