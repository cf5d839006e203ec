/**
 * The unembedding [d, V]: the transpose of a model's output embedding `head` [V, d]
 * (model/decoder.ts), built the first time something needs that layout and kept until the model
 * is freed. Vocabulary queries (traces, probabilities) multiply by `head`'s rows directly and
 * never build it; plain WASM's products (a transposed matmul is slow there) and the editing code's
 * frozen-weight gradients (edit/fastgrad.ts) do.
 *
 * Keyed by the head tensor, not the weights object: edits make views of the weights with other
 * blocks ({ ...weights, blocks }), which share one head and so one transpose.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { DecoderWeights } from './decoder.js';
import { filledTensor, heapData, transposeInto } from './adapters/read.js';

const built = new WeakMap<tf.Tensor2D, tf.Tensor2D>();

/** head [V, d] transposed to [d, V], built on first use (outside any tidy: it lives as long as the head). */
export function unembedOf(w: Pick<DecoderWeights, 'head'>): tf.Tensor2D {
  const head = w.head;
  const have = built.get(head);
  if (have && !have.isDisposed) return have;
  if (head.isDisposed) throw new Error('the model was freed: its output embedding is disposed');
  const [v, d] = head.shape;
  let t: tf.Tensor2D;
  if (tf.getBackend() === 'wasm') {
    // Transposed on the heap in tiles (read.ts: transposeInto): WASM's Transpose kernel takes
    // 2–5× as long on a [vocab, d] matrix. The source view is taken inside fill, after the
    // destination's allocation (which may grow the heap and detach earlier views).
    t = filledTensor([d, v], (dst) => transposeInto(heapData(head)!, v, d, dst)) as tf.Tensor2D;
  } else {
    t = tf.transpose(head);
  }
  tf.keep(t);
  built.set(head, t);
  return t;
}

/** Whether unembedOf has built (and still holds) the transpose of w's head (tests check the laziness with it). */
export function unembedBuilt(w: Pick<DecoderWeights, 'head'>): boolean {
  const t = built.get(w.head);
  return !!t && !t.isDisposed;
}

/** Frees the transpose unembedOf built for w's head, if any (disposeModel). */
export function disposeUnembed(w: Pick<DecoderWeights, 'head'>): void {
  const t = built.get(w.head);
  if (t && !t.isDisposed) t.dispose();
  built.delete(w.head);
}
