/**
 * Small float64 linear algebra on the host for ROME/MEMIT: a Cholesky factorisation of the
 * (symmetric positive definite) second moment C and triangular solves, so u = C⁻¹k̄ is a
 * solve, never an explicit inverse (rome-spec §2.5, §7 "Numerics").
 *
 * Matrices are row-major Float64Arrays of n×n. The factor L (C = L·Lᵀ) is stored in the lower
 * triangle; the dot-product (Cholesky–Crout) ordering makes every inner loop a dot product of
 * two contiguous row prefixes, which is the cache-friendly order for row-major storage.
 */
import { FactLensError } from '../errors.js';

export interface Cholesky {
  n: number;
  /** Row-major n×n; only the lower triangle (including the diagonal) is meaningful. */
  l: Float64Array;
  /** Ridge added to the diagonal to make the factorisation succeed (0 when none was needed). */
  jitter: number;
}

/**
 * Factorises a symmetric positive definite matrix (only its lower triangle is read). If a
 * pivot is not positive (C is singular to working precision, e.g. a corpus with fewer tokens
 * than the MLP width), retries with a ridge ε·mean(diag(C)) growing from 1e-10 by 10×; the
 * ridge used is reported in `jitter`.
 */
export function cholesky(a: Float64Array, n: number): Cholesky {
  if (a.length !== n * n) throw new Error(`cholesky: expected ${n}×${n} values, got ${a.length}`);
  let meanDiag = 0;
  for (let i = 0; i < n; i++) meanDiag += a[i * n + i];
  meanDiag /= n;
  if (!(meanDiag > 0) || !Number.isFinite(meanDiag)) {
    throw new FactLensError('INVALID_ARGUMENT', 'the second-moment matrix has no positive diagonal (empty or broken statistics)', {
      field: 'stats',
    });
  }
  const l = new Float64Array(n * n);
  for (let attempt = 0, eps = 0; attempt < 12; attempt++, eps = eps === 0 ? 1e-10 : eps * 10) {
    if (tryCholesky(a, l, n, eps * meanDiag)) return { n, l, jitter: eps * meanDiag };
  }
  throw new FactLensError('INVALID_ARGUMENT', 'the second-moment matrix is not positive definite, even with a ridge of 0.1·mean(diag)', {
    field: 'stats',
  });
}

function tryCholesky(a: Float64Array, l: Float64Array, n: number, ridge: number): boolean {
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    for (let j = 0; j <= i; j++) {
      const rj = j * n;
      let s = a[ri + j];
      if (i === j) s += ridge;
      // s -= Σ_{k<j} L[i,k]·L[j,k]: both are contiguous row prefixes.
      let acc0 = 0;
      let acc1 = 0;
      let k = 0;
      for (; k + 1 < j; k += 2) {
        acc0 += l[ri + k] * l[rj + k];
        acc1 += l[ri + k + 1] * l[rj + k + 1];
      }
      if (k < j) acc0 += l[ri + k] * l[rj + k];
      s -= acc0 + acc1;
      if (i === j) {
        if (!(s > 0) || !Number.isFinite(s)) return false;
        l[ri + i] = Math.sqrt(s);
      } else {
        l[ri + j] = s / l[rj + j];
      }
    }
  }
  return true;
}

/** Solves (L·Lᵀ) x = b. */
export function choleskySolve(ch: Cholesky, b: ArrayLike<number>): Float64Array {
  const { n, l } = ch;
  if (b.length !== n) throw new Error(`choleskySolve: expected ${n} values, got ${b.length}`);
  const y = new Float64Array(n);
  // L y = b (forward substitution).
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    let s = b[i];
    for (let k = 0; k < i; k++) s -= l[ri + k] * y[k];
    y[i] = s / l[ri + i];
  }
  // Lᵀ x = y (back substitution, column access of L as rows of Lᵀ: accumulate by rows of L).
  const x = y;
  for (let i = n - 1; i >= 0; i--) {
    x[i] /= l[i * n + i];
    const xi = x[i];
    const ri = i * n;
    for (let k = 0; k < i; k++) x[k] -= l[ri + k] * xi;
  }
  return x;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

export function norm(a: ArrayLike<number>): number {
  return Math.sqrt(dot(a, a));
}

/** y = x·W + b for a row vector x [f] and a row-major W [f, d], in float64. */
export function vecMat(x: ArrayLike<number>, w: ArrayLike<number>, f: number, d: number, b?: ArrayLike<number>): Float64Array {
  const y = new Float64Array(d);
  for (let i = 0; i < f; i++) {
    const xi = x[i];
    if (xi === 0) continue;
    const r = i * d;
    for (let j = 0; j < d; j++) y[j] += xi * w[r + j];
  }
  if (b) for (let j = 0; j < d; j++) y[j] += b[j];
  return y;
}

/** Symmetric matrix-vector product A·x for a row-major n×n A. */
export function matVec(a: ArrayLike<number>, x: ArrayLike<number>, n: number): Float64Array {
  const y = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    const r = i * n;
    for (let j = 0; j < n; j++) s += a[r + j] * x[j];
    y[i] = s;
  }
  return y;
}
