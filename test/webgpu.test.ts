/**
 * The 'webgpu' backend (engine/runtime/webgpu.ts): selected only when Dawn finds an adapter.
 * Without a GPU (as on the CI machines) it must say why and never be chosen; with one, its
 * forward must match the CPU backend. Its asynchronous read path (vocabQueryAsync, the trace's
 * reads) is the same code on every backend and is checked here on WASM and plain JS.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { probeBackends, selectBackend } from '../engine/runtime/backend.js';
import { webgpuAdapter } from '../engine/runtime/webgpu.js';
import { vocabQuery, vocabQueryAsync } from '../engine/runtime/vocab.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import { tidyData } from '../engine/util/scope.js';
import { model } from './helpers/model.js';
import { maxAbsDiff } from './helpers/golden.js';

test('webgpu is listed with its state, and selected only when an adapter exists', async () => {
  const status = probeBackends().find((b) => b.name === 'webgpu');
  assert.ok(status, 'webgpu is in the backend list');
  assert.ok(status.reason && status.reason.length > 10, 'it says what it found or why not');
  const found = await webgpuAdapter();
  if ('reason' in found) {
    await assert.rejects(selectBackend('webgpu'), (e: Error & { code?: string }) => e.code === 'BACKEND_UNAVAILABLE' && e.message === found.reason);
    assert.notEqual(await selectBackend(), 'webgpu', 'auto selection skips webgpu without an adapter');
  } else {
    // A GPU is present: the forward matches the CPU backend within 1e-4.
    const m = await model();
    const ids = m.tokenizer.encode('The capital of France is');
    await selectBackend('cpu');
    const ref = tidyData(() => forward(m, padBatch([ids])).logits!);
    await selectBackend('webgpu');
    const t = tf.tidy(() => forward(m, padBatch([ids])).logits!);
    const got = (await t.data()) as Float32Array;
    t.dispose();
    assert.ok(maxAbsDiff(got, ref) < 1e-4, `webgpu vs cpu: ${maxAbsDiff(got, ref)}`);
  }
});

test('the asynchronous vocabulary query equals the synchronous one on wasm and cpu', async () => {
  const m = await model();
  const ids = m.tokenizer.encode('The capital of France is');
  for (const name of ['wasm', 'cpu'] as const) {
    await selectBackend(name);
    const rows = tf.tidy(() => tf.reshape(tf.slice(forward(m, padBatch([ids, ids]), { logitsAt: 'none' }).hidden!, [0, ids.length - 1, 0], [2, 1, -1]), [2, -1]) as tf.Tensor2D);
    const a = vocabQuery(m, rows, [11, 12]);
    const b = await vocabQueryAsync(m, rows, [11, 12]);
    rows.dispose();
    assert.deepEqual(Array.from(b.logprob), Array.from(a.logprob), name);
    assert.deepEqual(Array.from(b.argmax), Array.from(a.argmax), name);
    assert.deepEqual(Array.from(b.maxLogprob), Array.from(a.maxLogprob), name);
  }
  await selectBackend();
});
