/**
 * Evaluation (engine/eval): CounterFact metric definitions on hand-computed cases, the
 * teacher-forced NLL against a direct per-token computation, GE on known text, the sampler
 * against runtime/generate.ts, bad records skipped with their index, the bit-identical restore
 * (and that a broken restore is caught), zsRE token accuracy on a tinyworld-built set, and the
 * `eval` command's JSON and its error for a method that is not available.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import {
  evaluateCounterFact,
  harmonicMean,
  isSkipped,
  parseCounterFactRecord,
  probabilityTest,
  recordMetrics,
  summarizeCounterFact,
  type CaseProbs,
  type CounterFactCase,
} from '../engine/eval/counterfact.js';
import { generationEntropy, ngramEntropy, textEntropy, wordTokenize } from '../engine/eval/ngram.js';
import { scoreItems } from '../engine/eval/nll.js';
import { decodeGeneration, sampleTopK } from '../engine/eval/generation.js';
import { buildTinyworldZsre, evaluateZsre, measureZsre, parseZsreRecord, type ZsreCase } from '../engine/eval/zsre.js';
import { generate } from '../engine/runtime/generate.js';
import { nextTokenLogprobs } from '../engine/predict.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import { site } from '../engine/runtime/sites.js';
import { computeFT } from '../engine/edit/ft.js';
import { editMethods, listEdits, revertAllEdits } from '../engine/edit/apply.js';
import type { EditRecord } from '../engine/edit/types.js';
import * as evalCmd from '../engine/cli/commands/eval.js';
import { parseCommandArgs } from '../engine/cli/args.js';
import { isFactLensError } from '../engine/errors.js';
import { TINYWORLD, readJson } from './helpers/golden.js';
import { model } from './helpers/model.js';
import { slowTest } from './helpers/tier.js';

const CF = readJson<unknown[]>(path.join(TINYWORLD, 'counterfact-dev.json'));
const close = (a: number, b: number, tol = 1e-9) => Math.abs(a - b) <= tol;

function pn(prompt: string, nllNew: number, nllTrue: number) {
  return { prompt, new: nllNew, true: nllTrue, newExact: false, trueExact: false };
}

// ---------------------------------------------------------------------------------------
// metric definitions
// ---------------------------------------------------------------------------------------

test('harmonic mean: known values, 0 when any value is 0', () => {
  assert.ok(close(harmonicMean([1, 2, 4]), 3 / (1 + 1 / 2 + 1 / 4)));
  assert.ok(close(harmonicMean([50, 50, 50]), 50));
  assert.equal(harmonicMean([100, 0, 80]), 0);
  assert.ok(Number.isNaN(harmonicMean([])));
});

test('ES/PS/NS and magnitudes from known NLLs (P = exp(−NLL); NS counts P_true > P_new)', () => {
  const p: CaseProbs = {
    rewrite: [pn('r', 0.5, 1.0)], // P_new > P_true: success
    paraphrase: [pn('p1', 2.0, 1.0), pn('p2', 0.1, 3.0)], // fail, success
    neighborhood: [pn('n1', 1.0, 2.0), pn('n2', 3.0, 0.2), pn('n3', 4.0, 0.1), pn('n4', 0.3, 0.3)], // fail, ok, ok, tie = fail
    attribute: [pn('a', 0.1, 9)], // no metric
  };
  const m = recordMetrics(p, 6.25);
  const P = (x: number) => Math.exp(-x);
  assert.equal(m.ES, 1);
  assert.ok(close(m.EM, P(0.5) - P(1.0)));
  assert.equal(m.PS, 0.5);
  assert.ok(close(m.PM!, (P(2) - P(1) + P(0.1) - P(3)) / 2));
  assert.equal(m.NS, 0.5);
  assert.ok(close(m.NM!, (P(2) - P(1) + P(0.2) - P(3) + P(0.1) - P(4) + 0) / 4));
  assert.equal(m.GE, 6.25);

  // A second record: rewrite fails, no neighbourhood prompts (NS averaged over the first only).
  const q: CaseProbs = { rewrite: [pn('r', 2, 1)], paraphrase: [pn('p', 2, 1), pn('p', 3, 1)], neighborhood: [], attribute: [] };
  const m2 = recordMetrics(q, 5.25);
  assert.equal(m2.ES, 0);
  assert.equal(m2.NS, null);
  const s = summarizeCounterFact([m, m2]).metrics;
  assert.equal(s.ES, 50);
  assert.equal(s.PS, 25);
  assert.equal(s.NS, 50);
  assert.ok(close(s.S, harmonicMean([50, 25, 50])));
  assert.ok(close(s.GE!, 575));
  assert.ok(close(s.EM, (100 * (m.EM + m2.EM)) / 2));
});

// ---------------------------------------------------------------------------------------
// GE
// ---------------------------------------------------------------------------------------

test('word tokenizer follows NLTK word_tokenize on typical model text', () => {
  assert.deepEqual(wordTokenize('The capital of France is Paris.'), ['The', 'capital', 'of', 'France', 'is', 'Paris', '.']);
  assert.deepEqual(wordTokenize("David's car isn't red, he said."), ['David', "'s", 'car', 'is', "n't", 'red', ',', 'he', 'said', '.']);
  assert.deepEqual(wordTokenize('He said "hi" (twice)!'), ['He', 'said', '``', 'hi', "''", '(', 'twice', ')', '!']);
  assert.deepEqual(wordTokenize('U.S. troops cannot go. They left'), ['U.S.', 'troops', 'can', 'not', 'go', '.', 'They', 'left']);
  assert.deepEqual(wordTokenize('is Salvador.The nationality: 1,000'), ['is', 'Salvador.The', 'nationality', ':', '1,000']);
});

test('n-gram entropy and GE on known text', () => {
  // "a b a b": bigrams ab, ba, ab → H2 = H(2/3, 1/3); trigrams aba, bab → H3 = 1 bit.
  const h2 = -(2 / 3) * Math.log2(2 / 3) - (1 / 3) * Math.log2(1 / 3);
  assert.ok(close(ngramEntropy(['a', 'b', 'a', 'b'], 2), h2));
  assert.ok(close(ngramEntropy(['a', 'b', 'a', 'b'], 3), 1));
  assert.ok(close(textEntropy('a b a b'), h2 / 3 + (2 / 3) * 1));
  // Five distinct words: H2 = log2 4, H3 = log2 3.
  assert.ok(close(textEntropy('one two three four five'), 2 / 3 + (2 / 3) * Math.log2(3)));
  assert.equal(textEntropy('word'), 0);
  assert.ok(close(generationEntropy(['a b a b', 'word']), (h2 / 3 + 2 / 3) / 2));
});

// ---------------------------------------------------------------------------------------
// model-based pieces
// ---------------------------------------------------------------------------------------

test('teacher-forced NLL (batched, right-padded, shared rows) equals a direct per-token computation', async () => {
  const m = await model();
  const tok = m.tokenizer;
  const items = [
    { prefix: tok.encode('David Stan was born in'), targets: [tok.encode(' Rio de Janeiro'), tok.encode(' Salvador')] },
    { prefix: tok.encode('The capital of France is'), targets: [tok.encode(' Paris'), tok.encode(' Berlin')] },
    { prefix: tok.encode('Stefan Lopez works as a'), targets: [tok.encode(' sculptor'), tok.encode(' composer')] },
  ];
  const got = scoreItems(m, items);
  for (const [i, it] of items.entries()) {
    for (const [j, t] of it.targets.entries()) {
      // Direct: one forward per target token, on the unpadded prefix + earlier target tokens.
      const rows = t.map((_, k) => [...it.prefix, ...t.slice(0, k)]);
      const lps = nextTokenLogprobs(m, rows);
      const direct = t.map((id, k) => -lps[k][id]);
      const mean = direct.reduce((a, x) => a + x, 0) / direct.length;
      assert.ok(Math.abs(got[i][j].nll - mean) < 1e-4, `item ${i} target ${j}: ${got[i][j].nll} vs ${mean}`);
      got[i][j].tokenNll.forEach((x, k) => assert.ok(Math.abs(x - direct[k]) < 1e-4));
      const argmaxOk = t.every((id, k) => lps[k].every((v) => v <= lps[k][id]));
      assert.equal(got[i][j].allArgmax, argmaxOk);
    }
  }
  // The model knows France → Paris: exact match and P(Paris) > P(Berlin).
  assert.ok(got[1][0].allArgmax);
  assert.ok(got[1][0].nll < got[1][1].nll);
});

test('top-k sampler draws the same tokens as runtime/generate.ts for the same seed', async () => {
  const m = await model();
  const prompts = [m.tokenizer.encode('The capital of France is'), m.tokenizer.encode('The capital of Spain is')];
  assert.equal(prompts[0].length, prompts[1].length);
  const ours = sampleTopK(m, prompts, { totalLength: prompts[0].length + 8, topK: 5, seed: 7 });
  const ref = generate(m, prompts, { maxNewTokens: 8, strategy: 'top-k', topK: 5, seed: 7, useCache: true });
  assert.deepEqual(ours, ref);
  // Lengths: 100 tokens in all per text (prompt included), capped at the context.
  const long = sampleTopK(m, [prompts[0], m.tokenizer.encode('Hi')], { totalLength: 20, seed: 1 });
  assert.equal(long[0].length, 20 - prompts[0].length);
  assert.equal(long[1].length, 20 - 1);
  assert.doesNotMatch(decodeGeneration(m, [...prompts[0], 50256, ...prompts[1]]), /endoftext/);
});

test('bad records are skipped with their index; the rest are evaluated', async () => {
  const m = await model();
  const good = CF[0] as Record<string, any>;
  const rr = good.requested_rewrite;
  const records: unknown[] = [
    good,
    { case_id: 'x', paraphrase_prompts: [], neighborhood_prompts: [] },
    { ...good, requested_rewrite: { ...rr, prompt: 'Somebody was born in' } },
    { ...good, requested_rewrite: { ...rr, target_new: { str: '' } } },
    { ...good, paraphrase_prompts: undefined },
    'not an object',
    CF[1],
  ];
  const r = await evaluateCounterFact(m, records, { genEvery: 0 });
  assert.equal(r.n, 2);
  assert.deepEqual(
    r.skipped.map((s) => s.index),
    [1, 2, 3, 4, 5],
  );
  assert.match(r.skipped[0].reason, /missing requested_rewrite/);
  assert.equal(r.skipped[0].case_id, 'x');
  assert.match(r.skipped[1].reason, /subject not in prompt/);
  assert.match(r.skipped[2].reason, /target_new/);
  assert.match(r.skipped[3].reason, /paraphrase_prompts/);
  assert.equal(r.post.ES, r.pre.ES, 'no edit: post = pre');
  assert.equal(r.pre.GE, null);
});

function caseOf(i: number): CounterFactCase {
  const c = parseCounterFactRecord(CF[i], i);
  assert.ok(!isSkipped(c));
  return c as CounterFactCase;
}

slowTest('after evaluating FT edits the model is restored bit for bit; a broken revert is caught', async () => {
  const m = await model();
  const probe = m.tokenizer.encode('David Stan was born in');
  const logits = () => Buffer.from((nextTokenLogprobs(m, [probe])[0] as Float32Array).buffer).toString('base64');
  const before = logits();
  const edit = (mm: typeof m, c: CounterFactCase) => computeFT(mm, c.request, { constrained: false, steps: 4, layers: [1] });
  // Count after the caches a gradient pass fills on first use: on the native backend forward
  // passes run block graphs, so the tfjs attention's cached q/k/v split is first made by FT's
  // gradient pass, a memo kept with the weights and not a leak.
  tf.tidy(() => {
    const hook = (s: string, h: tf.Tensor3D) => (s === site.mlpOut(1) ? (tf.add(h, 0) as tf.Tensor3D) : h);
    tf.grad((x: tf.Tensor) => tf.sum(tf.mul(forward(m, padBatch([probe]), { hook }).logits!, x)))(tf.scalar(1));
  });
  const tensorsBefore = tf.memory().numTensors;
  const r = await evaluateCounterFact(m, CF.slice(0, 2), { edit, genEvery: 0, perRecord: true });
  assert.equal(r.n, 2);
  assert.equal(r.restore_checks, 4, 'weight and bias of layer 1, per record');
  assert.equal(listEdits(m).length, 0);
  assert.equal(logits(), before, 'logits bit-identical after the evaluation');
  assert.ok(r.per_record![0].post.metrics.EM > r.per_record![0].pre.metrics.EM, 'the edit moved the rewrite prompt');
  assert.ok(tf.memory().numTensors <= tensorsBefore + 2, `tensors ${tensorsBefore} → ${tf.memory().numTensors}`);

  // A revert that does nothing must be detected.
  try {
    await assert.rejects(
      evaluateCounterFact(m, CF.slice(0, 1), { edit, genEvery: 0, revert: () => {} }),
      (e: unknown) => isFactLensError(e) && /bit for bit/.test(e.message),
    );
  } finally {
    revertAllEdits(m);
  }
  assert.equal(logits(), before);
});

slowTest('batch mode: edits of a chunk are applied in turn, measured together, and all reverted', async () => {
  const m = await model();
  const applied: number[] = [];
  const edit = async (mm: typeof m, c: CounterFactCase): Promise<EditRecord> => {
    applied.push(listEdits(mm).length);
    return computeFT(mm, c.request, { constrained: false, steps: 2, layers: [1] });
  };
  const r = await evaluateCounterFact(m, CF.slice(2, 5), { edit, batch: 3, genEvery: 0 });
  assert.equal(r.n, 3);
  assert.deepEqual(applied, [0, 1, 2], 'each edit computed on the model holding the chunk\'s earlier edits');
  assert.equal(listEdits(m).length, 0);
});

slowTest('probability test with generation on one tinyworld record (pre-edit semantics)', async () => {
  const m = await model();
  const c = { ...caseOf(1), gen: true };
  const [p] = probabilityTest(m, [c]);
  assert.equal(p.rewrite.length, 1);
  assert.equal(p.paraphrase.length, 2);
  assert.equal(p.neighborhood.length, c.neighborhood.length);
  assert.equal(p.attribute.length, c.attribute.length);
  // The unedited model believes target_true: it prefers it on the rewrite prompt.
  assert.ok(p.rewrite[0].true < p.rewrite[0].new);
  const r = await evaluateCounterFact(m, [CF[1]], { genEvery: 1, perRecord: true });
  const texts = r.per_record![0].pre.texts!;
  assert.equal(texts.length, c.generation.length);
  texts.forEach((t, i) => assert.ok(t.startsWith(c.generation[i]), t));
  assert.ok(r.pre.GE! > 100 && r.pre.GE! < 1000, `GE ${r.pre.GE}`);
});

// ---------------------------------------------------------------------------------------
// zsRE
// ---------------------------------------------------------------------------------------

slowTest('zsRE token accuracy on a hand-checked record and a tinyworld-built set (tinyworld has no zsRE set)', async () => {
  const m = await model();
  const tok = m.tokenizer;
  // France → Paris is known; "Berlin" is not the model's answer.
  const known = { subject: 'France', src: 'The capital of France is', rephrase: 'The capital of France is', answers: ['Paris'], loc: 'The capital of Spain is', loc_ans: 'Madrid' };
  const wrong = { ...known, answers: ['Berlin'] };
  const [a, b] = [parseZsreRecord(known, 0, m, ''), parseZsreRecord(wrong, 1, m, '')] as ZsreCase[];
  const [ma, mb] = measureZsre(m, [a, b]);
  const lp = nextTokenLogprobs(m, [tok.encode('The capital of France is')])[0];
  const argmax = lp.indexOf(Math.max(...lp));
  assert.equal(ma.rewrite[0], argmax === tok.encode(' Paris')[0]);
  assert.equal(ma.rewrite[0], true);
  assert.equal(mb.rewrite[0], false);
  assert.deepEqual(ma.neighborhood, mb.neighborhood, 'specificity does not depend on the answer');
  const bad = parseZsreRecord({ ...known, subject: 'Germany' }, 2, m);
  assert.match((bad as { reason: string }).reason, /subject not in prompt/);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-zsre-'));
  try {
    const recs = buildTinyworldZsre(path.join(TINYWORLD, 'facts.jsonl'), path.join(TINYWORLD, 'relations.json'), { n: 6, seed: 0 });
    const file = path.join(dir, 'zsre.json');
    fs.writeFileSync(file, JSON.stringify(recs));
    const read = evalCmd.readDataset(file);
    assert.equal(evalCmd.datasetKind(read, file), 'zsre');
    const edit = (mm: typeof m, c: ZsreCase) => computeFT(mm, c.request, { constrained: false, layers: [1], steps: 10 });
    const r = await evaluateZsre(m, read.slice(0, 3), { locJoiner: '', edit });
    assert.equal(r.n, 3);
    assert.ok(r.post.Efficacy > r.pre.Efficacy, `efficacy ${r.pre.Efficacy} → ${r.post.Efficacy}`);
    for (const k of ['Efficacy', 'Paraphrase', 'Specificity'] as const) assert.ok(r.pre[k] >= 0 && r.pre[k] <= 100);
    assert.equal(listEdits(m).length, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------
// the command
// ---------------------------------------------------------------------------------------

function io() {
  let stdout = '';
  let stderr = '';
  return {
    io: { stdout: { write: (s: string) => (stdout += s) }, stderr: { write: (s: string) => (stderr += s) }, env: process.env, log: (l: string) => (stderr += l + '\n') },
    out: () => stdout,
    err: () => stderr,
  };
}

test('factlens eval --json prints pre/post/n/seconds_per_edit; an unavailable method is a clear error', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-eval-'));
  try {
    const file = path.join(dir, 'cf.jsonl');
    fs.writeFileSync(file, [JSON.stringify(CF[0]), '{not json', JSON.stringify(CF[1])].join('\n'));
    const backend = process.env.FACTLENS_TEST_BACKEND ? ['--backend', process.env.FACTLENS_TEST_BACKEND] : [];
    const a = io();
    const args = parseCommandArgs(['--dataset', file, '--method', 'none', '--gen-every', '0', '--json', ...backend], evalCmd.options, 'eval');
    assert.equal(await evalCmd.run(args, a.io), 0);
    const j = JSON.parse(a.out());
    for (const k of ['pre', 'post', 'n', 'seconds_per_edit']) assert.ok(k in j, k);
    for (const k of ['ES', 'PS', 'NS', 'EM', 'PM', 'NM', 'S', 'GE']) assert.ok(k in j.pre, k);
    assert.equal(j.n, 2);
    assert.deepEqual(j.skipped.map((s: { index: number }) => s.index), [1]);
    assert.match(a.err(), /record 1\/2/);

    if (!editMethods().includes('memit')) {
      const b = io();
      const args2 = parseCommandArgs(['--dataset', file, '--method', 'memit', ...backend], evalCmd.options, 'eval');
      await assert.rejects(evalCmd.run(args2, b.io), (e: unknown) => isFactLensError(e) && /memit.*not available/i.test(e.message));
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
