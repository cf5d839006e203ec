/**
 * assembleRows: the WASM kernel (heap runs) and the tf-op path other backends use give the
 * rows the pieces name (assembleColumns: several such columns side by side), and a piece
 * outside its source is an error, not a silent read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../engine/runtime/backend.js';
import { assembleColumns, assembleRows, type RowPiece } from '../engine/runtime/assemble-rows.js';

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

for (const backend of ['wasm', 'cpu'] as const) {
  test(`assembleColumns on ${backend}: columns side by side, each row's runs from its own pieces`, async () => {
    await selectBackend(backend);
    const sources = shapes.map(([r, t], s) => tf.tensor3d(values[s], [r, t, d]));
    const first: RowPiece[] = [
      { src: 0, row: 2, pos: 2 },
      { src: 1, row: 1, pos: 0 },
      { src: 0, row: 0, pos: 1 },
    ];
    const second: RowPiece[] = [
      { src: 0, row: 1, pos: 3 },
      { src: 0, row: 0, pos: 0 },
      { src: 0, row: 1, pos: 2 },
    ];
    // The second column reads source 1 alone, numbered 0 there.
    const before = tf.memory().numTensors;
    const y = assembleColumns([
      { sources, pieces: first, length: 1 },
      { sources: [sources[1]], pieces: second, length: 3 },
    ]);
    assert.deepEqual(y.shape, [3, 4, d]);
    const want: number[] = [];
    for (let i = 0; i < 3; i++) {
      const a = first[i];
      const fa = (a.row * shapes[a.src][1] + a.pos) * d;
      want.push(...values[a.src].subarray(fa, fa + d));
      const b = second[i];
      const fb = (b.row * shapes[1][1] + b.pos) * d;
      want.push(...values[1].subarray(fb, fb + 3 * d));
    }
    assert.deepEqual(Array.from(y.dataSync()), want);
    assert.equal(tf.memory().numTensors, before + 1, 'only the output is left');
    assert.throws(() => assembleColumns([{ sources, pieces: first, length: 1 }, { sources, pieces: second.slice(1), length: 1 }]), /column 1 has 2 pieces/);
    assert.throws(() => assembleColumns([{ sources: [sources[1]], pieces: [{ src: 0, row: 0, pos: 4 }], length: 3 }]), /outside its source/);
    tf.dispose([y, ...sources]);
  });
}
