/**
 * The vocabulary end of the v* / z objective (rome-spec §2.7) as one differentiable op.
 *
 * The loss needs, per row, only the target token's log-probability (rewriting rows) or the
 * row's whole distribution (the KL row), yet written in tfjs ops it runs log-softmax, exp,
 * a one-hot product, slices and sums over rows × vocabulary, each again in the backward pass:
 * on tinyworld that was a third of a warm ROME edit's kernel time, more than the products
 * themselves. Here the logits come from the one matmul and the rows' log-probabilities and
 * dL/dlogits are made in one pass (natively, or on the host with the log-sum-exp in float64);
 * the backward pass is the one product dL/dlogits · Wᵀ. Values and gradients equal the op-by-op
 * form to float32 rounding (test/vocab-loss.test.ts).
 *
 * On the native backend the whole row work is one onnxruntime graph (lossGraph): logits,
 * log-softmax, each row's target log-probability and the scaled probabilities, written straight
 * into the WASM tensor the backward product reads; the host only corrects the targets' entries
 * and the KL row (V values). Before, the graph handed the host logits and exponentials
 * (2·P·V floats, each also copied by the binding), and JS loops summed and scaled them: 35–40%
 * of a warm tinyworld edit's v* time.
 *
 * Elsewhere it reads the logits synchronously, so it is for backends with synchronous reads
 * (native, wasm, cpu, node); rome.ts keeps the op-by-op form for WebGPU.
 */
import * as tf from '@tensorflow/tfjs-core';
import { nativeMatMulInstalled } from '../runtime/native/matmul-kernel.js';
import { NativeGraph, ortTensor } from '../runtime/native/ort.js';
import { SLICE_TO_END } from '../runtime/native/onnx-graph.js';
import { nativeHeadFeeds } from '../runtime/vocab.js';
import { filledTensor } from '../model/adapters/read.js';

/**
 * The native loss rows: z = x·W (+ b), ls = log-softmax(z) (MLAS: vectorised, lane-wise partial
 * sums; 2.9e-6 from float64 on GPT-2's vocabulary, runtime/vocab.ts), lp = ls[row, target],
 * g = exp(ls)·scale[row]; with `lastRow` also the last row's ls (the KL row).
 */
const graphs = new Map<string, NativeGraph>();
function lossGraph(bias: boolean, v: number, lastRow: boolean): NativeGraph {
  const key = `${bias}:${v}:${lastRow}`;
  let g = graphs.get(key);
  if (!g) {
    g = new NativeGraph(
      [
        { op: 'MatMul', inputs: ['x', 'w'], outputs: [bias ? 'z0' : 'z'] },
        ...(bias ? [{ op: 'Add', inputs: ['z0', 'b'], outputs: ['z'] }] : []),
        { op: 'LogSoftmax', inputs: ['z'], outputs: ['ls'], attrs: { axis: 1 } },
        { op: 'GatherElements', inputs: ['ls', 'target'], outputs: ['lp'], attrs: { axis: 1 } },
        { op: 'Exp', inputs: ['ls'], outputs: ['p'] },
        { op: 'Mul', inputs: ['p', 'scale'], outputs: ['g'] },
        ...(lastRow ? [{ op: 'Slice', inputs: ['ls', 'c_last', 'c_end', 'c_axis0'], outputs: ['last'] }] : []),
      ],
      [
        { name: 'x', type: 'float32', shape: ['n', 'd'] },
        { name: 'w', type: 'float32', shape: ['d', v] },
        ...(bias ? [{ name: 'b', type: 'float32' as const, shape: [v] }] : []),
        { name: 'target', type: 'int64', shape: ['n', 1] },
        { name: 'scale', type: 'float32', shape: ['n', 1] },
      ],
      [
        { name: 'g', type: 'float32', shape: ['n', v] },
        { name: 'lp', type: 'float32', shape: ['n', 1] },
        ...(lastRow ? [{ name: 'last', type: 'float32' as const, shape: [1, v] }] : []),
      ],
      lastRow
        ? [
            { name: 'c_last', type: 'int64', dims: [1], values: [-1] },
            { name: 'c_end', type: 'int64', dims: [1], values: [SLICE_TO_END] },
            { name: 'c_axis0', type: 'int64', dims: [1], values: [0] },
          ]
        : [],
    );
    graphs.set(key, g);
  }
  return g;
}

/**
 * What the loss needs of the rows: each row's target log-probability, g = p·scale[row] for
 * every row (the rewriting rows' gradient but for their target's entry; the KL row's p), and the
 * KL row's log-probabilities.
 */
interface LossRows {
  g: Float32Array;
  lp: ArrayLike<number>;
  last: Float32Array | null;
}

