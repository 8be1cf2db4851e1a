/** The one linear-algebra module: dense numerics, symmetric eigenproblems, k-means. */
export * from './dense';
export * from './symEig';
export * from './kmeans';
