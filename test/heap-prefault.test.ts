/**
 * loadModel faults the weights' heap pages in on libuv's threads while the tokenizer is built
 * (engine/runtime/heap-prefault.ts). What must hold: the weights then sit in the very pages that
 * were faulted in (else it was wasted work), their values are the file's, the block is always
 * freed (also when the tokenizer fails), and other backends are left alone.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { defaultModelDir, disposeModel, loadModel } from '../engine/model/load.js';
import { openCheckpoint } from '../engine/model/checkpoint.js';
import { prefaultHeap, prefaultStats } from '../engine/runtime/heap-prefault.js';
import type { WasmBackendLike } from '../engine/runtime/native/matmul-kernel.js';

const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);

for (const backend of ['native', 'wasm']) {
  describe(`heap prefault on ${backend}`, () => {
    test('the weights land in the faulted-in block, with the file\'s values, and the block is freed', async () => {
      const runs = prefaultStats.runs;
      const m = await loadModel({ backend });
      try {
        assert.equal(prefaultStats.runs, runs + 1, 'loadModel started a prefault');
        assert.equal(prefaultStats.pending, 0, 'and waited for it');
        assert.ok(prefaultStats.bytes >= m.parameterCount * 4, 'the block covers the weights');
        const be = tf.backend() as unknown as WasmBackendLike;
        const at = (t: tf.Tensor) => be.dataIdMap.get(t.dataId)!.memoryOffset;
        const { offset, bytes } = prefaultStats;
        const all: Array<tf.Tensor | undefined> = [m.weights.wte, m.weights.wpe, m.weights.lnF.g];
        for (const b of m.weights.blocks) all.push(b.qkv.w, b.o.w, b.mlpIn.w, b.mlpOut.w, b.ln1.g);
        const placed = all.filter((t): t is tf.Tensor => t !== undefined);
        for (const t of placed) {
          assert.ok(at(t) >= offset && at(t) + t.size * 4 <= offset + bytes, `a weight at ${at(t)} outside the block [${offset}, ${offset + bytes})`);
        }
        const ckpt = openCheckpoint(defaultModelDir());
        assert.deepEqual(bits(m.weights.wte.dataSync() as Float32Array), bits(ckpt.read('transformer.wte.weight').data));
        assert.deepEqual(bits(m.weights.blocks.at(-1)!.mlpOut.w.dataSync() as Float32Array), bits(ckpt.read('transformer.h.7.mlp.c_proj.weight').data));
      } finally {
        disposeModel(m);
      }
    });

    test('a broken tokenizer fails the load by name, after the reads finished and the block was freed', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-prefault-'));
      try {
        for (const f of fs.readdirSync(defaultModelDir())) {
          if (f !== 'tokenizer.json') fs.symlinkSync(path.join(defaultModelDir(), f), path.join(dir, f));
        }
        fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [');
        const runs = prefaultStats.runs;
        await assert.rejects(loadModel({ dir, backend }), (e: Error) => /tokenizer\.json/.test(e.message));
        assert.equal(prefaultStats.runs, runs + 1);
        assert.equal(prefaultStats.pending, 0);
        // The heap is usable: the freed block serves the next allocation.
        const t = tf.zeros([1024, 1024]);
        assert.equal((tf.backend() as unknown as WasmBackendLike).dataIdMap.get(t.dataId)!.memoryOffset, prefaultStats.offset);
        t.dispose();
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });
}

test('no prefault on the cpu backend, for no bytes, or for unreadable files', async () => {
  const file = path.join(defaultModelDir(), 'model.safetensors');
  await tf.setBackend('cpu');
  assert.equal(prefaultHeap(1 << 20, [file]), null);
  await tf.setBackend('wasm');
  assert.equal(prefaultHeap(0, [file]), null);
  assert.equal(prefaultHeap(1 << 20, [path.join(os.tmpdir(), 'factlens-no-such-file.safetensors')]), null);
  const p = prefaultHeap(1 << 20, [file]);
  assert.ok(p);
  await p.done();
  await p.done(); // twice is harmless: the block is freed once
  assert.equal(prefaultStats.pending, 0);
});