/** The rows on the host: logits from `logitsOf`, log-sum-exp summed in float64. */
function hostRows(x: tf.Tensor2D, logitsOf: (h: tf.Tensor2D) => tf.Tensor2D, targets: number[], scale: number[], lastRow: boolean): LossRows {
  const P = x.shape[0];
  const logitsT = logitsOf(x);
  const V = logitsT.shape[1];
  const z = logitsT.dataSync() as Float32Array;
  logitsT.dispose();
  const g = new Float32Array(P * V);
  const lp = new Float64Array(P);
  let last: Float32Array | null = null;
  for (let r = 0; r < P; r++) {
    const o = r * V;
    let max = -Infinity;
    for (let j = 0; j < V; j++) if (z[o + j] > max) max = z[o + j];
    // Summed in float64: a float32 running sum drops the vocabulary's tail (see runtime/logsumexp.ts).
    let sum = 0;
    for (let j = 0; j < V; j++) sum += g[o + j] = Math.exp(z[o + j] - max);
    const lse = max + Math.log(sum);
    const f = scale[r] / sum;
    for (let j = 0; j < V; j++) g[o + j] *= f;
    lp[r] = z[o + targets[r]] - lse;
    if (lastRow && r === P - 1) last = Float32Array.from(z.subarray(o, o + V), (v) => v - lse);
  }
  return { g, lp, last };
}

/**
 * Turns the rows into the loss and its gradient dL/dlogits, in place in `rows.g`; returns the
 * loss's parts. Rewriting rows: d(−s·log p_t)/dlogit_j = s·(p_j − [j = t]). The KL row:
 * KL = Σ p_j (log p_j − q_j), dKL/dlogit_k = p_k · ((log p_k − q_k) − KL) (zero at step 0, no q).
 */
function finishRows(spec: VocabLossSpec, P: number, V: number, rows: LossRows): Omit<VocabLossParts, 'klRow'> {
  const nR = spec.targets.length;
  const { g, lp } = rows;
  let nll = 0;
  let tpSum = 0;
  for (let r = 0; r < nR; r++) {
    nll -= spec.nllScale * lp[r];
    tpSum += Math.exp(lp[r]);
    g[r * V + spec.targets[r]] -= spec.nllScale;
  }
  let kl = 0;
  if (P > nR) {
    const o = (P - 1) * V;
    const q = spec.klInit;
    const last = rows.last!;
    if (q) {
      let raw = 0;
      for (let j = 0; j < V; j++) raw += g[o + j] * (last[j] - q[j]);
      kl = spec.klFactor * raw;
      for (let j = 0; j < V; j++) g[o + j] = spec.klFactor * g[o + j] * (last[j] - q[j] - raw);
    } else g.fill(0, o, o + V);
  }
  return { nll, kl, targetProb: nR ? tpSum / nR : 0 };
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
 * themselves) the rows come from the native loss graph (lossGraph) on the native backend.
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
  const lastRow = P > nR;
  // The KL row's target is a placeholder (its entry is not read) and its scale 1: g holds its p.
  const targets = lastRow ? [...spec.targets, 0] : spec.targets;
  const scale = targets.map((_, r) => (r < nR ? spec.nllScale : 1));
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const x = args[0] as tf.Tensor2D;
    const save = args[1] as tf.GradSaveFunc;
    let got: Omit<VocabLossParts, 'klRow'>;
    let last: Float32Array | null = null;
    let gT: tf.Tensor2D;
    if (native && nativeMatMulInstalled() && tf.getBackend() === 'wasm' && x.dtype === 'float32') {
      const V = native.w.shape[1];
      // g goes straight into the tensor the backward product reads (its heap block, allocated first).
      gT = filledTensor([P, V], (g) => {
        const { feeds, threads } = nativeHeadFeeds(x, native.w, native.b);
        feeds.target = ortTensor('int64', BigInt64Array.from(targets, (t) => BigInt(t)), [P, 1]);
        feeds.scale = ortTensor('float32', Float32Array.from(scale), [P, 1]);
        const lp = new Float32Array(P);
        last = lastRow ? new Float32Array(V) : null;
        const into: Record<string, ReturnType<typeof ortTensor>> = { g: ortTensor('float32', g, [P, V]), lp: ortTensor('float32', lp, [P, 1]) };
        if (last) into.last = ortTensor('float32', last, [1, V]);
        lossGraph(!!native.b, V, lastRow).runInPlace(feeds, into, threads);
        got = finishRows(spec, P, V, { g, lp, last });
      }) as tf.Tensor2D;
    } else {
      const rows = hostRows(x, logitsOf, targets, scale, lastRow);
      const V = rows.g.length / P;
      got = finishRows(spec, P, V, rows);
      last = rows.last;
      gT = tf.tensor2d(rows.g, [P, V]);
    }
    Object.assign(parts, got!, { klRow: last });
    save([gT]);
    return {
      value: tf.scalar(got!.nll + got!.kl),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => tf.mul(dy as tf.Scalar, tf.matMul(saved[0], wT())),
    };
  });
  return op(h) as tf.Scalar;
}
