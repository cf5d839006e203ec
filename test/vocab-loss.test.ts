/**
 * engine/edit/vocab-loss.ts against the op-by-op loss it replaces in rome.ts (log-softmax,
 * one-hot target sum, KL to the step-0 distribution): the value, its parts and the gradient
 * with respect to the hidden rows, on a random head and on tinyworld's own unembedding.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../engine/runtime/backend.js';
import { unembed } from '../engine/runtime/decoder-forward.js';
import { unembedOf } from '../engine/model/unembedding.js';
import { vocabLoss, type VocabLossParts } from '../engine/edit/vocab-loss.js';
import { Rng } from '../engine/util/rng.js';
import { maxAbsDiff } from './helpers/golden.js';
import { model, TEST_BACKEND } from './helpers/model.js';

function randn(shape: [number, number], seed: number, scale = 1): tf.Tensor2D {
  const rng = new Rng(seed);
  return tf.tensor2d(Float32Array.from({ length: shape[0] * shape[1] }, () => scale * rng.normal()), shape);
}

/** The reference: rome.ts's op-by-op loss. */
function opByOp(h: tf.Tensor2D, w: tf.Tensor2D, targets: number[], nllScale: number, klFactor: number, klInit: tf.Tensor2D | null): tf.Scalar {
  const V = w.shape[1];
  const P = h.shape[0];
  const logp = tf.logSoftmax(tf.matMul(h, w));
  const oh = tf.cast(tf.oneHot(targets, V), 'float32');
  const lpT = tf.sum(tf.mul(tf.slice(logp, [0, 0], [targets.length, V]), oh), 1);
  const nll = tf.mul(tf.sum(lpT), -nllScale);
  if (!klInit || P === targets.length) return nll as tf.Scalar;
  const row = tf.slice(logp, [P - 1, 0], [1, V]);
  return tf.add(nll, tf.mul(tf.sum(tf.mul(tf.exp(row), tf.sub(row, klInit))), klFactor)) as tf.Scalar;
}

function compare(h: tf.Tensor2D, w: tf.Tensor2D, targets: number[], klInit: Float32Array | null, tol: number, native?: { w: tf.Tensor2D }): void {
  const nllScale = 1 / targets.length;
  const klFactor = 0.0625;
  const parts: VocabLossParts = { nll: 0, kl: 0, targetProb: 0, klRow: null };
  const wT = tf.transpose(w) as tf.Tensor2D;
  const spec = { targets, nllScale, klFactor, klInit };
  const fused = tf.valueAndGrad((x: tf.Tensor) => vocabLoss(x as tf.Tensor2D, (y) => tf.matMul(y, w), () => wT, spec, parts, native))(h);
  const klT = klInit ? tf.tensor2d(klInit, [1, klInit.length]) : null;
  const ref = tf.valueAndGrad((x: tf.Tensor) => opByOp(x as tf.Tensor2D, w, targets, nllScale, klFactor, klT))(h);
  const [fv, rv] = [fused.value.dataSync()[0], ref.value.dataSync()[0]];
  assert.ok(Math.abs(fv - rv) <= tol * Math.max(1, Math.abs(rv)), `loss ${fv} vs ${rv}`);
  assert.ok(Math.abs(parts.nll + parts.kl - fv) < 1e-6 * Math.max(1, Math.abs(fv)), 'parts add up to the value');
  const gf = fused.grad.dataSync() as Float32Array;
  const gr = ref.grad.dataSync() as Float32Array;
  const scale = Math.max(...gr.map(Math.abs));
  assert.ok(scale > 0, 'the reference gradient is not zero');
  assert.ok(maxAbsDiff(gf, gr) <= tol * scale, `gradient differs by ${maxAbsDiff(gf, gr)} (scale ${scale})`);
  if (h.shape[0] > targets.length) assert.equal(parts.klRow?.length, w.shape[1]);
  tf.dispose([fused.value, fused.grad, ref.value, ref.grad, wT, ...(klT ? [klT] : [])]);
}

test('fused vocabulary loss = op-by-op loss: random head, with and without the KL row', async () => {
  await selectBackend(TEST_BACKEND);
  const [P, d, V] = [7, 16, 3001];
  const w = randn([d, V], 1, 0.5);
  const h = randn([P, d], 2);
  const targets = [5, 17, 3000, 0, 1234, 42];
  compare(h, w, targets, null, 1e-5); // step 0: the KL row carries no loss
  const klInit = tf.tidy(() => tf.logSoftmax(tf.matMul(randn([1, d], 3), w))).dataSync() as Float32Array;
  compare(h, w, targets, klInit, 1e-5);
  const noKl = randn([P - 1, d], 4);
  compare(noKl, w, targets, null, 1e-5);
  tf.dispose([w, h, noKl]);
});

test('fused vocabulary loss = op-by-op loss on tinyworld’s unembedding (50,257 tokens)', async () => {
  const m = await model();
  const d = m.config.dModel;
  const h = randn([4, d], 5);
  const w = unembedOf(m.weights);
  const targets = [11, 5000, 40000];
  const klInit = tf.tidy(() => tf.logSoftmax(unembed(m, randn([1, d], 6)))).dataSync() as Float32Array;
  // The reference sums 50,257 float32 terms in one register (runtime/logsumexp.ts); the fused
  // op sums in float64, so they agree to float32 rounding of a long sum, not bit for bit.
  compare(h, w, targets, klInit, 1e-4);
  // The same through the onnxruntime loss graph (logits, log-softmax, target log-probabilities
  // and scaled probabilities) where the native backend runs; elsewhere the option falls back to
  // the host loop, checked again.
  compare(h, w, targets, klInit, 1e-4, { w });
  // Step 0 (no KL yet) and rewriting rows alone, through the same head.
  compare(h, w, targets, null, 1e-4, { w });
  const rewriteOnly = tf.slice(h, [0, 0], [targets.length, -1]) as tf.Tensor2D;
  compare(rewriteOnly, w, targets, null, 1e-4, { w });
  tf.dispose([h, rewriteOnly]);
});

test('fused vocabulary loss refuses more than one KL row', async () => {
  await selectBackend(TEST_BACKEND);
  const w = randn([4, 10], 7);
  const h = randn([4, 4], 8);
  assert.throws(() => vocabLoss(h, (y) => tf.matMul(y, w), () => tf.transpose(w), { targets: [1, 2], nllScale: 1, klFactor: 1, klInit: null }, { nll: 0, kl: 0, targetProb: 0, klRow: null }), /4 rows for 2 targets/);
  tf.dispose([w, h]);
});
