/**
 * The vocabulary end of the v* / z objective (rome-spec §2.7) as one differentiable op.
 *
 * The loss needs, per row, only the target token's log-probability (rewriting rows) or the
 * row's whole distribution (the KL row), yet written in tfjs ops it runs log-softmax, exp,
 * a one-hot product, slices and sums over rows × vocabulary, each again in the backward pass:
 * on tinyworld that was a third of a warm ROME edit's kernel time, more than the products
 * themselves. Here the logits come from the one matmul, are read once, and the log-sum-exp,
 * the loss and dL/dlogits are computed on the host in float64 in one pass per row; the
 * backward pass is the one product dL/dlogits · Wᵀ. Values and gradients equal the op-by-op
 * form to float32 rounding (test/vocab-loss.test.ts).
 *
 * It reads the logits synchronously, so it is for backends with synchronous reads (native,
 * wasm, cpu, node); rome.ts keeps the op-by-op form for WebGPU.
 */
import * as tf from '@tensorflow/tfjs-core';
import { nativeMatMulInstalled } from '../runtime/native/matmul-kernel.js';
import { NativeGraph, ortTensor } from '../runtime/native/ort.js';
import { nativeHeadFeeds } from '../runtime/vocab.js';

/** The native head: z = x·W (+ b), its row maxima and exp(z − max), in one onnxruntime graph. */
const graphs = new Map<string, NativeGraph>();
function expGraph(bias: boolean, v: number): NativeGraph {
  const key = `${bias}:${v}`;
  let g = graphs.get(key);
  if (!g) {
    g = new NativeGraph(
      [
        { op: 'MatMul', inputs: ['x', 'w'], outputs: [bias ? 'z0' : 'z'] },
        ...(bias ? [{ op: 'Add', inputs: ['z0', 'b'], outputs: ['z'] }] : []),
        { op: 'ReduceMax', inputs: ['z'], outputs: ['zmax'], attrs: { axes: [1], keepdims: 1 } },
        { op: 'Sub', inputs: ['z', 'zmax'], outputs: ['zs'] },
        { op: 'Exp', inputs: ['zs'], outputs: ['e'] },
      ],
      [
        { name: 'x', type: 'float32', shape: ['n', 'd'] },
        { name: 'w', type: 'float32', shape: ['d', v] },
        ...(bias ? [{ name: 'b', type: 'float32' as const, shape: [v] }] : []),
      ],
      [
        { name: 'z', type: 'float32', shape: ['n', v] },
        { name: 'zmax', type: 'float32', shape: ['n', 1] },
        { name: 'e', type: 'float32', shape: ['n', v] },
      ],
    );
    graphs.set(key, g);
  }
  return g;
}

/** Logits, row maxima and exp(logit − max) of rows x [P, d]; natively where it can, else in JS. */
function headExp(
  x: tf.Tensor2D,
  logitsOf: (h: tf.Tensor2D) => tf.Tensor2D,
  native: { w: tf.Tensor2D; b?: tf.Tensor1D } | undefined,
): { z: Float32Array; zmax: Float32Array; e: Float32Array; V: number } {
  const P = x.shape[0];
  if (native && nativeMatMulInstalled() && tf.getBackend() === 'wasm' && x.dtype === 'float32') {
    const V = native.w.shape[1];
    const { feeds, threads } = nativeHeadFeeds(x, native.w, native.b);
    const z = new Float32Array(P * V);
    const e = new Float32Array(P * V);
    const zmax = new Float32Array(P);
    expGraph(!!native.b, V).run(
      feeds,
      { z: ortTensor('float32', z, [P, V]), zmax: ortTensor('float32', zmax, [P, 1]), e: ortTensor('float32', e, [P, V]) },
      threads,
    );
    return { z, zmax, e, V };
  }
  const logitsT = logitsOf(x);
  const V = logitsT.shape[1];
  const z = logitsT.dataSync() as Float32Array;
  logitsT.dispose();
  const zmax = new Float32Array(P);
  const e = new Float32Array(P * V);
  for (let r = 0; r < P; r++) {
    const o = r * V;
    let max = -Infinity;
    for (let j = 0; j < V; j++) if (z[o + j] > max) max = z[o + j];
    zmax[r] = max;
    for (let j = 0; j < V; j++) e[o + j] = Math.exp(z[o + j] - max);
  }
  return { z, zmax, e, V };
}

