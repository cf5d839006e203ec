/**
 * ROME editing on the embedded tinyworld model: statistics (C = KᵀK/N, cache), context
 * templates, the rank-one invariants (output at the edit key = v*, any key moves by
 * (k·u)·v_r), efficacy on CounterFact records, revert (bit-identical logits), stacking,
 * save + reload, fast-gradient equivalence, errors, and the `factlens edit` command.
 *
 * Every cache goes to a fresh temporary FACTLENS_CACHE_DIR. Statistics use a small sample of
 * the corpus (1,000 documents, ~14k tokens) to keep the file at a few minutes.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { disposeModel, loadModel, type LoadedModel } from '../engine/model/load.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import { interventionHook } from '../engine/runtime/interventions.js';
import { site } from '../engine/runtime/sites.js';
import { subjectLastIndexInTemplate } from '../engine/tokenizer/index.js';
import {
  applyEdit,
  computeEdit,
  contextTemplates,
  layerStats,
  listEdits,
  modelContentHash,
  probePrompts,
  readCorpus,
  revertAllEdits,
  revertEdit,
  romeEditParts,
  saveModel,
  secondMoment,
  importNpzStats,
  chooseLayer,
  type EditRecord,
  type RomeParts,
} from '../engine/edit/index.js';
import { cholesky, choleskySolve, matVec } from '../engine/edit/linalg.js';
import { FrozenWeights, withFastGradients } from '../engine/edit/fastgrad.js';
import { main } from '../engine/cli/main.js';
import { TEST_BACKEND } from './helpers/model.js';
import { expectError } from './helpers/errors.js';
import { FactLensError } from '../engine/errors.js';
import { TINYWORLD } from './helpers/golden.js';
import { editSession } from './helpers/edit-session.js';
import { slowTest } from './helpers/tier.js';

let m: LoadedModel;
const CACHE = editSession('edit', (x) => (m = x));
const LAYER = 3;
const SAMPLES = 1000;
const CF = JSON.parse(fs.readFileSync(path.join(TINYWORLD, 'counterfact-dev.json'), 'utf8')) as Array<{
  requested_rewrite: { prompt: string; subject: string; target_new: { str: string }; target_true: { str: string } };
  paraphrase_prompts: string[];
  neighborhood_prompts: string[];
}>;
const CF_PATH = path.join(TINYWORLD, 'counterfact-dev.json');


function tmpFile(name: string, text: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-edit-'));
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
}

function requestOf(i: number) {
  const rw = CF[i].requested_rewrite;
  return { prompt: rw.prompt, subject: rw.subject, target: rw.target_new.str, targetTrue: rw.target_true.str, layers: [LAYER] };
}

/** Runs fn in a tidy scope and reads its tensor (typed arrays never leave a tidy: slow). */
function hostOf(fn: () => tf.Tensor): Float32Array {
  const t = tf.tidy(fn);
  const data = t.dataSync() as Float32Array;
  t.dispose();
  return data;
}

function logitsOf(model: LoadedModel, prompts: string[]): Float32Array {
  const rows = prompts.map((p) => model.tokenizer.encode(p));
  return hostOf(() => forward(model, padBatch(rows)).logits!);
}

/** k·W + b on the backend (float32), as the forward computes the MLP output. */
function layerOutput(model: LoadedModel, layer: number, k: ArrayLike<number>): Float64Array {
  const w = model.weights.blocks[layer].mlpOut;
  return Float64Array.from(
    hostOf(() => {
      const y = tf.matMul(tf.tensor2d(Array.from(k), [1, k.length]), w.w);
      return w.b ? tf.add(y, w.b) : y;
    }),
  );
}

function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

