/**
 * The 'native' backend (engine/runtime/native): onnxruntime's products inside tfjs's WASM
 * backend. Checked against the WASM backend's own kernel in the same process, on every
 * transposition, rank and broadcast the engine uses, forward and through gradients. Skipped
 * (with the reason) where onnxruntime-node cannot load; the rest of the suite then runs on WASM.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { probeBackends, selectBackend } from '../engine/runtime/backend.js';
import { nativeMatMulInstalled, nativeStats } from '../engine/runtime/native/matmul-kernel.js';
import { Rng } from '../engine/util/rng.js';
import { nativeBiasGeluNew, nativeLayerNorm, nativeLinear } from '../engine/runtime/native/forward-ops.js';
import { activation, norm } from '../engine/runtime/decoder-forward.js';
import { NativeGraph, ortTensor } from '../engine/runtime/native/ort.js';
import { tidyData } from '../engine/util/scope.js';
import { maxAbsDiff } from './helpers/golden.js';

const status = probeBackends().find((b) => b.name === 'native')!;
const skip = status.available ? false : `native backend unavailable: ${status.reason}`;

function randn(shape: number[], seed: number): tf.Tensor {
  const rng = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(Float32Array.from({ length: n }, () => rng.normal()), shape);
}

/** Runs fn on 'wasm' and on 'native' with the same inputs; returns both results. */
async function both(fn: () => tf.Tensor): Promise<{ wasm: Float32Array; native: Float32Array; calls: number }> {
  await selectBackend('wasm');
  const wasm = tidyData(fn);
  await selectBackend('native');
  const before = nativeStats.calls;
  const native = tidyData(fn);
  return { wasm, native, calls: nativeStats.calls - before };
}

const CASES: Array<{ a: number[]; b: number[]; ta?: boolean; tb?: boolean; what: string }> = [
  { a: [64, 256], b: [256, 512], what: 'weight product' },
  { a: [64, 256], b: [512, 256], tb: true, what: 'transposed B' },
  { a: [256, 64], b: [256, 512], ta: true, what: 'transposed A (weight gradient)' },
  { a: [256, 64], b: [512, 256], ta: true, tb: true, what: 'both transposed' },
  { a: [2, 4, 40, 64], b: [2, 4, 40, 64], tb: true, what: 'batched attention scores' },
  { a: [2, 4, 40, 40], b: [2, 4, 40, 64], what: 'batched attention context' },
  { a: [3, 2, 4, 16, 64], b: [1, 2, 4, 40, 64], tb: true, what: 'broadcast shared past (fast trace)' },
  { a: [5, 40, 256], b: [256, 300], what: 'rank 3 × rank 2' },
];

for (const c of CASES) {
  test(`native product matches the WASM kernel: ${c.what} ${JSON.stringify(c.a)}·${JSON.stringify(c.b)}`, { skip }, async () => {
    const { wasm, native, calls } = await both(() => tf.matMul(randn(c.a, 1), randn(c.b, 2), c.ta, c.tb));
    assert.equal(calls, 1, 'the product ran on onnxruntime');
    const scale = Math.max(...Array.from(wasm, Math.abs));
    assert.ok(maxAbsDiff(native, wasm) <= 1e-5 * scale, `max diff ${maxAbsDiff(native, wasm)} (scale ${scale})`);
  });
}

test('a preallocated output is written in place, and what the binding hands back is a copy (runInPlace reads nothing back)', { skip }, () => {
  const g = new NativeGraph([{ op: 'Relu', inputs: ['x'], outputs: ['y'] }], [{ name: 'x', type: 'float32', shape: ['n'] }], [{ name: 'y', type: 'float32', shape: ['n'] }]);
  try {
    const x = Float32Array.from({ length: 4096 }, (_, i) => i - 2048);
    // A view into a larger buffer, as the engine's views of the WASM heap are.
    const backing = new Float32Array(3 * 4096).fill(-7);
    const y = backing.subarray(4096, 2 * 4096);
    const res = g.run({ x: ortTensor('float32', x, [4096]) }, { y: ortTensor('float32', y, [4096]) });
    assert.deepEqual(Array.from(y), Array.from(x, (v) => Math.max(0, v)), 'onnxruntime wrote the result into the view');
    assert.equal(backing[4095], -7, 'nothing before the view was touched');
    assert.equal(backing[2 * 4096], -7, 'nothing after it either');
    const got = res.y.data as Float32Array;
    assert.notEqual(got.buffer, backing.buffer, 'the returned tensor is a copy in its own buffer');
    y.fill(0);
    g.runInPlace({ x: ortTensor('float32', x, [4096]) }, { y: ortTensor('float32', y, [4096]) });
    assert.equal(y[4095], 2047);
  } finally {
    g.dispose();
  }
});

