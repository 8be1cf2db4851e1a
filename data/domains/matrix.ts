/** FLGP's input matrix: rows packed into a row-major Float64Array n×d, checked finite. */
import { DataError } from '../../core/errors';

/** Packs an array of rows (or an already flat matrix) into a row-major Float64Array n×d. */
export function toMatrix(X: Float64Array[] | number[][] | { data: Float64Array; n: number; d: number }): { data: Float64Array; n: number; d: number } {
  if (!Array.isArray(X)) return X;
  const n = X.length;
  if (n === 0) throw new DataError('no points given', { where: 'flgp' });
  const d = X[0].length;
  const data = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    const row = X[i];
    if (row.length !== d) throw new DataError(`row ${i} has ${row.length} columns, expected ${d}`, { where: 'flgp: X' });
    for (let k = 0; k < d; k++) {
      const v = row[k];
      if (!Number.isFinite(v)) throw new DataError(`X[${i}][${k}] is not finite (${v})`, { where: 'flgp: X' });
      data[i * d + k] = v;
    }
  }
  return { data, n, d };
}