describe('linear algebra', () => {
  test('Cholesky solve of a random SPD system', () => {
    const n = 40;
    const a = new Float64Array(n * n);
    const x0 = Array.from({ length: n }, (_, i) => Math.sin(i + 1));
    const g = Array.from({ length: n * n }, (_, i) => Math.cos(i * 1.7) + ((i * 7919) % 13) / 13);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let s = i === j ? 0.1 : 0;
        for (let k = 0; k < n; k++) s += g[i * n + k] * g[j * n + k];
        a[i * n + j] = s;
      }
    const b = matVec(a, x0, n);
    const x = choleskySolve(cholesky(a, n), b);
    assert.ok(maxRelDiff(x, x0) < 1e-8, `solve error ${maxRelDiff(x, x0)}`);
  });
});

describe('second-moment statistics', () => {
  const docs = [
    'The capital of France is Paris.',
    'Sarah Johansson spoke the language Chinese.',
    '',
    'Larissa Rossi works as a politician.',
    'The manufacturer of Bolt One11 drone is Cormotors.',
  ];

  test('C equals KᵀK/N over every token, computed directly; the second call hits the cache', async () => {
    const corpus = tmpFile('small.txt', docs.join('\n') + '\n');
    const s1 = await layerStats(m, LAYER, { corpus });
    assert.equal(s1.cached, false);
    assert.equal(s1.documents, 4);
    // Direct: each document alone, every token's key, summed in float64.
    const f = m.config.dMlp;
    const direct = new Float64Array(f * f);
    let n = 0;
    for (const d of docs.filter((x) => x)) {
      const ids = m.tokenizer.encode(d);
      const k = hostOf(() => {
        const reads = new Map<string, tf.Tensor3D>();
        forward(m, padBatch([ids]), { hook: interventionHook([{ site: site.mlpPost(LAYER), op: 'read' }], reads), stopAfterLayer: LAYER });
        return reads.get(site.mlpPost(LAYER))!;
      });
      for (let t = 0; t < ids.length; t++) {
        for (let i = 0; i < f; i++) {
          const ki = k[t * f + i];
          for (let j = 0; j < f; j++) direct[i * f + j] += ki * k[t * f + j];
        }
      }
      n += ids.length;
    }
    assert.equal(s1.count, n);
    const c = secondMoment(s1);
    for (let i = 0; i < direct.length; i++) direct[i] /= n;
    assert.ok(maxRelDiff(c, direct) < 1e-5, `C differs from KᵀK/N by ${maxRelDiff(c, direct)}`);
    // Symmetric.
    for (let i = 0; i < 50; i++) assert.equal(c[i * f + (i * 7) % f], c[((i * 7) % f) * f + i]);

    const s2 = await layerStats(m, LAYER, { corpus });
    assert.equal(s2.cached, true);
    assert.equal(s2.file, s1.file);
    assert.ok(s2.file!.startsWith(CACHE), s2.file!);
    assert.deepEqual(Array.from(s2.sum.subarray(0, 1000)), Array.from(s1.sum.subarray(0, 1000)));
    assert.equal(s2.count, s1.count);

    // The same documents as .jsonl give the same statistics (another corpus hash: computed).
    const jsonl = tmpFile('small.jsonl', docs.filter((x) => x).map((text) => JSON.stringify({ text })).join('\n'));
    const s3 = await layerStats(m, LAYER, { corpus: jsonl });
    assert.equal(s3.cached, false);
    assert.equal(s3.count, s1.count);
    assert.ok(maxRelDiff(s3.sum, s1.sum) < 1e-6);

    // A subset (seeded choice) is another cache entry.
    const s4 = await layerStats(m, LAYER, { corpus, samples: 2 });
    assert.equal(s4.documents, 2);
    assert.ok(s4.count < s1.count);
  });

  test('the document count of a token budget is worked out once per tokenizer and corpus', async () => {
    const corpus = tmpFile('budget.txt', docs.join('\n') + '\n');
    let encodes = 0;
    const tokenizer = new Proxy(m.tokenizer, {
      get: (t, k) => (k === 'encode' ? (s: string) => (encodes++, t.encode(s)) : Reflect.get(t, k)),
    });
    const counted = { ...m, tokenizer };
    const s1 = await layerStats(counted, LAYER, { corpus, minTokens: 12 });
    assert.ok(s1.documents < 4, `a 12-token budget took ${s1.documents} documents`);
    const first = encodes;
    assert.ok(first > 0);
    // A statistics cache hit: nothing to tokenize, the budget's document count included.
    const s2 = await layerStats(counted, LAYER, { corpus, minTokens: 12 });
    assert.equal(s2.cached, true);
    assert.equal(s2.documents, s1.documents);
    assert.equal(encodes, first, 'the second call tokenized the corpus again');
    // Another budget is another answer.
    const s3 = await layerStats(counted, LAYER, { corpus, minTokens: 10_000 });
    assert.equal(s3.documents, 4);
    assert.ok(encodes > first);
  });

  test('progress reports an ETA; cancellation stops the job', async () => {
    const corpus = tmpFile('c.txt', Array.from({ length: 40 }, (_, i) => `Document number ${i} is about Paris.`).join('\n'));
    const messages: string[] = [];
    await layerStats(m, LAYER, { corpus, batchTokens: 64 }, { onProgress: (_, msg) => messages.push(msg) });
    assert.ok(messages.some((x) => /ETA \d+ s/.test(x)), messages.join('\n'));
    const control = { cancelled: false, onProgress: () => (control.cancelled = true) };
    await expectError(() => layerStats(m, LAYER + 1, { corpus, batchTokens: 64 }, control), 'CANCELLED', () => {});
  });

  test('missing and empty corpora are errors naming the file', async () => {
    const missing = path.join(os.tmpdir(), 'factlens-no-such-corpus.txt');
    await expectError(() => layerStats(m, LAYER, { corpus: missing }), 'FILE_MISSING', (e) => assert.equal(e.data.file, missing));
    const empty = tmpFile('empty.txt', '\n\n  \n');
    await expectError(() => layerStats(m, LAYER, { corpus: empty }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.file, empty));
    const bad = tmpFile('bad.jsonl', '{"text": "ok"}\n{"body": "no text"}\n');
    assert.throws(() => readCorpus(bad), (e: FactLensError) => e.code === 'INVALID_ARGUMENT' && e.data.file === bad && e.data.line === 2);
  });

  test('imports the reference .npz layout (mom2.mom2, mom2.count)', async (t) => {
    const py = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' });
    if (py.status !== 0) return t.skip('python3 with numpy is not available to write an .npz');
    const corpus = tmpFile('n.txt', docs.join('\n'));
    const s = await layerStats(m, LAYER, { corpus });
    const f = s.f;
    const raw = tmpFile('mom2.f32', '');
    fs.writeFileSync(raw, Buffer.from(Float32Array.from(s.sum).buffer));
    const npz = path.join(path.dirname(raw), 'stats.npz');
    const script =
      `import numpy as np; a=np.fromfile(${JSON.stringify(raw)},dtype=np.float32).reshape(${f},${f}); ` +
      `np.savez(${JSON.stringify(npz)}, **{'mom2.mom2': a, 'mom2.count': np.array(${s.count}), 'sample_size': np.array(4)})`;
    const r = spawnSync('python3', ['-c', script], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const imp = importNpzStats(npz, LAYER, f);
    assert.equal(imp.count, s.count);
    assert.ok(maxRelDiff(imp.sum, s.sum) < 1e-6);
    await expectError(async () => importNpzStats(npz, LAYER, f + 1), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.file, npz));
  });
});

