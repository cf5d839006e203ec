/**
 * MEMIT on the embedded tinyworld model: hyperparameters, the least-squares update's algebra
 * (Sherman–Morrison for one edit), one edit vs a consistent-key ROME edit, a batch of edits as
 * one record, revert, the z cache, cancellation, errors, and the CLI (`edit --method memit`,
 * `eval --method memit --batch`).
 *
 * Caches go to a fresh FACTLENS_CACHE_DIR; statistics use 1,000 corpus documents.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { LoadedModel } from '../engine/model/load.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import {
  applyEdit,
  chooseLayer,
  computeEdit,
  computeEditBatch,
  layerStats,
  listEdits,
  memitEditParts,
  memitHparams,
  probePrompts,
  revertAllEdits,
  revertEdit,
  statsFactor,
  type EditRequest,
} from '../engine/edit/index.js';
import { choleskySolve, dot } from '../engine/edit/linalg.js';
import { adjustedKeys } from '../engine/edit/memit.js';
import { Rng } from '../engine/util/rng.js';
import { main } from '../engine/cli/main.js';
import { TEST_BACKEND } from './helpers/model.js';
import { expectError } from './helpers/errors.js';
import { TINYWORLD } from './helpers/golden.js';
import { editSession } from './helpers/edit-session.js';
import { slowTest } from './helpers/tier.js';

let m: LoadedModel;
const CACHE = editSession('memit', (x) => (m = x));
const SAMPLES = 1000;
const CF_PATH = path.join(TINYWORLD, 'counterfact-dev.json');
const CF = JSON.parse(fs.readFileSync(CF_PATH, 'utf8')) as Array<{
  requested_rewrite: { prompt: string; subject: string; target_new: { str: string }; target_true: { str: string } };
  paraphrase_prompts: string[];
}>;


function requestOf(i: number, layers?: number[]): EditRequest {
  const rw = CF[i].requested_rewrite;
  return { prompt: rw.prompt, subject: rw.subject, target: rw.target_new.str, targetTrue: rw.target_true.str, method: 'memit', ...(layers ? { layers } : {}) };
}

/** P(new) > P(true) on the record's edit prompt. */
function succeeds(i: number): boolean {
  const rw = CF[i].requested_rewrite;
  const p = probePrompts(m, [rw.prompt.replace('{}', rw.subject)], [rw.target_new.str, rw.target_true.str])[0];
  return p.targets[0].prob > p.targets[1].prob;
}

function logits(prompts: string[]): Float32Array {
  const t = tf.tidy(() => forward(m, padBatch(prompts.map((p) => m.tokenizer.encode(p)))).logits!);
  const out = t.dataSync() as Float32Array;
  t.dispose();
  return out;
}

describe('MEMIT hyperparameters', () => {
  test('tinyworld: a contiguous range ending at ROME\'s traced layer, λ = f/4; GPT-2 XL and GPT-J: the reference values', async () => {
    const facts = path.join(CACHE, 'facts.jsonl');
    fs.writeFileSync(
      facts,
      fs
        .readFileSync(path.join(m.dir, 'facts.jsonl'), 'utf8')
        .split('\n')
        .filter((_, i) => i % 700 === 5)
        .join('\n'),
    );
    const hp = await memitHparams(m, { facts, limit: 4 });
    const rome = await chooseLayer(m, { facts, limit: 4 });
    assert.ok(hp.layers.length >= 2, `layers ${hp.layers}`);
    assert.equal(hp.layers[hp.layers.length - 1], rome.layer);
    hp.layers.forEach((l, i) => i && assert.equal(l, hp.layers[i - 1] + 1));
    assert.equal(hp.mom2UpdateWeight, m.config.dMlp / 4);
    assert.equal(hp.clampNormFactor, 0.75);
    assert.deepEqual(hp.contextTemplateStarts, ['The', 'Therefore', 'Because', 'I', 'You']);

    const shaped = (modelType: string, nLayer: number, dModel: number) => ({ ...m, config: { ...m.config, modelType, nLayer, dModel } }) as LoadedModel;
    const xl = await memitHparams(shaped('gpt2', 48, 1600));
    assert.deepEqual(xl.layers, [13, 14, 15, 16, 17]);
    assert.equal(xl.mom2UpdateWeight, 20_000);
    const gptj = await memitHparams(shaped('gptj', 28, 4096));
    assert.deepEqual(gptj.layers, [3, 4, 5, 6, 7, 8]);
    assert.equal(gptj.vNumGradSteps, 25);
  });
});