export interface VocabLossSpec {
  /** Target token of each rewriting row; the rows after them (at most one) are the KL row. */
  targets: number[];
  /** Scale of the summed target log-probabilities in the loss: −nllScale · Σ log p(target). */
  nllScale: number;
  /** Weight of KL(p ‖ p_init) on the KL row. */
  klFactor: number;
  /** The KL row's initial log-probabilities (step 0 has none: the KL is 0 with zero gradient). */
  klInit: Float32Array | null;
}

export interface VocabLossParts {
  nll: number;
  kl: number;
  /** Mean target probability over the rewriting rows. */
  targetProb: number;
  /** The KL row's log-probabilities (kept at step 0 as the next steps' klInit). */
  klRow: Float32Array | null;
}

/**
 * loss = nll + kl for hidden rows `h` [P, d] (after the final norm) projected by
 * `logitsOf` (h · W_U + b); `wT` is W_Uᵀ [V, d] for the backward product. `parts` receives
 * the loss's terms. Rows beyond targets.length + 1 are not allowed. With `native` (W_U and b
 * themselves) the logits and their exponentials come from one onnxruntime graph on the
 * native backend, instead of P·V calls of Math.exp (a tenth of a warm edit).
 */
export function vocabLoss(
  h: tf.Tensor2D,
  logitsOf: (h: tf.Tensor2D) => tf.Tensor2D,
  wT: () => tf.Tensor2D,
  spec: VocabLossSpec,
  parts: VocabLossParts,
  native?: { w: tf.Tensor2D; b?: tf.Tensor1D },
): tf.Scalar {
  const nR = spec.targets.length;
  const P = h.shape[0];
  if (P !== nR && P !== nR + 1) throw new Error(`vocabLoss: ${P} rows for ${nR} targets (at most one KL row)`);
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const { z: logits, zmax, e: g, V } = headExp(args[0] as tf.Tensor2D, logitsOf, native);
    let nll = 0;
    let tpSum = 0;
    let kl = 0;
    let klRow: Float32Array | null = null;
    for (let r = 0; r < P; r++) {
      const o = r * V;
      // g holds exp(logit − max) (the gradient row is a multiple of it), summed in float64: a
      // float32 running sum drops the vocabulary's tail (see runtime/logsumexp.ts).
      let sum = 0;
      for (let j = 0; j < V; j++) sum += g[o + j];
      const lse = zmax[r] + Math.log(sum);
      if (r < nR) {
        // d(−s·log p_t)/dlogit_j = s·(p_j − [j = t]).
        const t = spec.targets[r];
        const lp = logits[o + t] - lse;
        nll -= spec.nllScale * lp;
        tpSum += Math.exp(lp);
        const s = spec.nllScale / sum;
        for (let j = 0; j < V; j++) g[o + j] *= s;
        g[o + t] -= spec.nllScale;
      } else {
        klRow = new Float32Array(V);
        for (let j = 0; j < V; j++) klRow[j] = logits[o + j] - lse;
        const q = spec.klInit;
        if (q) {
          // KL = Σ p_j (log p_j − q_j); dKL/dlogit_k = p_k · ((log p_k − q_k) − KL).
          let raw = 0;
          for (let j = 0; j < V; j++) raw += (g[o + j] / sum) * (klRow[j] - q[j]);
          kl = spec.klFactor * raw;
          const f = spec.klFactor / sum;
          for (let j = 0; j < V; j++) g[o + j] = f * g[o + j] * (klRow[j] - q[j] - raw);
        } else g.fill(0, o, o + V);
      }
    }
    parts.nll = nll;
    parts.kl = kl;
    parts.targetProb = nR ? tpSum / nR : 0;
    parts.klRow = klRow;
    return {
      value: tf.scalar(nll + kl),
      gradFunc: (dy: tf.Tensor | tf.Tensor[]) => tf.mul(dy as tf.Scalar, tf.matMul(tf.tensor2d(g, [P, V]), wT())),
    };
  });
  return op(h) as tf.Scalar;
}
