/**
 * 16-bit checkpoints decode with WASM SIMD (model/half-simd.ts): in place into tfjs's WASM heap,
 * or through a scratch memory into host arrays. Both paths must give the table's bits for every
 * half and bfloat16 pattern (NaN payloads included), across chunk boundaries and for counts that
 * are not a multiple of the 8-value step, and write nothing outside the destination.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { decodeHalfInto, halfSimdAvailable, halfSimdStats, type HalfKind } from '../engine/model/half-simd.js';
import { bf16ToF32, f16ToF32, readSafetensorsHeader, readTensor, writeSafetensors } from '../engine/model/safetensors.js';
import { selectBackend } from '../engine/runtime/backend.js';
import { heapView, type WasmBackendLike } from '../engine/runtime/native/matmul-kernel.js';

const bits = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
const TABLE: Record<HalfKind, typeof f16ToF32> = { f16: f16ToF32, bf16: bf16ToF32 };

/** Every 16-bit pattern, then `extra` more (so the count is not a multiple of 8). */
function patterns(extra: number): Uint16Array {
  return Uint16Array.from({ length: 65536 + extra }, (_, i) => (i < 65536 ? i : (i * 40503) & 0xffff));
}

/** A read callback serving `src` as a file's little-endian bytes would be. */
function reader(src: Uint16Array): (bytes: Uint8Array, first: number) => void {
  const raw = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
  return (bytes, first) => bytes.set(raw.subarray(first * 2, first * 2 + bytes.length));
}

test('the SIMD module validates on this runtime', () => {
  // Node ≥ 16.4 and Electron have WASM SIMD; without it every load would fall back to the table.
  assert.equal(halfSimdAvailable(), true);
});

for (const kind of ['f16', 'bf16'] as const) {
  test(`${kind}: the scratch path gives the table's bits for every pattern, into a host array at an offset`, () => {
    const src = patterns(5);
    const want = new Float32Array(src.length);
    TABLE[kind](src, want, 0);
    const buf = new Float32Array(src.length + 6).fill(7);
    const dst = buf.subarray(3, 3 + src.length);
    const before = halfSimdStats.scratch;
    assert.equal(decodeHalfInto(kind, src.length, dst, reader(src), TABLE[kind], 1 << 20), true);
    assert.equal(halfSimdStats.scratch - before, src.length, 'decoded through the scratch memory');
    assert.deepEqual(bits(dst), bits(want));
    assert.deepEqual([...buf.subarray(0, 3), ...buf.subarray(3 + src.length)], [7, 7, 7, 7, 7, 7], 'nothing written outside');
  });

  test(`${kind}: in place in the WASM heap, across chunk boundaries, gives the table's bits`, async () => {
    const prev = tf.getBackend();
    await selectBackend('wasm');
    const src = patterns(3);
    const want = new Float32Array(src.length);
    TABLE[kind](src, want, 0);
    const be = tf.backend() as unknown as WasmBackendLike;
    // Guard tensors on both sides catch writes outside the destination block.
    const [left, t, right] = [tf.fill([64], 7), tf.zeros([src.length]), tf.fill([64], 7)];
    for (const chunk of [1 << 20, 1000, 8 * 1001 + 3]) {
      const before = halfSimdStats.inPlace;
      assert.equal(decodeHalfInto(kind, src.length, heapView(be, t), reader(src), TABLE[kind], chunk), true);
      assert.equal(halfSimdStats.inPlace - before, src.length, `decoded in place (chunk ${chunk})`);
      assert.deepEqual(bits(heapView(be, t)), bits(want), `chunk ${chunk}`);
      assert.deepEqual([...heapView(be, left), ...heapView(be, right)], new Array(128).fill(7));
    }
    tf.dispose([left, t, right]);
    await selectBackend(prev);
  });
}

test('a float16 file decodes to the same bits on wasm, native and cpu (in place and through scratch) as the table', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-half-'));
  try {
    const file = path.join(dir, 'h.safetensors');
    // Values exact in float16 and awkward ones (rounded on write): the file holds the bits.
    const a = Float32Array.from({ length: 3 * 1001 }, (_, i) => Math.sin(i) * 300 + (i % 7 === 0 ? 6e-8 : 0));
    writeSafetensors(file, [{ name: 'a', shape: [3, 1001], data: a, dtype: 'F16' }]);
    const info = readSafetensorsHeader(file).tensors.get('a')!;
    const raw = new Uint16Array(Uint8Array.from(fs.readFileSync(file).subarray(info.begin, info.end)).buffer);
    const want = new Float32Array(raw.length);
    f16ToF32(raw, want, 0);
    assert.deepEqual(bits(readTensor(info).data), bits(want), 'host array');
    const prev = tf.getBackend();
    for (const backend of ['wasm', 'native', 'cpu']) {
      try {
        await selectBackend(backend);
      } catch {
        continue; // native where onnxruntime does not load: wasm covers the in-place path
      }
      const t = tf.zeros([raw.length]);
      const into = backend === 'cpu' ? new Float32Array(raw.length) : heapView(tf.backend() as unknown as WasmBackendLike, t);
      readTensor(info, into);
      assert.deepEqual(bits(into), bits(want), backend);
      t.dispose();
    }
    await selectBackend(prev);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