describe('MEMIT', () => {
  test('one edit at one layer: the update moves the edit key\'s output by a/(1+a)·(z − h), a = kᵀ(λC)⁻¹k', async () => {
    const layer = 3;
    const lambda = 300;
    const parts = await memitEditParts(m, [requestOf(0, [layer])], {}, { statsSamples: SAMPLES, hparams: { mom2UpdateWeight: lambda } });
    const rec = parts.record;
    assert.equal(rec.method, 'memit');
    assert.deepEqual(rec.layers, [layer]);
    // "{}" then one text per start word, ≤ 10 tokens, braces removed, ". {}" appended.
    assert.equal(parts.templates.length, 6);
    assert.equal(parts.templates[0], '{}');
    ['The', 'Therefore', 'Because', 'I', 'You'].forEach((w, i) => {
      const t = parts.templates[i + 1];
      assert.ok(t.startsWith(w) && t.endsWith('. {}') && t.split('{}').length === 2, JSON.stringify(t));
      assert.ok(m.tokenizer.encode(t.slice(0, -4)).length <= 10, JSON.stringify(t));
    });
    assert.equal(rec.deltas.length, 1);
    const dl = rec.deltas[0];
    assert.equal(dl.kind, 'dense');
    const { dMlp: f, dModel: d } = m.config;
    const buf = Buffer.from((dl as { delta: string }).delta, 'base64');
    const dw = new Float32Array(buf.buffer, buf.byteOffset, f * d);
    const k = parts.layerKeys[0][0];
    const r = parts.z[0].map((v, j) => v - parts.layerHidden[0][0][j]);
    // a from an independent solve with the statistics' own factor: (λ·Σ/N)⁻¹k = N/λ · Σ⁻¹k.
    const stats = await layerStats(m, layer, { samples: SAMPLES });
    const a = (dot(k, choleskySolve(statsFactor(stats), k)) * stats.count) / lambda;
    const expected = a / (1 + a);
    // kᵀΔW should be expected·r.
    const moved = new Float64Array(d);
    for (let i = 0; i < f; i++) for (let j = 0; j < d; j++) moved[j] += k[i] * dw[i * d + j];
    let worst = 0;
    let scale = 0;
    for (let j = 0; j < d; j++) {
      worst = Math.max(worst, Math.abs(moved[j] - expected * r[j]));
      scale = Math.max(scale, Math.abs(r[j]));
    }
    assert.ok(expected > 0.1 && expected < 1, `a/(1+a) = ${expected}`);
    assert.ok(worst / scale < 1e-4, `kᵀΔW vs a/(1+a)·r: ${worst} of ${scale}`);
    // Applied, the top layer's state at the bare prompt moves toward z.
    applyEdit(m, rec);
    const again = await memitEditParts(m, [requestOf(0, [layer])], {}, { statsSamples: SAMPLES, hparams: { mom2UpdateWeight: lambda } });
    revertEdit(m, rec.id);
    const dist = (h: Float64Array) => Math.sqrt(parts.z[0].reduce((s, v, j) => s + (v - h[j]) ** 2, 0));
    assert.ok(dist(again.layerHidden[0][0]) < 0.6 * dist(parts.layerHidden[0][0]), 'the residual to z shrinks');
  });

  test('few keys: the Woodbury form through the cached factor equals the direct f×f solve', async () => {
    const stats = await layerStats(m, 2, { samples: SAMPLES });
    const f = m.config.dMlp;
    const rng = new Rng(3);
    // Keys of the statistics' own scale: mean-square ≈ the mean diagonal of C.
    const rms = Math.sqrt(Array.from({ length: f }, (_, i) => stats.sum[i * f + i]).reduce((a, b) => a + b, 0) / f / stats.count);
    const K = Array.from({ length: 3 }, () => Float64Array.from({ length: f }, () => rms * rng.normal()));
    for (const lambda of [250, 15_000]) {
      const fast = adjustedKeys(K, stats, lambda, f);
      const direct = adjustedKeys(K, stats, lambda, f, 'direct');
      let worst = 0;
      let scale = 0;
      fast.A.forEach((a, r) => a.forEach((x, i) => {
        worst = Math.max(worst, Math.abs(x - direct.A[r][i]));
        scale = Math.max(scale, Math.abs(direct.A[r][i]));
      }));
      assert.ok(scale > 0 && worst / scale < 1e-6, `λ ${lambda}: Woodbury vs direct ${worst} of ${scale}`);
    }
  });

  slowTest('one edit behaves like a consistent-key ROME edit in efficacy (records 1–4)', async () => {
    for (const i of [1, 2, 3, 4]) {
      assert.equal(succeeds(i), false, `record ${i} is not known before the edit`);
      const rome = await computeEdit(m, { ...requestOf(i, [3]), method: 'rome' }, {}, { statsSamples: SAMPLES });
      applyEdit(m, rome);
      const romeOk = succeeds(i);
      revertEdit(m, rome.id);
      const memit = await computeEdit(m, requestOf(i), {}, { statsSamples: SAMPLES });
      assert.equal(memit.method, 'memit');
      assert.ok(memit.layers.length >= 2);
      applyEdit(m, memit);
      const memitOk = succeeds(i);
      revertEdit(m, memit.id);
      assert.equal(romeOk, true, `record ${i}: ROME`);
      assert.equal(memitOk, true, `record ${i}: MEMIT`);
    }
  });

  slowTest('a batch of 8 edits is one record with a dense delta per layer; most land; revert is bit-identical', async () => {
    const ids = [10, 11, 12, 13, 14, 15, 16, 17];
    const prompts = ids.map((i) => CF[i].requested_rewrite.prompt.replace('{}', CF[i].requested_rewrite.subject));
    const before = logits(prompts);
    const rec = await computeEditBatch(m, ids.map((i) => requestOf(i)), {}, { statsSamples: SAMPLES });
    assert.equal(rec.requests?.length, 8);
    assert.equal(rec.deltas.length, rec.layers.length);
    assert.deepEqual(rec.deltas.map((x) => x.layer), rec.layers);
    assert.equal(rec.info.edits, 8);
    assert.deepEqual(listEdits(m), [], 'computing leaves the model unedited');
    applyEdit(m, rec);
    const landed = ids.filter((i) => succeeds(i)).length;
    revertEdit(m, rec.id);
    assert.ok(landed >= 6, `${landed}/8 edits land`);
    assert.deepEqual(logits(prompts), before, 'bit-identical after revert');
  });

  test('z vectors come from the disk cache on a second run; cancellation leaves no partial update', async () => {
    const reqs = [requestOf(20, [2, 3]), requestOf(21, [2, 3])];
    const a = await memitEditParts(m, reqs, {}, { statsSamples: SAMPLES });
    assert.equal(a.record.info.z_cached, 0);
    const b = await memitEditParts(m, reqs, {}, { statsSamples: SAMPLES, hparams: { mom2UpdateWeight: 500 } });
    assert.equal(b.record.info.z_cached, 2);
    assert.deepEqual(b.z, a.z);
    assert.notDeepEqual(b.record.deltas[0], a.record.deltas[0], 'another λ, another update');

    const w0 = m.weights.blocks[2].mlpOut.w;
    const control = { cancelled: false, onProgress: (_f: number, msg: string) => void (msg.startsWith('layer 3') && (control.cancelled = true)) };
    await expectError(() => memitEditParts(m, reqs, control, { statsSamples: SAMPLES }), 'CANCELLED', () => {});
    assert.equal(m.weights.blocks[2].mlpOut.w, w0, 'layer 2 is back to its original tensor');
    assert.deepEqual(listEdits(m), []);
  });

  test('errors: empty batch, mixed layers, a bad request named by its index, layers out of range, missing corpus', async () => {
    await expectError(() => computeEditBatch(m, []), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'requests'));
    await expectError(() => computeEditBatch(m, [requestOf(0, [2, 3]), requestOf(1, [3])]), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'layers'));
    await expectError(
      () => computeEditBatch(m, [requestOf(0), { ...requestOf(1), prompt: 'Nobody lives in' }]),
      'SUBJECT_NOT_FOUND',
      (e) => {
        assert.equal(e.data.request, 1);
        assert.match(e.message, /^request 1:/);
      },
    );
    await expectError(() => computeEdit(m, requestOf(0, [2, m.config.nLayer])), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'layers'));
    await expectError(() => computeEdit(m, { ...requestOf(0), target: '' }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'target'));
    const missing = path.join(os.tmpdir(), 'factlens-no-such-corpus.txt');
    await expectError(() => computeEdit(m, { ...requestOf(0, [2, 3]), corpus: missing }), 'FILE_MISSING', (e) => assert.equal(e.data.file, missing));
  });
});

