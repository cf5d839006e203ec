/**
 * Fast gradients with respect to activations on the WASM backend (docs/tfjs-backends.md),
 * for optimisations where every weight is frozen (ROME's v*, MEMIT's z):
 *
 *  1. Frozen-weight products: inside `withFastGradients`, every weight product x·W of the
 *     forward (decoder-forward's `setWeightMatMul`) is a `tf.customGrad` op whose gradient is
 *     dy·Wᵀ with Wᵀ computed once per weight and reused across steps (XNNPACK then also packs
 *     it once). W is captured, not an input: the tape neither saves a copy of it (the WASM
 *     backend's clone copies the data, which cost a full copy of every weight per step) nor
 *     differentiates it.
 *  2. BatchMatMul gradient without transposed matmuls: the stock gradient calls transposed
 *     matmuls, which WASM runs as scalar loops; this one uses explicit transposes and plain
 *     matmuls (attention products, one-hot row selections).
 *
 * Both are installed only for the span of one synchronous call and then restored, so nothing
 * else in the process (e.g. fine-tuning, which needs weight gradients) ever sees them. The
 * products are the same as the stock path's, so values and gradients agree to float32
 * rounding (checked in test/edit.test.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import { setWeightMatMul, type WeightMatMul } from '../runtime/decoder-forward.js';

type GradConfig = Parameters<typeof tf.registerGradient>[0];

/** dataId → cached transpose, for `frozenTransposes` (see there). */
const byDataId = new Map<object, tf.Tensor>();

function dataIdOf(t: tf.Tensor): object {
  return (t as unknown as { dataId: object }).dataId;
}

/** Swaps the last two axes. */
function tr(x: tf.Tensor): tf.Tensor {
  if (byDataId.size) {
    const hit = byDataId.get(dataIdOf(x));
    if (hit && !hit.isDisposed) return hit;
  }
  const r = x.rank;
  const perm = Array.from({ length: r }, (_, i) => i);
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return tf.transpose(x, perm);
}

const mm = (a: tf.Tensor, b: tf.Tensor) => tf.matMul(a, b, false, false);

let stock: GradConfig | undefined;

const fastBatchMatMul: GradConfig = {
  kernelName: 'BatchMatMul',
  inputsToSave: ['a', 'b'],
  gradFunc: (dy, saved, attrs) => {
    const [a, b] = saved;
    const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
    const g = dy as tf.Tensor;
    const sameBatch = a.rank === b.rank && a.shape.slice(0, -2).every((s, i) => s === b.shape[i]);
    if (!sameBatch) return stock!.gradFunc(dy, saved, attrs);
    if (!transposeA && !transposeB) return { a: () => mm(g, tr(b)), b: () => mm(tr(a), g) };
    if (!transposeA && transposeB) return { a: () => mm(g, b), b: () => mm(tr(g), a) };
    if (transposeA && !transposeB) return { a: () => mm(b, tr(g)), b: () => mm(a, g) };
    return { a: () => mm(tr(b), tr(g)), b: () => mm(tr(g), tr(a)) };
  },
};

/** Cached transposes of the frozen weights of one optimisation; release() frees them. */
export class FrozenWeights {
  private readonly transposes = new Map<tf.Tensor2D, tf.Tensor2D>();
  private readonly owned: tf.Tensor2D[] = [];

  /** Declares a known transpose (e.g. a tied unembedding's transpose is the embedding). */
  knownTranspose(w: tf.Tensor2D, wT: tf.Tensor2D): void {
    this.transposes.set(w, wT);
  }

  transposeOf(w: tf.Tensor2D): tf.Tensor2D {
    let t = this.transposes.get(w);
    if (!t || t.isDisposed) {
      t = tf.keep(tf.transpose(w));
      this.transposes.set(w, t);
      this.owned.push(t);
    }
    return t;
  }

  readonly matMul: WeightMatMul = (x, w) => {
    // Wᵀ is made on the first gradient through W (layers the gradient never reaches, e.g.
    // below the edited one, are never transposed) and kept for the later steps.
    const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => ({
      value: tf.matMul(args[0] as tf.Tensor2D, w),
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) => tf.matMul(dy as tf.Tensor2D, this.transposeOf(w)),
    }));
    return op(x) as tf.Tensor2D;
  };

  release(): void {
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
    this.transposes.clear();
  }
}

/**
 * Runs `fn` (synchronously) with frozen-weight products and the transposed-matmul-free
 * BatchMatMul gradient installed; restores the previous behaviour afterwards.
 */
export function withFastGradients<T>(frozen: FrozenWeights, fn: () => T): T {
  stock ??= tf.getGradient('BatchMatMul') as GradConfig | undefined;
  const prevMatMul = setWeightMatMul(frozen.matMul);
  const prevGrad = tf.getGradient('BatchMatMul') as GradConfig | undefined;
  if (stock) tf.registerGradient(fastBatchMatMul);
  try {
    return fn();
  } finally {
    if (prevGrad) tf.registerGradient(prevGrad);
    setWeightMatMul(prevMatMul);
  }
}

// ---------------------------------------------------------------------------------------------
// Process-wide variant (kept for callers that train some weights and freeze others, e.g.
// ft.ts): installs the transposed-matmul-free BatchMatMul gradient until uninstalled, and a
// transpose cache keyed by dataId. Note: on WASM the tape saves kernel inputs through the
// Identity kernel, which copies the data to a new dataId, so the cache only hits on backends
// that share data on clone (cpu); `withFastGradients` + `FrozenWeights` do not have this issue.

let installed = false;

export function installFastMatMulGrad(): void {
  if (installed) return;
  stock ??= tf.getGradient('BatchMatMul') as GradConfig | undefined;
  if (!stock) return;
  tf.registerGradient(fastBatchMatMul);
  installed = true;
}

export function uninstallFastMatMulGrad(): void {
  if (!installed || !stock) return;
  tf.registerGradient(stock);
  installed = false;
}

/**
 * Registers frozen matrices whose transposes the BatchMatMul gradient may reuse: pairs
 * [w, wᵀ] with wᵀ known (e.g. the embedding for a tied unembedding) or undefined (computed
 * now). Returns a release function that forgets them and frees the transposes it computed.
 */
export function frozenTransposes(pairs: Array<[tf.Tensor2D, tf.Tensor2D | undefined]>): () => void {
  const made: tf.Tensor[] = [];
  const ids: object[] = [];
  for (const [w, known] of pairs) {
    const id = dataIdOf(w);
    if (byDataId.has(id)) continue;
    const t = known ?? tf.transpose(w);
    if (!known) made.push(t);
    byDataId.set(id, t);
    ids.push(id);
  }
  return () => {
    for (const id of ids) byDataId.delete(id);
    for (const t of made) t.dispose();
  };
}
