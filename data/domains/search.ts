/**
 * One-dimensional hyperparameter search for FLGP's diffusion time t (arXiv 2405.13342, section
 * 3.3: t by empirical Bayes): a coarse grid over log t, then golden-section refinement inside
 * the bracket around the best grid point. Deterministic, derivative-free, and robust to the
 * flat tails the evidence has at very small and very large t.
 */

export interface SearchResult<T> {
  x: number;
  value: number;
  payload: T;
  evaluations: number;
}

export interface LogSearchOptions {
  lo: number;
  hi: number;
  /** Grid points per decade (default 3). */
  perDecade?: number;
  /** Golden-section iterations after the grid (default 12). */
  refine?: number;
}

/** Maximises f over x in [lo, hi] on a log scale; f returns the value and a payload to keep. */
export function maximiseLog<T>(f: (x: number) => { value: number; payload: T }, opts: LogSearchOptions): SearchResult<T> {
  const a = Math.log(opts.lo);
  const b = Math.log(opts.hi);
  const steps = Math.max(2, Math.round(((b - a) / Math.LN10) * (opts.perDecade ?? 3)));
  const h = (b - a) / steps;
  let evals = 0;
  const evalAt = (u: number) => {
    evals++;
    const r = f(Math.exp(u));
    return { u, value: Number.isFinite(r.value) ? r.value : -Infinity, payload: r.payload };
  };
  const grid = Array.from({ length: steps + 1 }, (_, i) => evalAt(a + i * h));
  let best = grid[0];
  for (const g of grid) if (g.value > best.value) best = g;
  // Golden-section on [best − h, best + h] clipped to the range.
  let lo = Math.max(a, best.u - h);
  let hi = Math.min(b, best.u + h);
  const phi = (Math.sqrt(5) - 1) / 2;
  let x1 = hi - phi * (hi - lo);
  let x2 = lo + phi * (hi - lo);
  let f1 = evalAt(x1);
  let f2 = evalAt(x2);
  for (let i = 0; i < (opts.refine ?? 12); i++) {
    if (f1.value >= f2.value) {
      hi = x2;
      x2 = x1;
      f2 = f1;
      x1 = hi - phi * (hi - lo);
      f1 = evalAt(x1);
    } else {
      lo = x1;
      x1 = x2;
      f1 = f2;
      x2 = lo + phi * (hi - lo);
      f2 = evalAt(x2);
    }
  }
  for (const c of [f1, f2]) if (c.value > best.value) best = c;
  return { x: Math.exp(best.u), value: best.value, payload: best.payload, evaluations: evals };
}