test('gradients through native products match the WASM backend', { skip }, async () => {
  const f = (x: tf.Tensor) => {
    const w1 = randn([128, 256], 3);
    const w2 = randn([256, 64], 4);
    const h = tf.sigmoid(tf.matMul(tf.reshape(x, [32, 128]), w1));
    const att = tf.matMul(tf.reshape(h, [4, 8, 256]), tf.reshape(h, [4, 8, 256]), false, true);
    return tf.sum(tf.mul(tf.matMul(tf.reshape(tf.matMul(tf.softmax(att), tf.reshape(h, [4, 8, 256])), [32, 256]), w2), 0.01));
  };
  const { wasm, native, calls } = await both(() => tf.grad(f)(randn([32, 128], 5)));
  assert.ok(calls >= 4, `${calls} native products in forward + backward`);
  const scale = Math.max(...Array.from(wasm, Math.abs));
  assert.ok(maxAbsDiff(native, wasm) <= 1e-4 * scale, `max diff ${maxAbsDiff(native, wasm)} (scale ${scale})`);
});

test('selecting wasm restores its own kernel; native installs the override again', { skip }, async () => {
  await selectBackend('wasm');
  assert.equal(nativeMatMulInstalled(), false);
  const before = nativeStats.calls;
  tidyData(() => tf.matMul(randn([64, 256], 1), randn([256, 512], 2)));
  assert.equal(nativeStats.calls, before, 'no native call on wasm');
  await selectBackend('native');
  assert.equal(nativeMatMulInstalled(), true);
  assert.equal(tf.getBackend(), 'wasm');
});

test('tiny and non-float products fall back to the WASM kernel with the same result', { skip }, async () => {
  const { wasm, native, calls } = await both(() => tf.matMul(randn([2, 3], 1), randn([3, 4], 2)));
  assert.equal(calls, 0);
  assert.deepEqual(Array.from(native), Array.from(wasm));
});

test('the fused vocabulary query equals log-softmax of the full logits, on native and on wasm', async () => {
  const { model } = await import('./helpers/model.js');
  const { vocabQuery, targetLogprobs, targetLogprobsAsync } = await import('../engine/runtime/vocab.js');
  const { forward } = await import('../engine/runtime/forward.js');
  const { padBatch } = await import('../engine/runtime/batch.js');
  const m = await model();
  const ids = m.tokenizer.encode('The capital of France is');
  const batch = padBatch([ids, ids.slice(0, 3), ids.slice(1)], 'right');
  const targets = [ids[1], 7, m.config.vocabSize - 1];
  for (const name of status.available ? (['wasm', 'native'] as const) : (['wasm'] as const)) {
    await selectBackend(name);
    const r = forward(m, batch, { logitsAt: 'last' });
    const rows = tf.tidy(() => {
      const last = [ids.length - 1, 2, ids.length - 2];
      const h = tf.reshape(r.hidden!, [-1, m.config.dModel]);
      return tf.gather(h, tf.tensor1d(last.map((p, i) => i * batch.width + p), 'int32')) as tf.Tensor2D;
    });
    const ref = tidyData(() => tf.logSoftmax(r.logits!));
    const q = vocabQuery(m, rows, targets);
    // The answer-only form (traces) gives the same log-probabilities, synchronously and not.
    assert.deepEqual(Array.from(targetLogprobs(m, rows, targets)), Array.from(q.logprob), `${name}: targetLogprobs`);
    assert.deepEqual(Array.from(await targetLogprobsAsync(m, rows, targets)), Array.from(q.logprob), `${name}: targetLogprobsAsync`);
    tf.dispose([rows, r.logits!, r.hidden!]);
    const V = m.config.vocabSize;
    targets.forEach((t, i) => {
      const row = ref.subarray(i * V, (i + 1) * V);
      let best = 0;
      for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j;
      assert.ok(Math.abs(q.logprob[i] - row[t]) < 1e-4, `${name} row ${i}: ${q.logprob[i]} vs ${row[t]}`);
      assert.equal(q.argmax[i], best, `${name} row ${i} argmax`);
      assert.ok(Math.abs(q.maxLogprob[i] - row[best]) < 1e-4, `${name} row ${i} max`);
    });
    const zero = tf.zeros([1, m.config.dModel]) as tf.Tensor2D;
    assert.throws(() => vocabQuery(m, zero, [V]), new RegExp(`target ${V} of row 0 is not a token id below ${V}`));
    assert.throws(() => targetLogprobs(m, zero, [-1]), /target -1 of row 0 is not a token id/);
    zero.dispose();
  }
});

