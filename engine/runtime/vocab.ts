/**
 * Probability queries over the vocabulary: for rows of final-normalised hidden states, the
 * log-probability of one target token per row, plus each row's most likely token. Traces,
 * probes and NLL evaluation need only these, never the rows × V probabilities.
 *
 * On the 'native' backend the projection, the log-softmax, the target pick and the argmax are one
 * onnxruntime graph reading the hidden rows and the unembedding in place in the WASM heap: only
 * 3 numbers per row come back (1 for targetLogprobs), and no rows × V tensor is made in tfjs
 * (the logits stay in onnxruntime's arena). Elsewhere the same quantities come from tfjs ops.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { DecoderModel } from './decoder-forward.js';
import { unembed } from './decoder-forward.js';
import { logSumExpRows } from './logsumexp.js';
import { heapView, nativeMatMulInstalled } from './native/matmul-kernel.js';
import { NativeGraph, ortTensor, threadsForFlops } from './native/ort.js';

export interface VocabQuery {
  /** log p(target[r]) for each row. */
  logprob: Float32Array;
  /** Each row's most likely token and its log-probability. */
  argmax: Int32Array;
  maxLogprob: Float32Array;
}

const graphs = new Map<string, NativeGraph>();

/**
 * The native query graph for a vocabulary of v tokens: logits from the output embedding's rows
 * as stored (w [v, d], Gemm with transB: MLAS packs either layout of B the same way and gives the
 * same bits, 5–15% faster than MatMul on the [d, v] transpose, which a trace then never builds),
 * onnxruntime's LogSoftmax (MLAS:
 * vectorised exp with lane-wise partial sums, 2.9e-6 from the float64 log-probability on
 * 128 × 50,257 random logits), the target's entry; with `withMax` also each row's argmax and its
 * log-probability. LogSoftmax replaced a two-stage ReduceLogSumExp (a single one drops the small
 * tail terms once the running sum nears 1, 5e-5 off): that op exponentiates element by element
 * and took ~10× as long per row (3 vs 32–36 ms for 128 rows of GPT-2's vocabulary).
 */
function queryGraph(bias: boolean, v: number, withMax: boolean): NativeGraph {
  const key = `${bias}:${v}:${withMax}`;
  let g = graphs.get(key);
  if (!g) {
    g = new NativeGraph(
      [
        { op: 'Gemm', inputs: ['x', 'w'], outputs: [bias ? 'z0' : 'z'], attrs: { transB: 1 } },
        ...(bias ? [{ op: 'Add', inputs: ['z0', 'b'], outputs: ['z'] }] : []),
        { op: 'LogSoftmax', inputs: ['z'], outputs: ['ls'], attrs: { axis: 1 } },
        { op: 'GatherElements', inputs: ['ls', 'target'], outputs: ['logprob'], attrs: { axis: 1 } },
        ...(withMax
          ? [
              { op: 'ReduceMax', inputs: ['ls'], outputs: ['maxLogprob'], attrs: { axes: [1], keepdims: 1 } },
              { op: 'ArgMax', inputs: ['z'], outputs: ['argmax'], attrs: { axis: 1, keepdims: 1 } },
            ]
          : []),
      ],
      [
        { name: 'x', type: 'float32', shape: ['n', 'd'] },
        { name: 'w', type: 'float32', shape: [v, 'd'] },
        ...(bias ? [{ name: 'b', type: 'float32' as const, shape: [v] }] : []),
        { name: 'target', type: 'int64', shape: ['n', 1] },
      ],
      [
        { name: 'logprob', type: 'float32', shape: ['n', 1] },
        ...(withMax
          ? [
              { name: 'maxLogprob', type: 'float32' as const, shape: ['n', 1] },
              { name: 'argmax', type: 'int64' as const, shape: ['n', 1] },
            ]
          : []),
      ],
    );
    graphs.set(key, g);
  }
  return g;
}