describe('context templates', () => {
  test('"{}" + 10 of length 5 + 10 of length 10, sanitised, deterministic and cached', () => {
    const a = contextTemplates(m);
    assert.equal(a.cached, false);
    assert.equal(a.templates.length, 21);
    assert.equal(a.templates[0], '{}');
    for (const t of a.templates.slice(1)) {
      assert.ok(t.endsWith('. {}'), t);
      assert.equal(t.split('{}').length, 2, t);
      assert.ok(!t.includes('<|endoftext|>') && !t.includes('\n\n'), t);
    }
    const lens = a.templates.slice(1).map((t) => m.tokenizer.encode(t.slice(0, -4)).length);
    assert.ok(lens.slice(0, 10).every((n) => n <= 6) && lens.slice(10).some((n) => n > 6), lens.join(','));
    const b = contextTemplates(m);
    assert.equal(b.cached, true);
    assert.deepEqual(b.templates, a.templates);
  });
});

describe('ROME', () => {
  let parts: RomeParts;
  let partsRef: RomeParts;

  before(async () => {
    parts = await romeEditParts(m, { ...requestOf(0), formula: 'consistent' }, {}, { statsSamples: SAMPLES });
    partsRef = await romeEditParts(m, { ...requestOf(0), formula: 'reference' }, {}, { statsSamples: SAMPLES });
  });

  test('record: rank-one delta at the layer, diagnostics, model hash; the model is untouched', () => {
    const r = parts.record;
    assert.equal(r.method, 'rome');
    assert.deepEqual(r.layers, [LAYER]);
    assert.equal(r.deltas.length, 1);
    const d = r.deltas[0];
    assert.equal(d.kind, 'rank-one');
    if (d.kind === 'rank-one') {
      assert.equal(d.u.length, m.config.dMlp);
      assert.equal(d.v.length, m.config.dModel);
    }
    assert.equal(r.modelHash, modelContentHash(m));
    for (const k of ['k_dot_u', 'delta_w_norm', 'loss_initial', 'loss_final', 'seconds_v', 'seconds_stats']) {
      assert.equal(typeof r.info[k], 'number', k);
    }
    assert.ok((r.info.loss_final as number) < (r.info.loss_initial as number));
    assert.equal(r.request.target, CF[0].requested_rewrite.target_new.str);
    assert.equal(listEdits(m).length, 0);
    // v* loss trajectory: the weight-decay term is computed on the host and included.
    const s = parts.v.steps;
    assert.ok(s.length >= 2 && s.length <= 20);
    assert.equal(s[0].kl, 0);
    assert.equal(s[0].weightDecay, 0);
  });

  test("consistent: the edited layer maps k̄ to v*, and any key k moves by exactly (k·u)·v_r", () => {
    const { keys, v, update } = parts;
    const beforeBar = layerOutput(m, LAYER, keys.kBar);
    const beforeBare = layerOutput(m, LAYER, keys.kBare);
    const rnd = Float64Array.from({ length: m.config.dMlp }, (_, i) => Math.abs(Math.sin(i * 12.9898)) * 0.2);
    const beforeRnd = layerOutput(m, LAYER, rnd);
    applyEdit(m, parts.record);
    try {
      const atBar = layerOutput(m, LAYER, keys.kBar);
      assert.ok(maxRelDiff(atBar, v.vStar) < 1e-4, `output at k̄ vs v*: ${maxRelDiff(atBar, v.vStar)}`);
      for (const [k, b0] of [
        [keys.kBare, beforeBare],
        [rnd, beforeRnd],
      ] as const) {
        const after1 = layerOutput(m, LAYER, k);
        let ku = 0;
        for (let i = 0; i < k.length; i++) ku += k[i] * update.u[i];
        const moved = after1.map((x, j) => x - b0[j]);
        const expected = update.vR.map((x) => ku * x);
        assert.ok(maxRelDiff(moved, expected) < 2e-3, `change vs (k·u)·v_r: ${maxRelDiff(moved, expected)}`);
      }
      void beforeBar;
    } finally {
      revertEdit(m, parts.record.id);
    }
  });

  test("reference: the edit prompt's own MLP output (the forward at k_bare) becomes v*", () => {
    const rw = CF[0].requested_rewrite;
    const { ids, lastSubjectIndex } = subjectLastIndexInTemplate(m.tokenizer, rw.prompt, rw.subject);
    const readOut = () =>
      Float64Array.from(
        hostOf(() => {
          const reads = new Map<string, tf.Tensor3D>();
          forward(m, padBatch([ids]), { hook: interventionHook([{ site: site.mlpOut(LAYER), op: 'read' }], reads), stopAfterLayer: LAYER });
          return tf.slice(reads.get(site.mlpOut(LAYER))!, [0, lastSubjectIndex, 0], [1, 1, -1]);
        }),
      );
    applyEdit(m, partsRef.record);
    try {
      const out = readOut();
      assert.ok(maxRelDiff(out, partsRef.v.vStar) < 1e-4, `m(k_bare) vs v*: ${maxRelDiff(out, partsRef.v.vStar)}`);
    } finally {
      revertEdit(m, partsRef.record.id);
    }
    assert.equal(partsRef.record.info.k_dot_u, partsRef.record.info.k_bare_dot_u);
    assert.equal(parts.record.info.k_dot_u, parts.record.info.k_bar_dot_u);
  });

  test('revert restores bit-identical logits; stacked edits revert from W0', async () => {
    const prompts = ['The capital of France is', CF[0].requested_rewrite.prompt.replace('{}', CF[0].requested_rewrite.subject)];
    const w0 = m.weights.blocks[LAYER].mlpOut.w;
    const l0 = logitsOf(m, prompts);
    applyEdit(m, parts.record);
    const l1 = logitsOf(m, prompts);
    assert.notDeepEqual(Array.from(l1.subarray(0, 50)), Array.from(l0.subarray(0, 50)));
    revertEdit(m, parts.record.id);
    assert.equal(m.weights.blocks[LAYER].mlpOut.w, w0, 'the original tensor is back');
    assert.deepEqual(logitsOf(m, prompts), l0);

    // Stack A then B; reverting A leaves exactly W0 + Δ_B (as if only B had been applied).
    const b: EditRecord = { ...partsRef.record, id: 'edit-b' };
    applyEdit(m, parts.record);
    applyEdit(m, b);
    assert.deepEqual(
      listEdits(m).map((r) => r.id),
      [parts.record.id, 'edit-b'],
    );
    revertEdit(m, parts.record.id);
    const onlyB = logitsOf(m, prompts);
    revertAllEdits(m);
    applyEdit(m, b);
    assert.deepEqual(logitsOf(m, prompts), onlyB);
    revertAllEdits(m);
    assert.equal(m.weights.blocks[LAYER].mlpOut.w, w0);
    assert.deepEqual(logitsOf(m, prompts), l0);
    assert.throws(() => revertEdit(m, 'nope'), (e: FactLensError) => e.code === 'INVALID_ARGUMENT' && e.data.field === 'id');
  });

  test('applying a record computed on another model is refused', () => {
    assert.throws(
      () => applyEdit(m, { ...parts.record, id: 'x', modelHash: 'f'.repeat(64) }),
      (e: FactLensError) => e.code === 'INVALID_ARGUMENT' && e.data.field === 'modelHash',
    );
    assert.equal(listEdits(m).length, 0);
  });

  slowTest('efficacy: the edit prompt now predicts the new target (CounterFact records 1–3)', async () => {
    for (const i of [1, 2, 3]) {
      const rw = CF[i].requested_rewrite;
      const prompt = rw.prompt.replace('{}', rw.subject);
      const first = m.tokenizer.tokenToString(m.tokenizer.encode(` ${rw.target_new.str}`)[0]);
      const pre = probePrompts(m, [prompt], [rw.target_new.str, rw.target_true.str])[0];
      assert.notEqual(pre.top.token, first, `record ${i} already predicts the target`);
      const rec = await computeEdit(m, requestOf(i), {}, { statsSamples: SAMPLES });
      applyEdit(m, rec);
      const post = probePrompts(m, [prompt], [rw.target_new.str, rw.target_true.str])[0];
      revertEdit(m, rec.id);
      assert.equal(post.top.token, first, `record ${i}: top token after the edit`);
      assert.ok(post.targets[0].prob > post.targets[1].prob, `record ${i}: P(new) > P(true)`);
    }
  });

  test('save + reload gives the same predictions (float32 checkpoint)', async () => {
    applyEdit(m, parts.record);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-saved-'));
    try {
      const prompts = ['The capital of France is', CF[0].requested_rewrite.prompt.replace('{}', CF[0].requested_rewrite.subject)];
      const expected = logitsOf(m, prompts);
      const wEdited = m.weights.blocks[LAYER].mlpOut.w.dataSync();
      const saved = saveModel(m, dir);
      assert.ok(saved.files.includes('model.safetensors') && saved.files.includes('tokenizer.json'), saved.files.join(','));
      const m2 = await loadModel({ dir, backend: TEST_BACKEND ?? m.backend });
      try {
        assert.deepEqual(m2.weights.blocks[LAYER].mlpOut.w.dataSync(), wEdited);
        const got = logitsOf(m2, prompts);
        assert.ok(maxRelDiff(got, expected) < 1e-6, `reloaded logits differ by ${maxRelDiff(got, expected)}`);
        assert.notEqual(modelContentHash(m2), modelContentHash(m));
        const journal = JSON.parse(fs.readFileSync(path.join(dir, 'factlens-edits.json'), 'utf8'));
        assert.equal(journal.edits[0].id, parts.record.id);
      } finally {
        disposeModel(m2);
      }
      assert.throws(() => saveModel(m, m.dir), (e: FactLensError) => e.code === 'INVALID_ARGUMENT');
    } finally {
      revertEdit(m, parts.record.id);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  slowTest('v* modes (suffix / blocks / full) and the fast gradient give the same loss trajectory', async () => {
    const traj = async (opts: object) =>
      (await romeEditParts(m, requestOf(0), {}, { statsSamples: SAMPLES, hparams: { vNumGradSteps: 4 }, ...opts })).v.steps.map((s) => s.loss);
    const ref = await traj({ vForward: 'full', fastGrad: false });
    // Op-by-op losses agree to float32 rounding. The fused vocabulary loss (the default of
    // 'suffix' and 'blocks') sums the softmax in float64, and Adam's first steps move each
    // component by ≈ lr·sign(g), so components whose gradient is near zero can step the other
    // way: its trajectory agrees to 1e-3, its step-0 loss (no step taken yet) to 1e-4.
    const cases: Array<[object, number]> = [
      [{ vForward: 'suffix', fusedVocab: false }, 1e-4],
      [{ vForward: 'blocks', fusedVocab: false }, 1e-4],
      [{ vForward: 'full' }, 1e-4],
      [{ vForward: 'suffix' }, 1e-3],
      [{ vForward: 'blocks' }, 1e-3],
    ];
    for (const [o, tol] of cases) {
      const t = await traj(o);
      assert.equal(t.length, ref.length);
      t.forEach((x, i) => assert.ok(Math.abs(x - ref[i]) <= (i === 0 ? 1e-4 : tol) * Math.max(1, Math.abs(ref[i])), `${JSON.stringify(o)} step ${i}: ${x} vs ${ref[i]}`));
    }
  });

  test('the frozen-weight gradient equals the stock gradient', () => {
    const d = m.config.dModel;
    const ids = m.tokenizer.encode('The capital of France is');
    const f = (x: tf.Tensor) => {
      const hook = interventionHook([{ site: site.mlpOut(1), op: 'add', value: x }]);
      return tf.sum(tf.slice(tf.logSoftmax(forward(m, padBatch([ids]), { hook }).logits!), [0, 0], [1, 500])) as tf.Scalar;
    };
    const x0 = tf.tensor1d(Array.from({ length: d }, (_, i) => Math.sin(i) * 0.1));
    const stock = hostOf(() => tf.grad(f)(x0));
    const frozen = new FrozenWeights();
    const fast = withFastGradients(frozen, () => hostOf(() => tf.grad(f)(x0)));
    frozen.release();
    x0.dispose();
    assert.ok(maxRelDiff(fast, stock) < 1e-4, `fast vs stock gradient: ${maxRelDiff(fast, stock)}`);
  });
});

describe('edit errors', () => {
  const base = () => requestOf(0);
  test('subject missing from the prompt', async () => {
    await expectError(() => computeEdit(m, { ...base(), prompt: 'Someone was born in' }), 'SUBJECT_NOT_FOUND', (e) => assert.equal(e.data.field, 'subject'));
    await expectError(() => computeEdit(m, { ...base(), subject: '  ' }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'subject'));
    await expectError(() => computeEdit(m, { ...base(), prompt: '{} and {} were born in' }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'prompt'));
  });
  test('empty target', async () => {
    await expectError(() => computeEdit(m, { ...base(), target: ' ' }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'target'));
  });
  test('layer out of range', async () => {
    await expectError(() => computeEdit(m, { ...base(), layers: [m.config.nLayer] }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'layer'));
    await expectError(() => computeEdit(m, { ...base(), layers: [-1] }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'layer'));
  });
  test('missing or empty corpus', async () => {
    const missing = path.join(os.tmpdir(), 'factlens-missing-corpus.txt');
    await expectError(() => computeEdit(m, { ...base(), corpus: missing }), 'FILE_MISSING', (e) => assert.equal(e.data.file, missing));
    const empty = tmpFile('empty.txt', '');
    await expectError(() => computeEdit(m, { ...base(), corpus: empty }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.file, empty));
  });
  test('unknown method', async () => {
    await expectError(() => computeEdit(m, { ...base(), method: 'nope' as never }), 'INVALID_ARGUMENT', (e) => assert.equal(e.data.field, 'method'));
  });
});

describe('layer choice', () => {
  slowTest('causal tracing on a facts file picks a layer ≥ 1 (cached per model and facts hash)', async () => {
    const facts = tmpFile(
      'facts.jsonl',
      fs
        .readFileSync(path.join(m.dir, 'facts.jsonl'), 'utf8')
        .split('\n')
        .filter((_, i) => i % 700 === 5)
        .join('\n'),
    );
    const a = await chooseLayer(m, { facts, limit: 4 });
    assert.ok(a.layer >= 1 && a.layer < m.config.nLayer, `layer ${a.layer}`);
    assert.ok(a.layer >= a.trace!.peakLayer);
    assert.equal(a.trace!.aieLastSubject.length, m.config.nLayer);
    const b = await chooseLayer(m, { facts, limit: 4 });
    assert.equal(b.cached, true);
    assert.equal(b.layer, a.layer);
  });
});

describe('factlens edit', () => {
  slowTest('--json: before/after probabilities, generations, layer, k·u, ‖ΔW‖, timings', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const rw = CF[0].requested_rewrite;
    const code = await main(
      [
        'edit',
        '--prompt', rw.prompt,
        '--subject', rw.subject,
        '--target', rw.target_new.str,
        '--target-true', rw.target_true.str,
        '--layer', String(LAYER),
        '--check', CF[0].paraphrase_prompts[0],
        '--stats-samples', String(SAMPLES),
        '--tokens', '8',
        '--json',
        ...(TEST_BACKEND ? ['--backend', TEST_BACKEND] : []),
      ],
      { stdout: { write: (s: string) => out.push(s) }, stderr: { write: (s: string) => err.push(s) }, env: process.env },
    );
    assert.equal(code, 0, err.join(''));
    const r = JSON.parse(out.join(''));
    assert.equal(r.layer, LAYER);
    assert.equal(r.prompts.length, 2);
    const p0 = r.prompts[0];
    assert.ok(p0.after.targets[0].prob > p0.before.targets[0].prob);
    assert.ok(p0.after.targets[0].prob > p0.after.targets[1].prob);
    assert.equal(typeof p0.generationBefore, 'string');
    assert.equal(typeof r.kDotU, 'number');
    assert.equal(typeof r.deltaWNorm, 'number');
    assert.equal(r.timings.statsCached, true);
    assert.ok(err.join('').includes('v* step'), 'progress on stderr');
  });

  test('errors name the field', async () => {
    const err: string[] = [];
    const code = await main(['edit', '--prompt', 'Nobody was born in', '--subject', 'David Stan', '--target', 'Paris', '--layer', '2'], {
      stdout: { write: () => {} },
      stderr: { write: (s: string) => err.push(s) },
      env: process.env,
    });
    assert.equal(code, 1);
    assert.match(err.join(''), /field: subject/);
    void CF_PATH;
  });
});
