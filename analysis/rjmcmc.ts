/**
 * Reversible-jump MCMC over knot sets (arXiv 2405.13353, section 3; Green 1995): each
 * iteration proposes a birth, death or relocation with the paper's probabilities (knots.ts)
 * and accepts with the evidence ratio of splineFit.ts times the prior/proposal ratio (exactly
 * 1 away from the k bounds, computed anyway so that caps and fixed-k runs stay correct).
 *
 * Relocation: the paper moves a uniformly chosen knot to a uniformly chosen free candidate. We
 * mix that global move half the time with a local one (shift by 1..localStep grid steps, either
 * side); both are symmetric, so the acceptance ratio is unchanged and the local move only
 * sharpens knot locations faster. One iteration is one proposal (the authors' code retries up
 * to 100 proposals per recorded step; we count every proposal instead).
 *
 * All randomness comes from RngStream.of(seed, 'analysis.rjmcmc', chain): same inputs, same
 * chain, bit for bit.
 */
import { RngStream } from '../core/rng';
import { basisSize } from './bspline';
import { candidate, logBirthPriorProposal, moveProbabilities } from './knots';
import { fitSpline, logEvidence } from './splineFit';

/**
 * What the chain needs from a model: the log evidence of a knot set (interior knots in (0, 1),
 * sorted). The default is the paper's B-spline regression; changepoints.ts plugs in a smooth
 * background plus free linear-spline knots.
 */
export interface KnotModel {
  logEvidence(interior: number[]): number;
}

export type KnotModelFactory = (t: Float64Array, y: Float64Array, o: ResolvedOptions) => KnotModel;

/** The paper's model: degree-q B-spline least squares with the profiled-sigma evidence. */
export const splineModel: KnotModelFactory = (t, y, o) => ({
  logEvidence(interior: number[]): number {
    const f = fitSpline(t, y, interior, o.degree, { intercept: o.intercept, ridge: o.ridge });
    return logEvidence(f.rss, t.length, basisSize(interior.length, o.degree, o.intercept));
  },
});

export interface ChainOptions {
  seed: number;
  /** Chain index, for several independent chains from one seed. */
  chain?: number;
  degree?: number;
  intercept?: boolean;
  /** Number of candidate knots n; default 2 m (the paper's `times` = 2). */
  candidates?: number;
  /** EBIC exponent of the prior C(n,k)^-gamma; 1 = EBIC, 0 = uniform over sets (BIC). */
  gamma?: number;
  /** Scale of the birth/death probabilities, in (0, 0.5]. */
  c?: number;
  burnIn?: number;
  samples?: number;
  thin?: number;
  /** Fix the knot count (relocations only), as in the paper's knot-location experiment. */
  fixedK?: number;
  initialK?: number;
  kMax?: number;
  /** Largest grid shift of a local relocation; 0 = global relocations only (the paper's). */
  localStep?: number;
  ridge?: number;
}

export type ResolvedOptions = Required<Omit<ChainOptions, 'fixedK'>> & { fixedK: number | null };

export interface MoveStats {
  proposed: number;
  accepted: number;
}

export interface ChainResult {
  options: ResolvedOptions;
  /** Data in chain units: t in [0, 1], y standardised. */
  t: Float64Array;
  y: Float64Array;
  xMin: number;
  xMax: number;
  yMean: number;
  yScale: number;
  /** Number of candidates n. */
  n: number;
  /** Per recorded sample: knot count, candidate indices (sorted), log evidence. */
  ks: Int32Array;
  knots: Int32Array[];
  logEvidence: Float64Array;
  moves: { birth: MoveStats; death: MoveStats; relocate: MoveStats };
}

function resolve(o: ChainOptions, m: number): ResolvedOptions {
  const degree = o.degree ?? 3;
  const candidates = o.candidates ?? 2 * m;
  const fixedK = o.fixedK ?? null;
  const kMaxDefault = Math.max(1, Math.min(candidates, Math.floor((m - degree - 2) / 2)));
  return {
    seed: o.seed,
    chain: o.chain ?? 0,
    degree,
    intercept: o.intercept ?? true,
    candidates,
    gamma: o.gamma ?? 1,
    c: o.c ?? 0.3,
    burnIn: o.burnIn ?? 5000,
    samples: o.samples ?? 5000,
    thin: o.thin ?? 1,
    fixedK,
    initialK: fixedK ?? o.initialK ?? 1,
    kMax: fixedK ?? o.kMax ?? kMaxDefault,
    localStep: o.localStep ?? 4,
    ridge: o.ridge ?? 1e-6,
  };
}

function validate(x: ArrayLike<number>, y: ArrayLike<number>, o: ResolvedOptions): void {
  if (x.length !== y.length) throw new RangeError(`x has ${x.length} values but y has ${y.length}`);
  if (x.length < o.degree + 3) throw new RangeError(`need at least ${o.degree + 3} points, got ${x.length}`);
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]) || !Number.isFinite(y[i])) throw new RangeError(`non-finite value at index ${i}`);
  }
  if (!(o.c > 0 && o.c <= 0.5)) throw new RangeError(`c must be in (0, 0.5], got ${o.c}`);
  if (!(o.gamma >= 0)) throw new RangeError(`gamma must be >= 0, got ${o.gamma}`);
  if (!(o.candidates >= 1)) throw new RangeError('need at least one candidate knot');
  if (o.initialK > o.kMax || o.initialK > o.candidates) throw new RangeError(`initial knot count ${o.initialK} exceeds the cap ${Math.min(o.kMax, o.candidates)}`);
}