function checkTargets(targets: ArrayLike<number>, n: number, vocab: number): void {
  if (targets.length !== n) throw new Error(`vocabulary query: ${targets.length} targets for ${n} rows`);
  for (let i = 0; i < n; i++) {
    const t = targets[i];
    if (!Number.isInteger(t) || t < 0 || t >= vocab) throw new Error(`vocabulary query: target ${t} of row ${i} is not a token id below ${vocab}`);
  }
}

/**
 * The inputs every native head graph shares — hidden rows x [n, d], the vocabulary matrix w in
 * the layout the graph reads (the output embedding [v, d] for queries, the unembedding [d, v] for
 * the edit loss: vocab-loss.ts) and the bias b [v], read in place in the WASM heap — and the
 * thread count for the n·d·v product.
 */
export function nativeHeadFeeds(
  rows: tf.Tensor2D,
  w: tf.Tensor2D,
  bias: tf.Tensor1D | undefined,
): { feeds: Record<string, ReturnType<typeof ortTensor>>; threads: number } {
  const backend = tf.backend() as unknown as Parameters<typeof heapView>[0];
  const feeds: Record<string, ReturnType<typeof ortTensor>> = {
    x: ortTensor('float32', heapView(backend, rows), rows.shape),
    w: ortTensor('float32', heapView(backend, w), w.shape),
  };
  if (bias) feeds.b = ortTensor('float32', heapView(backend, bias), bias.shape);
  return { feeds, threads: threadsForFlops(2 * rows.shape[0] * w.size) };
}

/**
 * Rows per native query call. The graph's intermediates are rows × V floats each (logits and
 * log-probabilities: 25 MB a piece at 128 rows of GPT-2's vocabulary); onnxruntime's
 * arena keeps them for the next call. One call over hundreds of rows first has to fault in
 * several hundred MB of fresh pages (measured on tinyworld: 480 rows 520–630 ms on the first
 * call, 124–139 ms after), while 128-row calls reuse one small arena at the same cost per row
 * (0.27 vs 0.26 ms) and keep the memory bounded on large vocabularies.
 */
const QUERY_ROWS = 128;

function nativeQuery(m: DecoderModel, rows: tf.Tensor2D, targets: ArrayLike<number>, withMax = true): VocabQuery {
  const w = m.weights;
  const [n, d] = rows.shape;
  const v = w.head.shape[0];
  const { feeds, threads } = nativeHeadFeeds(rows, w.head, w.unembedBias);
  const graph = queryGraph(!!w.unembedBias, v, withMax);
  const x = feeds.x.data as Float32Array;
  const result: VocabQuery = { logprob: new Float32Array(n), maxLogprob: new Float32Array(n), argmax: new Int32Array(n) };
  for (let r0 = 0; r0 < n; r0 += QUERY_ROWS) {
    const k = Math.min(QUERY_ROWS, n - r0);
    const chunk: typeof feeds = { ...feeds, x: ortTensor('float32', x.subarray(r0 * d, (r0 + k) * d), [k, d]) };
    chunk.target = ortTensor('int64', BigInt64Array.from(Array.from({ length: k }, (_, i) => BigInt(targets[r0 + i]))), [k, 1]);
    const out = graph.run(chunk, withMax ? { logprob: null, maxLogprob: null, argmax: null } : { logprob: null }, threads);
    result.logprob.set(out.logprob.data as Float32Array, r0);
    if (!withMax) continue;
    result.maxLogprob.set(out.maxLogprob.data as Float32Array, r0);
    const am = out.argmax.data as BigInt64Array;
    for (let i = 0; i < k; i++) result.argmax[r0 + i] = Number(am[i]);
  }
  return result;
}

function tfjsTensors(m: DecoderModel, rows: tf.Tensor2D, targets: ArrayLike<number>): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const n = rows.shape[0];
  const v = m.weights.head.shape[0];
  return tf.tidy(() => {
    const z = unembed(m, rows);
    const lse = logSumExpRows(z); // two-stage sum: WASM's one-register Sum drops the tail (logsumexp.ts)
    const flat = Int32Array.from({ length: n }, (_, r) => r * v + targets[r]);
    const zt = tf.gather(tf.reshape(z, [-1]), tf.tensor1d(flat, 'int32'));
    return [tf.sub(zt, lse), tf.sub(tf.max(z, 1), lse), tf.argMax(z, 1)];
  });
}

