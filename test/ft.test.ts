/**
 * FT / FT+L (engine/edit/ft.ts): the gradient w.r.t. the MLP output matrix and bias against
 * finite differences (and the fast path against tfjs's stock gradients), the reference's
 * "bag of target tokens at the next position" loss, FT flipping a tinyworld CounterFact record,
 * FT+L staying within ε of the original weights, and the model left untouched.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { computeFT, ftObjective } from '../engine/edit/ft.js';
import { applyEdit, revertEdit, listEdits } from '../engine/edit/apply.js';
import type { DenseDelta } from '../engine/edit/types.js';
import { isSkipped, parseCounterFactRecord, probabilityTest, type CounterFactCase } from '../engine/eval/counterfact.js';
import { nextTokenLogprobs } from '../engine/predict.js';
import { TINYWORLD, readJson } from './helpers/golden.js';
import { model } from './helpers/model.js';

const CF = readJson<unknown[]>(path.join(TINYWORLD, 'counterfact-dev.json'));

function caseOf(i: number): CounterFactCase {
  const c = parseCounterFactRecord(CF[i], i);
  assert.ok(!isSkipped(c));
  return c as CounterFactCase;
}

function decode(b64: string): Float32Array {
  const buf = Buffer.from(b64, 'base64');
  const out = new Float32Array(buf.byteLength / 4);
  new Uint8Array(out.buffer).set(buf);
  return out;
}

function bytesOf(t: tf.Tensor): string {
  return Buffer.from((t.dataSync() as Float32Array).buffer).toString('base64');
}

test('FT gradient w.r.t. the MLP output weight and bias matches finite differences and the stock gradient', async () => {
  const m = await model();
  const ids = m.tokenizer.encode('David Stan was born in');
  const target = m.tokenizer.encode(' Rio de Janeiro');
  const obj = ftObjective(m, ids, target, [1], { maskId: m.tokenizer.eosId });
  const slow = ftObjective(m, ids, target, [1], { maskId: m.tokenizer.eosId, fastGrad: false });
  try {
    assert.deepEqual(obj.slots, [
      { layer: 1, kind: 'w' },
      { layer: 1, kind: 'b' },
    ]);
    const [w0, b0] = obj.params0;
    const { value, grads } = obj.valueAndGrads([w0, b0]);
    const [gw, gb] = grads.map((g) => g.dataSync() as Float32Array);
    const stock = slow.valueAndGrads([w0, b0]);
    assert.ok(Math.abs(stock.value - value) < 1e-5 * Math.abs(value));
    const [sw, sb] = stock.grads.map((g) => g.dataSync() as Float32Array);
    const rel = (a: Float32Array, b: Float32Array) => {
      let num = 0;
      let den = 0;
      for (let i = 0; i < a.length; i++) {
        num += (a[i] - b[i]) ** 2;
        den += b[i] ** 2;
      }
      return Math.sqrt(num / den);
    };
    assert.ok(rel(gw, sw) < 1e-4, `fast vs stock weight gradient ${rel(gw, sw)}`);
    assert.ok(rel(gb, sb) < 1e-4, `fast vs stock bias gradient ${rel(gb, sb)}`);
    tf.dispose([...grads, ...stock.grads]);

    // Directional derivative along the gradient (large, so float32 loss noise is negligible)
    // and single coordinates with the largest gradient.
    const norm = Math.sqrt(gw.reduce((a, x) => a + x * x, 0) + gb.reduce((a, x) => a + x * x, 0));
    const at = (sw: number, dirW: Float32Array | null, dirB: Float32Array | null) => {
      const w = tf.tidy(() => (dirW ? tf.add(w0, tf.mul(tf.tensor(dirW, w0.shape), sw)) : w0.clone()));
      const b = tf.tidy(() => (dirB ? tf.add(b0, tf.mul(tf.tensor(dirB, b0.shape), sw)) : b0.clone()));
      const v = obj.value([w, b]);
      tf.dispose([w, b]);
      return v;
    };
    const dW = gw.map((x) => x / norm);
    const dB = gb.map((x) => x / norm);
    const h = 1e-3;
    const fd = (at(h, dW, dB) - at(-h, dW, dB)) / (2 * h);
    assert.ok(Math.abs(fd - norm) < 2e-2 * norm, `directional derivative: finite difference ${fd} vs gradient ${norm}`);
    const top = Array.from(gw.keys()).sort((a, b) => Math.abs(gw[b]) - Math.abs(gw[a])).slice(0, 3);
    for (const i of top) {
      const e = new Float32Array(gw.length);
      e[i] = 1;
      const fdi = (at(1e-2, e, null) - at(-1e-2, e, null)) / 2e-2;
      assert.ok(Math.abs(fdi - gw[i]) < 3e-2 * Math.abs(gw[i]) + 1e-3, `W[${i}]: finite difference ${fdi} vs ${gw[i]}`);
    }
    const j = Array.from(gb.keys()).sort((a, b) => Math.abs(gb[b]) - Math.abs(gb[a]))[0];
    const eb = new Float32Array(gb.length);
    eb[j] = 1;
    const fdb = (at(1e-2, null, eb) - at(-1e-2, null, eb)) / 2e-2;
    assert.ok(Math.abs(fdb - gb[j]) < 3e-2 * Math.abs(gb[j]) + 1e-3, `b[${j}]: finite difference ${fdb} vs ${gb[j]}`);
  } finally {
    obj.dispose();
    slow.dispose();
  }
});

test('FT loss is the reference bag-of-tokens loss: mean −log p(target tokens) at the last prompt token', async () => {
  const m = await model();
  const ids = m.tokenizer.encode('David Stan was born in');
  const target = m.tokenizer.encode(' Rio de Janeiro');
  assert.ok(target.length > 1);
  const obj = ftObjective(m, ids, target, [1], { maskId: m.tokenizer.eosId });
  try {
    const lp = nextTokenLogprobs(m, [ids])[0];
    const expected = -target.reduce((a, t) => a + lp[t], 0) / target.length;
    assert.ok(Math.abs(obj.value(obj.params0) - expected) < 1e-4 * Math.abs(expected));
  } finally {
    obj.dispose();
  }
  // The eos id is masked, as the reference masks GPT-2's unk (= eos = pad) id.
  const masked = ftObjective(m, ids, [...target, m.tokenizer.eosId!], [1], { maskId: m.tokenizer.eosId });
  const plain = ftObjective(m, ids, target, [1], { maskId: m.tokenizer.eosId });
  try {
    assert.ok(Math.abs(masked.value(masked.params0) - plain.value(plain.params0)) < 1e-6);
  } finally {
    masked.dispose();
    plain.dispose();
  }
});

test('FT on a tinyworld CounterFact record flips the rewrite prompt; the model is untouched until applied', async () => {
  const m = await model();
  const c = caseOf(1); // Stefan Lopez: composer → sculptor
  const wBefore = bytesOf(m.weights.blocks[1].mlpOut.w);
  const tensors = tf.memory().numTensors;
  const [pre] = probabilityTest(m, [c]);
  assert.ok(pre.rewrite[0].true < pre.rewrite[0].new, 'unedited: target_true preferred');
  const rec = await computeFT(m, c.request, { constrained: false, layers: [1] });
  assert.equal(rec.method, 'ft');
  assert.deepEqual(rec.layers, [1]);
  assert.equal(rec.deltas.length, 1);
  const d = rec.deltas[0] as DenseDelta;
  assert.equal(d.kind, 'dense');
  assert.deepEqual(d.shape, [m.config.dMlp, m.config.dModel]);
  assert.equal(decode(d.biasDelta!).length, m.config.dModel);
  assert.ok(Number(rec.info.loss_final) < Number(rec.info.loss_initial));
  assert.equal(bytesOf(m.weights.blocks[1].mlpOut.w), wBefore, 'computeFT does not modify the model');
  assert.ok(tf.memory().numTensors <= tensors, `no leaked tensors (${tensors} → ${tf.memory().numTensors})`);
  applyEdit(m, rec);
  try {
    const [post] = probabilityTest(m, [c]);
    assert.ok(post.rewrite[0].new < post.rewrite[0].true, `edited: NLL new ${post.rewrite[0].new} vs true ${post.rewrite[0].true}`);
  } finally {
    revertEdit(m, rec.id);
  }
  assert.equal(bytesOf(m.weights.blocks[1].mlpOut.w), wBefore);
});

test('FT+L keeps every weight and bias within ε of the original', async () => {
  const m = await model();
  const c = caseOf(0);
  const eps = 1e-3;
  const w0 = m.weights.blocks[1].mlpOut.w.dataSync() as Float32Array;
  const b0 = m.weights.blocks[1].mlpOut.b!.dataSync() as Float32Array;
  const rec = await computeFT(m, c.request, { constrained: true, epsilon: eps, layers: [1], steps: 6 });
  assert.equal(rec.method, 'ft-l');
  assert.equal(rec.info.epsilon, eps);
  const d = rec.deltas[0] as DenseDelta;
  const dw = decode(d.delta);
  const db = decode(d.biasDelta!);
  const bound = Math.fround(eps);
  let maxW = 0;
  for (const x of dw) maxW = Math.max(maxW, Math.abs(x));
  let maxB = 0;
  for (const x of db) maxB = Math.max(maxB, Math.abs(x));
  assert.ok(maxW <= bound, `max |ΔW| ${maxW}`);
  assert.ok(maxB <= bound, `max |Δb| ${maxB}`);
  assert.ok(maxW > 0.99 * eps, `the clamp is active (Adam moves ~lr per step; 6 steps > ε): max |ΔW| ${maxW}`);
  // Applied weights: |W − W0| ≤ ε up to one float32 rounding of W.
  applyEdit(m, rec);
  try {
    const w = m.weights.blocks[1].mlpOut.w.dataSync() as Float32Array;
    const b = m.weights.blocks[1].mlpOut.b!.dataSync() as Float32Array;
    for (let i = 0; i < w.length; i++) assert.ok(Math.abs(w[i] - w0[i]) <= bound + (Math.abs(w0[i]) + eps) * 1.2e-7, `W[${i}]: ${w[i] - w0[i]}`);
    for (let i = 0; i < b.length; i++) assert.ok(Math.abs(b[i] - b0[i]) <= bound + (Math.abs(b0[i]) + eps) * 1.2e-7, `b[${i}]: ${b[i] - b0[i]}`);
  } finally {
    revertEdit(m, rec.id);
  }
  assert.equal(listEdits(m).length, 0);
});
