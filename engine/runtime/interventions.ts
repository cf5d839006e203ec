/**
 * Interventions: (site, batch rows, positions) → read, replace or add. A list of them becomes
 * one Hook for the forward pass. Replacements and additions are written as masked arithmetic,
 * so they are differentiable with respect to the value (ROME's δ, MEMIT's residual deltas).
 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { Hook } from './sites.js';
import { hookOnSites, parseSite } from './sites.js';
import { oneHotMatrix } from './decoder-forward.js';

export interface Intervention {
  site: string;
  op: 'read' | 'replace' | 'add';
  /** Batch rows; all rows when absent. */
  rows?: number[];
  /**
   * Positions: one list for every selected row, or one list per selected row (aligned with
   * `rows`). All positions when absent.
   */
  positions?: number[] | number[][];
  /**
   * For replace/add: [width] (same vector everywhere selected), [B, T, width] (full), or
   * [n, width] with one vector per selected (row, position) pair in row-major order.
   */
  value?: tf.Tensor;
}

function selectedPairs(iv: Intervention, b: number, t: number): Array<[number, number]> {
  const rows = iv.rows ?? Array.from({ length: b }, (_, i) => i);
  const pairs: Array<[number, number]> = [];
  rows.forEach((r, i) => {
    if (r < 0 || r >= b) {
      throw new FactLensError('INVALID_ARGUMENT', `intervention at ${iv.site}: row ${r} is outside the batch of ${b}`, {
        field: 'rows',
      });
    }
    let ps: number[];
    if (iv.positions === undefined) ps = Array.from({ length: t }, (_, j) => j);
    else if (Array.isArray(iv.positions[0])) ps = (iv.positions as number[][])[i];
    else ps = iv.positions as number[];
    for (const p of ps) {
      if (p < 0 || p >= t) {
        throw new FactLensError('INVALID_ARGUMENT', `intervention at ${iv.site}: position ${p} is outside 0..${t - 1}`, {
          field: 'positions',
        });
      }
      pairs.push([r, p]);
    }
  });
  return pairs;
}

function maskFor(pairs: Array<[number, number]>, b: number, t: number): tf.Tensor3D {
  const m = new Float32Array(b * t);
  for (const [r, p] of pairs) m[r * t + p] = 1;
  return tf.tensor3d(m, [b, t, 1]);
}

/** Expands an intervention's value to [B, T, width]. */
function fullValue(iv: Intervention, pairs: Array<[number, number]>, shape: [number, number, number]): tf.Tensor {
  const [b, t, w] = shape;
  const v = iv.value!;
  if (v.rank === 1 || (v.rank === 3 && v.shape[0] === b && v.shape[1] === t)) return v;
  if (v.rank === 2 && v.shape[0] === pairs.length && v.shape[1] === w) {
    // Scatter with a one-hot matrix [B·T, n] · [n, w]: differentiable on every backend.
    const idx = pairs.map(([r, p]) => r * t + p);
    return tf.reshape(tf.matMul(oneHotMatrix(idx, b * t), v as tf.Tensor2D, true, false), [b, t, w]);
  }
  throw new FactLensError(
    'INVALID_ARGUMENT',
    `intervention at ${iv.site}: value of shape [${v.shape.join(', ')}] fits neither [${w}], [${b}, ${t}, ${w}] nor [${pairs.length}, ${w}]`,
    { field: 'value' },
  );
}

/**
 * Builds the hook for a list of interventions. Reads are stored in `reads` under the site
 * name (the full [B, T, width] activation as the pass saw it, after earlier interventions).
 */
export function interventionHook(list: Intervention[], reads?: Map<string, tf.Tensor3D>): Hook {
  for (const iv of list) {
    if (!parseSite(iv.site)) {
      throw new FactLensError('INVALID_ARGUMENT', `unknown activation site '${iv.site}'`, { field: 'site' });
    }
    if (iv.op !== 'read' && !iv.value) {
      throw new FactLensError('INVALID_ARGUMENT', `intervention '${iv.op}' at ${iv.site} needs a value`, { field: 'value' });
    }
  }
  const hook: Hook = (s, x) => {
    for (const iv of list) {
      if (iv.site !== s) continue;
      if (iv.op === 'read') {
        reads?.set(s, x);
        continue;
      }
      const [b, t, w] = x.shape;
      const pairs = selectedPairs(iv, b, t);
      const mask = maskFor(pairs, b, t);
      const value = fullValue(iv, pairs, [b, t, w]);
      // Replacement as x·(1−m) + v·m rather than x + m·(v − x): exact where m = 1.
      x =
        iv.op === 'add'
          ? (tf.add(x, tf.mul(mask, value)) as tf.Tensor3D)
          : (tf.add(tf.mul(x, tf.sub(1, mask)), tf.mul(value, mask)) as tf.Tensor3D);
    }
    return x;
  };
  return hookOnSites(
    hook,
    list.map((iv) => iv.site),
  );
}
