/**
 * Log-sum-exp and log-softmax over a vocabulary, summed in two stages. The WASM backend's Sum
 * accumulates a row in one float32 register, so once the running sum is near 1 every later
 * term below half an ulp (6e-8) is dropped: over GPT-2's 50,257 tokens a flat tail of small
 * probabilities vanishes and p(answer) comes out too high (by up to 4e-4 on corrupted trace
 * rows, where the distribution is flat). Summing blocks of ⌈√V⌉ terms first keeps each partial
 * sum the size of its terms, so the error stays at float32 rounding (~1e-7 relative) for any V
 * and on every backend. Differentiable (pad, reshape, sum, exp, log, max).
 */
import * as tf from '@tensorflow/tfjs-core';

/** log Σⱼ exp(x[i, j]) for each row of x [R, V]. */
export function logSumExpRows(x: tf.Tensor2D): tf.Tensor1D {
  return tf.tidy(() => {
    const [r, v] = x.shape;
    const block = Math.max(1, Math.ceil(Math.sqrt(v)));
    const blocks = Math.ceil(v / block);
    const max = tf.max(x, 1, true);
    let e: tf.Tensor2D = tf.exp(tf.sub(x, max));
    if (blocks * block > v) e = tf.pad(e, [[0, 0], [0, blocks * block - v]]);
    const sum = tf.sum(tf.sum(tf.reshape(e, [r, blocks, block]), 2), 1);
    return tf.add(tf.log(sum), tf.reshape(max, [r])) as tf.Tensor1D;
  });
}

/** log softmax over each row of x [R, V], with the two-stage sum of logSumExpRows. */
export function logSoftmaxRows(x: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.sub(x, tf.reshape(logSumExpRows(x), [-1, 1])) as tf.Tensor2D);
}