describe('MEMIT from the command line', () => {
  const io = (out: string[], err: string[]) => ({
    stdout: { write: (s: string) => out.push(s) },
    stderr: { write: (s: string) => err.push(s) },
    env: process.env,
  });
  const backend = TEST_BACKEND ? ['--backend', TEST_BACKEND] : [];

  slowTest('factlens edit --method memit --layer 2,3 --json', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const rw = CF[5].requested_rewrite;
    const code = await main(
      ['edit', '--method', 'memit', '--prompt', rw.prompt, '--subject', rw.subject, '--target', rw.target_new.str, '--target-true', rw.target_true.str,
        '--layer', '2,3', '--stats-samples', String(SAMPLES), '--tokens', '0', '--json', ...backend],
      io(out, err),
    );
    assert.equal(code, 0, err.join(''));
    const r = JSON.parse(out.join(''));
    assert.equal(r.method, 'memit');
    assert.deepEqual(r.layers, [2, 3]);
    assert.ok(r.prompts[0].after.targets[0].prob > r.prompts[0].before.targets[0].prob);
    const bad: string[] = [];
    assert.equal(await main(['edit', '--prompt', rw.prompt, '--subject', rw.subject, '--target', 'x', '--layer', '2,3', ...backend], io([], bad)), 2);
    assert.match(bad.join(''), /several are for --method memit/);
  });

  slowTest('factlens eval --method memit --batch 3: all three edited at once, then measured and restored', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await main(
      ['eval', '--dataset', CF_PATH, '--method', 'memit', '--limit', '3', '--batch', '3', '--layer', '2,3', '--gen-every', '0',
        '--stats-samples', String(SAMPLES), '--json', ...backend],
      io(out, err),
    );
    assert.equal(code, 0, err.join(''));
    const r = JSON.parse(out.join(''));
    assert.equal(r.n, 3);
    assert.equal(r.pre.ES, 0);
    assert.ok(r.post.ES > r.pre.ES, `ES ${r.pre.ES} → ${r.post.ES}`);
    assert.ok(r.restore_checks >= 2);
  });
});
