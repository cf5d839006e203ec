/**
 * AlphaEdit's null-space projection (Fang et al., ICLR 2025) for ROME and MEMIT (`--null-space`):
 * an update ΔW (the map k ↦ Δm of the MLP output matrix) is confined to directions the preserved
 * knowledge's keys do not use, so ΔW·k ≈ 0 for the keys of running text.
 *
 * Preserved keys: the same second-moment statistics C = E[kkᵀ] as ROME/MEMIT (stats.ts, rome-spec
 * §2.5). Eigendecompose C = U Λ Uᵀ (eigen.ts) and keep the eigenvectors whose eigenvalue is
 * small: λ_i < threshold · mean(λ), threshold 0.25 by default. AlphaEdit uses an absolute 2e-2 on
 * its models' covariances; the relative rule carries over between models with keys of another
 * scale, and on tinyworld (layer 3: mean eigenvalue 0.084) it gives about the same cut-off,
 * 0.021 — 439 of 1,024 directions, which carry 5.8% of the keys' energy tr(C). P = Û Ûᵀ.
 *
 * Updates (rome-spec conventions, [f, d] orientation):
 *  - MEMIT: AlphaEdit's ΔW = P K (KᵀPK + I)⁻¹ R̃ᵀ per layer, in place of (λC + KKᵀ)⁻¹K R̃ᵀ (the
 *    push-through identity turns AlphaEdit's f×f inverse into an n×n one);
 *  - ROME 'keys': u = P K (KᵀPK + μI)⁻¹ 1, the minimum-norm u inside the null space with
 *    k_i·u = 1 for every template key (μ as in rome.ts: 1e-3 of the Gram matrix's mean diagonal);
 *  - ROME 'consistent'/'reference': u ← P u, then v_r from the same formula.
 * The projector is cached in memory and beside the statistics on disk (`.null-<threshold>`).
 */
import { FactLensError } from '../errors.js';
import { cholesky, choleskySolve, dot } from './linalg.js';
import { symmetricEigen } from './eigen.js';
import { cacheRoot } from './hash.js';
import { readFloat64File, writeFloat64File, type LayerStats } from './stats.js';

export const NULL_SPACE_THRESHOLD = 0.25;
const MAGIC = Buffer.from('FLNULL\u0000\u0001', 'latin1');

export interface NullSpace {
  f: number;
  /** Kept eigenvectors as rows: basis[r * f + i] (r < rank). */
  basis: Float64Array;
  rank: number;
  threshold: number;
  /** The absolute eigenvalue cut-off (threshold · mean eigenvalue). */
  cutoff: number;
  /** Share of tr(C) in the kept directions. */
  energy: number;
}

const memo = new Map<string, NullSpace>();

/** The null space of the statistics' second moment (see the header). */
export function nullSpace(stats: LayerStats, threshold = NULL_SPACE_THRESHOLD): NullSpace {
  if (!(threshold > 0) || !Number.isFinite(threshold)) {
    throw new FactLensError('INVALID_ARGUMENT', `the null-space threshold must be a positive number, not ${threshold}`, { field: 'nullSpace' });
  }
  const key = `${stats.file ?? 'mem'}|${stats.count}|${threshold}`;
  const hit = memo.get(key);
  if (hit) return hit;
  const f = stats.f;
  const disk = stats.file && stats.file.startsWith(cacheRoot()) ? `${stats.file}.null-${threshold}` : null;
  type H = { format: string; f: number; count: number; rank: number; cutoff: number; energy: number; threshold: number };
  const read = disk
    ? readFloat64File<H>(disk, MAGIC, (h, values) => h.format === 'factlens-null-v1' && h.f === f && h.count === stats.count && values === h.rank * f)
    : null;
  let ns: NullSpace;
  if (read) {
    const h = read.header;
    ns = { f, basis: read.body, rank: h.rank, threshold, cutoff: h.cutoff, energy: h.energy };
  } else {
    const c = new Float64Array(f * f);
    for (let i = 0; i < c.length; i++) c[i] = stats.sum[i] / stats.count;
    const e = symmetricEigen(c, f);
    let total = 0;
    for (const v of e.values) total += v;
    const cutoff = (threshold * total) / f;
    const keep: number[] = [];
    let kept = 0;
    e.values.forEach((v, j) => {
      if (v < cutoff) {
        keep.push(j);
        kept += Math.max(0, v);
      }
    });
    const basis = new Float64Array(keep.length * f);
    keep.forEach((j, r) => {
      for (let i = 0; i < f; i++) basis[r * f + i] = e.vectors[i * f + j];
    });
    ns = { f, basis, rank: keep.length, threshold, cutoff, energy: total > 0 ? kept / total : 0 };
    if (disk) {
      try {
        writeFloat64File(disk, MAGIC, { format: 'factlens-null-v1', f, count: stats.count, rank: ns.rank, cutoff, energy: ns.energy, threshold }, basis);
      } catch {
        /* recomputed next time */
      }
    }
  }
  if (ns.rank === 0) {
    throw new FactLensError(
      'INVALID_ARGUMENT',
      `no direction of layer ${stats.layer}'s key statistics has an eigenvalue below ${threshold} × the mean: the null space is empty; raise the threshold`,
      { field: 'nullSpace', layer: stats.layer },
    );
  }
  if (memo.size >= 8) memo.delete(memo.keys().next().value!);
  memo.set(key, ns);
  return ns;
}

/** P x = Û(Ûᵀx). */
export function project(ns: NullSpace, x: ArrayLike<number>): Float64Array {
  const { f, rank, basis } = ns;
  const out = new Float64Array(f);
  for (let r = 0; r < rank; r++) {
    const o = r * f;
    let s = 0;
    for (let i = 0; i < f; i++) s += basis[o + i] * x[i];
    if (s === 0) continue;
    for (let i = 0; i < f; i++) out[i] += s * basis[o + i];
  }
  return out;
}

/**
 * A = P K (KᵀPK + μI)⁻¹ as columns A_r [f] (one per key): ΔW = Σ_r A_r ⊗ R_r maps each key k_s
 * to ≈ R_s inside the null space.
 */
export function nullSpaceSolve(ns: NullSpace, keys: Float64Array[], mu: number): Float64Array[] {
  const n = keys.length;
  const PK = keys.map((k) => project(ns, k));
  const G = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const g = dot(keys[i], PK[j]);
      G[i * n + j] = g;
      G[j * n + i] = g;
    }
    G[i * n + i] += mu;
  }
  const ch = cholesky(G, n);
  const f = ns.f;
  // Column r of (G)⁻¹: solve G x = e_r; A_r = Σ_s PK_s x_s.
  return keys.map((_, r) => {
    const e = new Float64Array(n);
    e[r] = 1;
    const x = choleskySolve(ch, e);
    const a = new Float64Array(f);
    for (let s = 0; s < n; s++) {
      const xs = x[s];
      const p = PK[s];
      for (let i = 0; i < f; i++) a[i] += xs * p[i];
    }
    return a;
  });
}
