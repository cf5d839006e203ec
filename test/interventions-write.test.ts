/**
 * Interventions outside a gradient tape on WASM write the selected runs in place of the masked
 * arithmetic (runtime/interventions.ts: writeRuns): the values must be the arithmetic's, for
 * every value layout, for replace and add, and the arithmetic (with its gradient) must still
 * run under a tape and for duplicate pairs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs-core';
import { selectBackend } from '../engine/runtime/backend.js';
import { interventionHook, type Intervention } from '../engine/runtime/interventions.js';
import { site } from '../engine/runtime/sites.js';

const [B, T, W] = [3, 4, 5];
const xs = Float32Array.from({ length: B * T * W }, (_, i) => Math.sin(i) * 3);
const s = site.residPre(1);

/** The masked arithmetic's result, in plain numbers: replace → v, add → x + v (duplicates sum their values). */
function expected(op: 'replace' | 'add', pairs: Array<[number, number]>, valueAt: (k: number, r: number, p: number) => number[]): number[] {
  const y = Array.from(xs);
  const sum = new Map<number, number[]>();
  pairs.forEach(([r, p], k) => {
    const at = r * T + p;
    const v = valueAt(k, r, p);
    const prev = sum.get(at);
    sum.set(at, prev ? prev.map((a, i) => a + v[i]) : v);
  });
  for (const [at, v] of sum) for (let i = 0; i < W; i++) y[at * W + i] = Math.fround(op === 'add' ? Math.fround(xs[at * W + i] + v[i]) : v[i]);
  return y;
}

const vec = [0.5, -1, 2, 0, 7];
const perPair = (k: number) => vec.map((v, i) => v * (k + 1) + i);
const full = Float32Array.from({ length: B * T * W }, (_, i) => Math.cos(i));
const cases: Array<{ name: string; iv: () => Omit<Intervention, 'site' | 'op'>; pairs: Array<[number, number]>; valueAt: (k: number, r: number, p: number) => number[] }> = [
  { name: 'one vector', iv: () => ({ rows: [0, 2], positions: [1, 3], value: tf.tensor1d(vec) }), pairs: [[0, 1], [0, 3], [2, 1], [2, 3]], valueAt: () => vec },
  {
    name: 'one vector per pair, positions per row',
    iv: () => ({ rows: [2, 1], positions: [[0], [2, 3]], value: tf.tensor2d([perPair(0), perPair(1), perPair(2)]) }),
    pairs: [[2, 0], [1, 2], [1, 3]],
    valueAt: (k) => perPair(k).map(Math.fround),
  },
  {
    name: 'a full [B, T, width] value',
    iv: () => ({ positions: [2], value: tf.tensor3d(full, [B, T, W]) }),
    pairs: [[0, 2], [1, 2], [2, 2]],
    valueAt: (_k, r, p) => Array.from(full.subarray((r * T + p) * W, (r * T + p + 1) * W)),
  },
  {
    name: 'duplicate pairs (the arithmetic sums them)',
    iv: () => ({ rows: [1, 1], positions: [[0], [0]], value: tf.tensor2d([perPair(0), perPair(1)]) }),
    pairs: [[1, 0], [1, 0]],
    valueAt: (k) => perPair(k).map(Math.fround),
  },
];

for (const op of ['replace', 'add'] as const) {
  for (const c of cases) {
    test(`intervention ${op} on wasm, ${c.name}: the masked arithmetic's values`, async () => {
      await selectBackend('wasm');
      const x = tf.tensor3d(xs, [B, T, W]);
      const iv = c.iv();
      const y = interventionHook([{ site: s, op, ...iv }])(s, x);
      const got = Array.from(y.dataSync());
      const want = expected(op, c.pairs, c.valueAt);
      got.forEach((g, i) => assert.ok(Math.abs(g - want[i]) <= 1e-6 * Math.max(1, Math.abs(want[i])), `${i}: ${g} vs ${want[i]}`));
      assert.deepEqual(Array.from(x.dataSync()), Array.from(xs), 'the input is left as it was');
      tf.dispose([x, y, iv.value!]);
    });
  }
}

test('intervention replace under a gradient tape: the arithmetic, so the value gets its gradient', async () => {
  await selectBackend('wasm');
  const x = tf.tensor3d(xs, [B, T, W]);
  const g = tf.grad((v: tf.Tensor) => tf.sum(interventionHook([{ site: s, op: 'replace', rows: [0, 2], positions: [1, 3], value: v }])(s, x)));
  const dv = g(tf.tensor1d(vec));
  // Four selected pairs, each passing the vector through once.
  assert.deepEqual(Array.from(dv.dataSync()), [4, 4, 4, 4, 4]);
  tf.dispose([x, dv]);
});
