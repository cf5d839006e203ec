/**
 * Interventions: (site, batch rows, positions) → read, replace or add. A list of them becomes
 * one Hook for the forward pass. Replacements and additions are written as masked arithmetic,
 * so they are differentiable with respect to the value (ROME's δ, MEMIT's residual deltas);
 * where no gradient is being recorded, on WASM, they are heap copies with the same values
 * (writeRuns).
 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { Hook } from './sites.js';
import { hookOnSites, parseSite } from './sites.js';
import { oneHotMatrix } from './decoder-forward.js';
import { heapView, type WasmBackendLike } from './native/matmul-kernel.js';
import { gradientTapeOn } from '../util/scope.js';

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

/** How a value is laid out over the selected pairs (Intervention.value), or null if it fits none. */
type ValueLayout = 'vector' | 'pairs' | 'full';
function valueLayout(v: tf.Tensor, pairs: Array<[number, number]>, [b, t, w]: [number, number, number]): ValueLayout | null {
  if (v.rank === 1) return 'vector';
  if (v.rank === 3 && v.shape[0] === b && v.shape[1] === t) return 'full';
  if (v.rank === 2 && v.shape[0] === pairs.length && v.shape[1] === w) return 'pairs';
  return null;
}

/** Expands an intervention's value to [B, T, width]. */
function fullValue(iv: Intervention, pairs: Array<[number, number]>, shape: [number, number, number]): tf.Tensor {
  const [b, t, w] = shape;
  const v = iv.value!;
  const layout = valueLayout(v, pairs, shape);
  if (layout === 'vector' || layout === 'full') return v;
  if (layout === 'pairs') {
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

const KERNEL = 'FactLensWriteRuns';

interface WriteAttrs {
  /** [row, position] per selected pair, flattened. */
  pairs: number[];
  op: 'replace' | 'add';
  /** One vector, one per pair, or the full [B, T, width]. */
  layout: ValueLayout;
}

/** Copies x and writes (replace) or adds the value at each selected pair's run of `width` floats. */
function writeRunsKernel(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const { pairs, op, layout } = args.attrs as unknown as WriteAttrs;
  const { x, value } = args.inputs as { x: tf.TensorInfo; value: tf.TensorInfo };
  const backend = args.backend as WasmBackendLike;
  const [, t, w] = x.shape;
  const out = backend.makeOutput(x.shape, 'float32');
  // Views after the output's allocation: a heap growth detaches earlier ones.
  const y = heapView(backend, out);
  const xs = heapView(backend, x);
  const vs = heapView(backend, value);
  y.set(xs);
  for (let k = 0; k < pairs.length; k += 2) {
    const at = (pairs[k] * t + pairs[k + 1]) * w;
    const from = layout === 'vector' ? 0 : layout === 'pairs' ? (k / 2) * w : at;
    if (op === 'replace') y.set(vs.subarray(from, from + w), at);
    else for (let i = 0; i < w; i++) y[at + i] += vs[from + i];
  }
  return out;
}

/**
 * Replace and add as heap copies, where nothing needs their gradient: the masked arithmetic
 * below makes four passes over the whole activation (and a one-hot scatter for per-pair
 * values), which cost a causal trace ~2% of its time for the few runs of width floats it
 * changes. Same values: where m = 1, x·0 + v·1 = v; where m = 0, x·1 + v·0 = x (for finite x
 * and v; a non-finite x at a replaced position comes out as v here, as it should). Duplicate
 * pairs (a one-hot scatter sums their values) keep the arithmetic.
 */
function writeRuns(x: tf.Tensor3D, iv: Intervention, pairs: Array<[number, number]>): tf.Tensor3D | null {
  if (tf.getBackend() !== 'wasm' || gradientTapeOn()) return null;
  const v = iv.value!;
  if (x.dtype !== 'float32' || v.dtype !== 'float32') return null;
  const [, t, w] = x.shape;
  const layout = valueLayout(v, pairs, x.shape);
  // A width that does not match is left to the arithmetic, which reports it as it always has.
  if (!layout || v.shape[v.rank - 1] !== w) return null;
  if (new Set(pairs.map(([r, p]) => r * t + p)).size !== pairs.length) return null;
  if (!tf.getKernel(KERNEL, 'wasm')) tf.registerKernel({ kernelName: KERNEL, backendName: 'wasm', kernelFunc: writeRunsKernel as unknown as tf.KernelFunc });
  const attrs: WriteAttrs = { pairs: pairs.flat(), op: iv.op as WriteAttrs['op'], layout };
  return tf.engine().runKernel(KERNEL, { x, value: v }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor3D;
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
      const written = writeRuns(x, iv, pairs);
      if (written) {
        x = written;
        continue;
      }
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