test('weights outside the WASM heap (host weights): same forward and trace, no edit, wasm refused while loaded', { skip }, async () => {
  const { loadModel, disposeModel } = await import('../engine/model/load.js');
  const { withHostMatrices } = await import('../engine/model/adapters/read.js');
  const { openCheckpoint } = await import('../engine/model/checkpoint.js');
  const { hostWeightsLive, isHostWeight } = await import('../engine/runtime/native/host-weights.js');
  const { forward } = await import('../engine/runtime/forward.js');
  const { padBatch } = await import('../engine/runtime/batch.js');
  const { trace } = await import('../engine/trace/index.js');
  const { computeEdit } = await import('../engine/edit/index.js');
  const heap = await loadModel({ backend: 'native' });
  // The same model with its block matrices in host memory, as the loader does past the heap.
  const ckpt = openCheckpoint(heap.dir);
  const hosted = { ...heap, weights: withHostMatrices(() => heap.adapter.loadWeights(ckpt, heap.config)) };
  try {
    assert.ok(hosted.weights.blocks.every((b) => isHostWeight(b.qkv.w) && isHostWeight(b.mlpOut.w)));
    assert.ok(!isHostWeight(hosted.weights.wte) && !isHostWeight(hosted.weights.head));
    assert.equal(hostWeightsLive(), 4 * heap.config.nLayer);
    const ids = heap.tokenizer.encode('The capital of France is');
    const a = tidyData(() => forward(heap, padBatch([ids, ids.slice(1)], 'left')).logits!);
    const b = tidyData(() => forward(hosted, padBatch([ids, ids.slice(1)], 'left')).logits!);
    assert.ok(maxAbsDiff(a, b) < 1e-4, `logits differ by ${maxAbsDiff(a, b)}`);
    assert.deepEqual(Array.from(hosted.weights.blocks[0].o.w.dataSync().subarray(0, 4)), Array.from(heap.weights.blocks[0].o.w.dataSync().subarray(0, 4)));
    const opts = { subject: 'France', samples: 3, seed: 1, kinds: ['hidden' as const] };
    const t1 = await trace(heap, 'The capital of France is', opts);
    const t2 = await trace(hosted, 'The capital of France is', opts);
    assert.ok(maxAbsDiff(t1.scores.hidden!.flat(), t2.scores.hidden!.flat()) < 1e-4);
    await assert.rejects(
      computeEdit(hosted, { prompt: 'The capital of {} is', subject: 'France', target: 'Rome' }),
      (e: Error & { code?: string }) => e.code === 'MODEL_TOO_LARGE' && /outside the 4 GB WASM heap/.test(e.message),
    );
    await assert.rejects(selectBackend('wasm'), /outside the WASM heap/);
  } finally {
    disposeModel(hosted);
    disposeModel(heap);
  }
  assert.equal(hostWeightsLive(), 0, 'disposing the model frees its host weights');
  await selectBackend('wasm');
  await selectBackend('native');
});

