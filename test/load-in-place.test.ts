/**
 * Weights are read straight into their tensors' memory (model/adapters/read.ts): on the WASM
 * backends into each tensor's heap block, elsewhere into a host array. The values must be the
 * file's, bit for bit, on every backend; the tied unembedding must be wte's exact transpose;
 * a tensor that fails its checks must leave nothing allocated behind.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { openCheckpoint } from '../engine/model/checkpoint.js';
import { defaultModelDir } from '../engine/model/load.js';
import { filledTensor, loadChecked, transposeHost, transposeInto } from '../engine/model/adapters/read.js';
import { disposeUnembed, unembedBuilt, unembedOf } from '../engine/model/unembedding.js';
import { selectBackend } from '../engine/runtime/backend.js';
import { writeSafetensors } from '../engine/model/safetensors.js';
import { FactLensError } from '../engine/errors.js';
import { model } from './helpers/model.js';

const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

test('transposeInto matches the element-by-element transpose on ragged shapes', () => {
  for (const [r, c] of [[1, 1], [1, 7], [7, 1], [31, 33], [33, 31], [64, 96], [70, 5], [0, 3]]) {
    const src = Float32Array.from({ length: r * c }, (_, i) => i * 0.5 - 3);
    const dst = new Float32Array(r * c).fill(NaN);
    transposeInto(src, r, c, dst);
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) assert.equal(dst[j * r + i], src[i * c + j], `[${r}, ${c}] at ${i}, ${j}`);
    assert.deepEqual(transposeHost({ shape: [r, c], data: src }), { shape: [c, r], data: dst });
  }
});

describe('tinyworld loads with the file\'s exact values', async () => {
  const m = await model();
  const ckpt = openCheckpoint(defaultModelDir());
  test(`on ${m.backend}: every tensor, bit for bit, and the unembedding is wte's transpose`, () => {
    const wte = ckpt.read('transformer.wte.weight').data;
    assert.deepEqual(bits(m.weights.wte.dataSync() as Float32Array), bits(wte));
    // Tied: the head is the embedding itself, and its [d, V] transpose is built on first use.
    assert.equal(m.weights.head, m.weights.wte);
    const [v, d] = m.weights.wte.shape;
    const t = unembedOf(m.weights);
    assert.ok(unembedBuilt(m.weights));
    const view = { ...m.weights, blocks: [] };
    assert.equal(unembedOf(view), t, 'a view of the weights shares the built transpose');
    assert.deepEqual(t.shape, [d, v]);
    const unembed = t.dataSync() as Float32Array;
    for (let k = 0; k < 2000; k++) {
      const i = (k * 7919) % v;
      const j = (k * 31) % d;
      assert.equal(unembed[j * v + i], wte[i * d + j], `unembed[${j}, ${i}]`);
    }
    const b = m.weights.blocks[3];
    assert.deepEqual(bits(b.mlpIn.w.dataSync() as Float32Array), bits(ckpt.read('transformer.h.3.mlp.c_fc.weight').data));
    assert.deepEqual(bits(b.ln2!.b!.dataSync() as Float32Array), bits(ckpt.read('transformer.h.3.ln_2.bias').data));
  });
});

describe('in-place loading on each backend', () => {
  for (const backend of ['wasm', 'cpu']) {
    test(`${backend}: float32 and float16 files, transposes, and a failed check frees its tensor`, async () => {
      const before = tf.getBackend();
      await selectBackend(backend);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-load-'));
      try {
        const a = Float32Array.from({ length: 6 * 5 }, (_, i) => (i - 11) / 8);
        const file = path.join(dir, 'model.safetensors');
        writeSafetensors(file, [
          { name: 'a32', shape: [6, 5], data: a },
          { name: 'a16', shape: [6, 5], data: a, dtype: 'F16' },
        ]);
        fs.writeFileSync(path.join(dir, 'config.json'), '{}');
        const ckpt = openCheckpoint(dir);
        const tensors = tf.memory().numTensors;
        for (const name of ['a32', 'a16']) {
          const t = loadChecked(ckpt, name, [6, 5]);
          // Every value is exact in float16 (multiples of 1/8 below 4).
          assert.deepEqual([...(t.dataSync() as Float32Array)], [...a], name);
          // The unembedding of a [V, d] head: built once, inside a tidy too, and freed on request.
          const head = { head: t as tf.Tensor2D };
          const tt = tf.tidy(() => unembedOf(head));
          assert.ok(!tt.isDisposed, 'the built transpose outlives the tidy it was first asked for in');
          assert.equal(unembedOf(head), tt);
          const want = transposeHost({ shape: [6, 5], data: a }).data;
          assert.deepEqual(tt.shape, [5, 6]);
          assert.deepEqual([...(tt.dataSync() as Float32Array)], [...want], `${name} transposed`);
          disposeUnembed(head);
          assert.ok(tt.isDisposed && !unembedBuilt(head));
          tf.dispose(t);
        }
        assert.throws(
          () => loadChecked(ckpt, 'a32', [5, 6]),
          (e: unknown) => e instanceof FactLensError && e.code === 'TENSOR_SHAPE' && /'a32'/.test(e.message),
        );
        assert.throws(() => loadChecked(ckpt, 'nope', [2]), (e: unknown) => e instanceof FactLensError && e.code === 'MISSING_TENSOR');
        assert.throws(() => filledTensor([3], () => {
          throw new Error('fill failed');
        }), /fill failed/);
        assert.equal(tf.memory().numTensors, tensors, 'no tensor left behind');
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
        await selectBackend(before);
      }
    });
  }
});
