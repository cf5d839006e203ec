/**
 * assembleRows: the WASM kernel (heap runs) and the tf-op path other backends use give the
 * rows the pieces name, and a piece outside its source is an error, not a silent read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../engine/runtime/backend.js';
import { assembleRows, type RowPiece } from '../engine/runtime/assemble-rows.js';

const d = 5;
const shapes: Array<[number, number]> = [
  [4, 3],
  [2, 6],
];
const values = shapes.map(([r, t], s) => Float32Array.from({ length: r * t * d }, (_, i) => s * 1000 + i + 0.25));
const pieces: RowPiece[] = [
  { src: 1, row: 1, pos: 4 },
  { src: 0, row: 3, pos: 1 },
  { src: 0, row: 0, pos: 0 },
  { src: 1, row: 0, pos: 2 },
  { src: 0, row: 3, pos: 1 },
];
const length = 2;

function expected(): number[] {
  const out: number[] = [];
  for (const p of pieces) {
    const t = shapes[p.src][1];
    const from = (p.row * t + p.pos) * d;
    out.push(...values[p.src].subarray(from, from + length * d));
  }
  return out;
}

for (const backend of ['wasm', 'cpu'] as const) {
  test(`assembleRows on ${backend}: each piece's run of positions, in piece order`, async () => {
    await selectBackend(backend);
    const sources = shapes.map(([r, t], s) => tf.tensor3d(values[s], [r, t, d]));
    const before = tf.memory().numTensors;
    const y = assembleRows(sources, pieces, length);
    assert.deepEqual(y.shape, [pieces.length, length, d]);
    assert.deepEqual(Array.from(y.dataSync()), expected());
    assert.equal(tf.memory().numTensors, before + 1, 'only the output is left');
    assert.throws(() => assembleRows(sources, [{ src: 0, row: 0, pos: 2 }], length), /piece 0 .*outside its source/);
    assert.throws(() => assembleRows(sources, [{ src: 0, row: 4, pos: 0 }], length), /outside its source/);
    tf.dispose([y, ...sources]);
  });
}