test('WASM clones and same-dtype casts share data; disposing one leaves the other intact', async () => {
  await selectBackend(status.available ? 'native' : 'wasm');
  const { wasmSharingInstalled } = await import('../engine/runtime/wasm-sharing.js');
  assert.ok(wasmSharingInstalled(), 'installed with the backend');
  const x = tf.tensor2d([1, 2, 3, 4], [2, 2]);
  const before = tf.memory().numDataBuffers;
  const c = tf.clone(x);
  const k = tf.cast(x, 'float32');
  assert.equal(tf.memory().numDataBuffers, before, 'no new data buffer for a clone or a no-op cast');
  x.dispose();
  assert.deepEqual(Array.from(c.dataSync()), [1, 2, 3, 4]);
  c.dispose();
  assert.deepEqual(Array.from(k.dataSync()), [1, 2, 3, 4]);
  const i = tf.cast(k, 'int32');
  assert.deepEqual(Array.from(i.dataSync()), [1, 2, 3, 4]);
  assert.equal(i.dtype, 'int32');
  tf.dispose([k, i]);
});

test('native bias + gelu_new equals the tfjs ops, and stands aside under a gradient tape', { skip }, async () => {
  await selectBackend('native');
  const x = randn([37, 96], 11);
  const b = randn([96], 12) as tf.Tensor1D;
  const viaOps = tidyData(() => activation('gelu_new', tf.add(x, b)));
  const fused = nativeBiasGeluNew(x, b);
  assert.ok(fused, 'the native op runs outside a tape');
  const got = fused.dataSync() as Float32Array;
  fused.dispose();
  assert.ok(maxAbsDiff(got, viaOps) < 2e-6, `max |Δ| ${maxAbsDiff(got, viaOps)}`);
  // Under tf.grad the tfjs ops run (their gradients exist); the result is the same gradient.
  let inside: tf.Tensor | null | undefined;
  const g = tf.grad((t: tf.Tensor) => {
    inside = nativeBiasGeluNew(t, b);
    return tf.sum(activation('gelu_new', tf.add(t, b)));
  })(x);
  assert.equal(inside, null);
  assert.equal(g.shape.join(','), '37,96');
  tf.dispose([x, b, g]);
  await selectBackend('wasm');
  assert.equal(nativeBiasGeluNew(tf.zeros([2, 3]), tf.zeros([3]) as tf.Tensor1D), null, 'plain WASM: no native op');
});

test('native linear (x·W + b) and LayerNorm equal the tfjs ops; none of them run under a tape', { skip }, async () => {
  await selectBackend('native');
  const x = randn([23, 64], 21) as tf.Tensor2D;
  const w = tf.mul(randn([64, 48], 22), 0.1) as tf.Tensor2D;
  const b = randn([48], 23) as tf.Tensor1D;
  const g = randn([64], 24) as tf.Tensor1D;
  const beta = randn([64], 25) as tf.Tensor1D;
  const lin = nativeLinear(x, w, b)!;
  const linRef = tidyData(() => tf.add(tf.matMul(x, w), b));
  assert.ok(maxAbsDiff(lin.dataSync() as Float32Array, linRef) < 1e-5, `linear max |Δ| ${maxAbsDiff(lin.dataSync() as Float32Array, linRef)}`);
  const cfg = { norm: 'layernorm', normEps: 1e-5 } as Parameters<typeof norm>[0];
  const x3 = tf.reshape(tf.mul(x, 3), [1, 23, 64]);
  const ln = nativeLayerNorm(x3, g, beta, 1e-5)!;
  assert.deepEqual(ln.shape, [1, 23, 64]);
  // The op-by-op LayerNorm, as the tape path computes it (norm() itself takes the native op here).
  const lnRef = tidyData(() => {
    const mean = tf.mean(x3, -1, true);
    const xc = tf.sub(x3, mean);
    return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), 1e-5))), g), beta);
  });
  assert.ok(maxAbsDiff(ln.dataSync() as Float32Array, lnRef) < 2e-5, `LayerNorm max |Δ| ${maxAbsDiff(ln.dataSync() as Float32Array, lnRef)}`);
  assert.ok(maxAbsDiff(tidyData(() => norm(cfg, { g, b: beta }, x3)), lnRef) < 2e-5, 'norm() on native');
  let inside: Array<tf.Tensor | null> = [];
  tf.grad((t: tf.Tensor) => {
    inside = [nativeLinear(t as tf.Tensor2D, w, b), nativeLayerNorm(t, g, beta, 1e-5)];
    return tf.sum(t);
  })(x).dispose();
  assert.deepEqual(inside, [null, null]);
  tf.dispose([x, w, b, g, beta, lin, x3, ln]);
  await selectBackend('wasm');
});

