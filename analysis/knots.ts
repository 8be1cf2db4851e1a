/**
 * The knot model of arXiv 2405.13353 (section 3): knots are chosen among n candidates
 * t_i = i/(n+1), i = 1..n, on [0, 1]; a knot set xi of size k has prior
 *   p(xi) ∝ C(n, k)^-gamma,
 * i.e. p(k) ∝ C(n, k)^(1-gamma) spread uniformly over the C(n, k) sets of that size. gamma = 1
 * (the default) is the EBIC prior, which penalises the size of the model space; gamma = 0 is the
 * uniform prior over sets that, with a BIC likelihood, is plain BIC and over-counts knots when n
 * is large (the paper's motivation).
 *
 * Birth/death probabilities follow Green (1995) as the authors' code does:
 *   b_k = c min(1, p(k+1)/p(k)) = c min(1, ((n-k)/(k+1))^(1-gamma)),
 *   d_k = c min(1, p(k-1)/p(k)) = c min(1, (k/(n-k+1))^(1-gamma)),
 *   r_k = 1 - b_k - d_k (relocate), with c <= 1/2 so r_k >= 0.
 * With births drawn uniformly from the n-k free candidates and deaths from the k knots, the
 * prior ratio times the proposal ratio is exactly 1, so a move is accepted with the
 * likelihood ratio alone (checked in spec/analysis/rjmcmc.spec.ts).
 */

/** Candidate knot i (0-based) of n: (i+1)/(n+1). */
export function candidate(i: number, n: number): number {
  return (i + 1) / (n + 1);
}

/** log C(n, k) by summing logs (exact enough for n up to millions, no gamma function needed). */
export function logChoose(n: number, k: number): number {
  if (k < 0 || k > n) return -Infinity;
  const kk = Math.min(k, n - k);
  let s = 0;
  for (let i = 1; i <= kk; i++) s += Math.log((n - kk + i) / i);
  return s;
}

/** log p(xi) up to a constant for a set of k knots among n candidates. */
export function logKnotPrior(k: number, n: number, gamma: number): number {
  return -gamma * logChoose(n, k);
}

export interface MoveProbabilities {
  birth: number;
  death: number;
  relocate: number;
}

/**
 * The paper's move probabilities for a chain holding k knots, with k confined to
 * [kMin, kMax] (births are impossible at kMax, deaths at kMin).
 */
export function moveProbabilities(k: number, n: number, gamma: number, c: number, kMin = 0, kMax = n): MoveProbabilities {
  const birth = k >= kMax ? 0 : c * Math.min(1, Math.pow((n - k) / (k + 1), 1 - gamma));
  const death = k <= kMin ? 0 : c * Math.min(1, Math.pow(k / (n - k + 1), 1 - gamma));
  return { birth, death, relocate: 1 - birth - death };
}

/**
 * log [ p(xi') q(xi | xi') / (p(xi) q(xi' | xi)) ] for a birth k -> k+1 (sign flips for the
 * matching death): prior ratio times proposal ratio. Zero away from the bounds when the
 * paper's b_k, d_k are used.
 */
export function logBirthPriorProposal(k: number, n: number, gamma: number, c: number, kMin = 0, kMax = n): number {
  const fwd = moveProbabilities(k, n, gamma, c, kMin, kMax).birth / (n - k);
  const rev = moveProbabilities(k + 1, n, gamma, c, kMin, kMax).death / (k + 1);
  return logKnotPrior(k + 1, n, gamma) - logKnotPrior(k, n, gamma) + Math.log(rev) - Math.log(fwd);
}