function tfjsQuery(m: DecoderModel, rows: tf.Tensor2D, targets: ArrayLike<number>): VocabQuery {
  const [lp, mx, am] = tfjsTensors(m, rows, targets);
  try {
    return {
      logprob: Float32Array.from(lp.dataSync() as Float32Array),
      maxLogprob: Float32Array.from(mx.dataSync() as Float32Array),
      argmax: Int32Array.from(am.dataSync() as Int32Array),
    };
  } finally {
    tf.dispose([lp, mx, am]);
  }
}

/**
 * log p(targets[r] | row r), each row's argmax token and its log-probability, for rows of
 * final-normalised hidden states [n, d] (rome-spec §1.7: the trace score is exp of logprob).
 */
export function vocabQuery(m: DecoderModel, rows: tf.Tensor2D, targets: ArrayLike<number>): VocabQuery {
  const n = rows.shape[0];
  const v = m.weights.head.shape[0];
  checkTargets(targets, n, v);
  if (n === 0) return { logprob: new Float32Array(0), argmax: new Int32Array(0), maxLogprob: new Float32Array(0) };
  if (useNative(rows)) return nativeQuery(m, rows, targets);
  return tfjsQuery(m, rows, targets);
}

/**
 * vocabQuery with asynchronous reads (data(), not dataSync()): the form the trace uses, because
 * the WebGPU backend can only read asynchronously in Node. On the native backend the graph is
 * synchronous anyway; elsewhere only the 3 × n results are read back.
 */
export async function vocabQueryAsync(m: DecoderModel, rows: tf.Tensor2D, targets: ArrayLike<number>): Promise<VocabQuery> {
  const n = rows.shape[0];
  const v = m.weights.head.shape[0];
  checkTargets(targets, n, v);
  if (n === 0) return { logprob: new Float32Array(0), argmax: new Int32Array(0), maxLogprob: new Float32Array(0) };
  if (useNative(rows)) return nativeQuery(m, rows, targets);
  const [lp, mx, am] = tfjsTensors(m, rows, targets);
  try {
    const [a, b, c] = await Promise.all([lp.data(), mx.data(), am.data()]);
    return { logprob: Float32Array.from(a as Float32Array), maxLogprob: Float32Array.from(b as Float32Array), argmax: Int32Array.from(c as Int32Array) };
  } finally {
    tf.dispose([lp, mx, am]);
  }
}

function useNative(rows: tf.Tensor2D): boolean {
  return nativeMatMulInstalled() && tf.getBackend() === 'wasm' && rows.dtype === 'float32';
}

/** log p(targets[r] | row r) alone: on the native backend a graph without the argmax and the row maxima. */
export function targetLogprobs(m: DecoderModel, rows: tf.Tensor2D, targets: ArrayLike<number>): Float32Array {
  const n = rows.shape[0];
  checkTargets(targets, n, m.weights.head.shape[0]);
  if (n === 0) return new Float32Array(0);
  return useNative(rows) ? nativeQuery(m, rows, targets, false).logprob : vocabQuery(m, rows, targets).logprob;
}

/** targetLogprobs with asynchronous reads off the native backend (the trace's answer probabilities). */
export async function targetLogprobsAsync(m: DecoderModel, rows: tf.Tensor2D, targets: ArrayLike<number>): Promise<Float32Array> {
  const n = rows.shape[0];
  checkTargets(targets, n, m.weights.head.shape[0]);
  if (n === 0) return new Float32Array(0);
  return useNative(rows) ? nativeQuery(m, rows, targets, false).logprob : (await vocabQueryAsync(m, rows, targets)).logprob;
}