/** Runs one seeded chain on (x, y). x is rescaled to [0, 1] and y standardised internally. */
export function runChain(x: ArrayLike<number>, y: ArrayLike<number>, options: ChainOptions, modelFactory: KnotModelFactory = splineModel): ChainResult {
  const m = x.length;
  const o = resolve(options, m);
  validate(x, y, o);
  const rng = RngStream.of(o.seed, 'analysis.rjmcmc', o.chain);
  let xMin = Infinity;
  let xMax = -Infinity;
  let mean = 0;
  for (let i = 0; i < m; i++) {
    xMin = Math.min(xMin, x[i]);
    xMax = Math.max(xMax, x[i]);
    mean += y[i];
  }
  mean /= m;
  if (!(xMax > xMin)) throw new RangeError('x must take at least two distinct values');
  let v = 0;
  for (let i = 0; i < m; i++) v += (y[i] - mean) ** 2;
  const scale = Math.sqrt(v / m) || 1;
  const t = new Float64Array(m);
  const ys = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    t[i] = (x[i] - xMin) / (xMax - xMin);
    ys[i] = (y[i] - mean) / scale;
  }

  const n = o.candidates;
  const occupied = new Uint8Array(n);
  let knots: number[] = [];
  while (knots.length < o.initialK) {
    const j = rng.int(n);
    if (!occupied[j]) {
      occupied[j] = 1;
      knots.push(j);
    }
  }
  knots.sort((a, b) => a - b);
  const model = modelFactory(t, ys, o);
  const evidenceOf = (idx: number[]): number => model.logEvidence(idx.map((j) => candidate(j, n)));
  let logLik = evidenceOf(knots);

  const kMin = o.fixedK ?? 0;
  const kMax = o.kMax;
  const moves = { birth: { proposed: 0, accepted: 0 }, death: { proposed: 0, accepted: 0 }, relocate: { proposed: 0, accepted: 0 } };
  const ks: number[] = [];
  const kept: Int32Array[] = [];
  const logLikKept: number[] = [];
  const total = o.burnIn + o.samples * o.thin;
  const freeCandidate = (): number => {
    for (;;) {
      const j = rng.int(n);
      if (!occupied[j]) return j;
    }
  };

  for (let it = 0; it < total; it++) {
    const k = knots.length;
    const pm = o.fixedK !== null ? { birth: 0, death: 0, relocate: 1 } : moveProbabilities(k, n, o.gamma, o.c, kMin, kMax);
    const u = rng.next();
    let proposal: number[] | null = null;
    let logRatio = 0;
    let kind: 'birth' | 'death' | 'relocate';
    let added = -1;
    let removed = -1;
    if (u < pm.birth) {
      kind = 'birth';
      added = freeCandidate();
      proposal = [...knots, added].sort((a, b) => a - b);
      logRatio = logBirthPriorProposal(k, n, o.gamma, o.c, kMin, kMax);
    } else if (u < pm.birth + pm.death) {
      kind = 'death';
      const i = rng.int(k);
      removed = knots[i];
      proposal = knots.filter((_, j) => j !== i);
      logRatio = -logBirthPriorProposal(k - 1, n, o.gamma, o.c, kMin, kMax);
    } else {
      kind = 'relocate';
      if (k > 0) {
        const i = rng.int(k);
        let target: number;
        if (o.localStep > 0 && rng.next() < 0.5) {
          const s = 1 + rng.int(o.localStep);
          target = knots[i] + (rng.next() < 0.5 ? -s : s);
          if (target < 0 || target >= n || occupied[target]) target = -1; // symmetric: reject
        } else {
          target = freeCandidate();
        }
        if (target >= 0) {
          removed = knots[i];
          added = target;
          proposal = knots.map((j, jj) => (jj === i ? target : j)).sort((a, b) => a - b);
        }
      }
    }
    moves[kind].proposed++;
    if (proposal) {
      const ll = evidenceOf(proposal);
      const logA = ll - logLik + logRatio;
      if (logA >= 0 || Math.log(rng.next()) < logA) {
        moves[kind].accepted++;
        if (removed >= 0) occupied[removed] = 0;
        if (added >= 0) occupied[added] = 1;
        knots = proposal;
        logLik = ll;
      }
    }
    if (it >= o.burnIn && (it - o.burnIn) % o.thin === o.thin - 1) {
      ks.push(knots.length);
      kept.push(Int32Array.from(knots));
      logLikKept.push(logLik);
    }
  }
  return {
    options: o,
    t,
    y: ys,
    xMin,
    xMax,
    yMean: mean,
    yScale: scale,
    n,
    ks: Int32Array.from(ks),
    knots: kept,
    logEvidence: Float64Array.from(logLikKept),
    moves,
  };
}

/** Candidate index -> original x units. */
export function knotToX(res: ChainResult, j: number): number {
  return res.xMin + candidate(j, res.n) * (res.xMax - res.xMin);
}
