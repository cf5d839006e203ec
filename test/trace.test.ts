/**
 * Causal tracing. Parity: every tinyworld golden trace (../shared/tinyworld/golden-eval.json,
 * made by transformers in eval mode), with its stored noise, window and noise scale: the same
 * token ids, subject range and answer, and clean, corrupted and every restored probability
 * within 1e-4. (The numpy reference, test/reference/gpt2_ref.py, is the second opinion on
 * prompts outside the goldens, in the slow tier.) The fast method must equal the
 * naive one on other prompts; bad input gives named errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { trace, parseMarkedPrompt, windowForDepth, windowLayers, type TraceResult } from '../engine/trace/index.js';
import { isFactLensError } from '../engine/errors.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { prepare } from '../engine/trace/prepare.js';
import { Rng } from '../engine/util/rng.js';
import { TINYWORLD, TINYWORLD_GOLDEN, readJson, relDiff } from './helpers/golden.js';
import { runReference, TINYWORLD_MODEL, type GoldenTraceRecord } from './helpers/reference.js';
import { slowTest } from './helpers/tier.js';
import { model } from './helpers/model.js';

interface GoldenTrace extends GoldenTraceRecord {
  prompt: string;
  subject: string;
  answer_id: number;
  clean_prob: number;
  corrupted_prob: number;
  scores: Record<'hidden' | 'mlp' | 'attn', number[][]>;
}
const golden = readJson<{ trace: GoldenTrace[]; noise_scale: number }>(TINYWORLD_GOLDEN);

function maxScoreDiff(a: TraceResult, b: { scores: TraceResult['scores'] }): number {
  let worst = 0;
  for (const k of ['hidden', 'mlp', 'attn'] as const) {
    const x = a.scores[k];
    const y = b.scores[k];
    if (!x || !y) continue;
    x.forEach((row, t) => row.forEach((v, l) => (worst = Math.max(worst, Math.abs(v - y[t][l])))));
  }
  return worst;
}

test('3σ noise scale over the model subject set equals the goldens\' noise_scale', async () => {
  const m = await model();
  const r = await trace(m, 'The capital of France is', { subject: 'France', kinds: ['hidden'], samples: 1 });
  assert.ok(relDiff(r.noise_scale, golden.noise_scale) < 1e-5, `${r.noise_scale} vs ${golden.noise_scale}`);
  assert.match(r.noise_source, /1815 subjects/);
});

for (const [i, rec] of golden.trace.entries()) {
  test(`golden-eval trace ${i}: "${rec.prompt}" matches transformers with its stored noise (1e-4)`, async () => {
    const m = await model();
    const ours = await trace(m, rec.prompt, {
      subject: rec.subject,
      noise: golden.noise_scale,
      noiseValues: rec.noise,
      window: rec.window,
    });
    assert.deepEqual(ours.ids, rec.ids, 'token ids');
    assert.deepEqual(ours.subject_range, rec.subject_range, 'subject range');
    assert.equal(ours.answer_id, rec.answer_id, 'answer (clean greedy prediction)');
    assert.ok(Math.abs(ours.clean_prob - rec.clean_prob) <= 1e-4, `clean ${ours.clean_prob} vs ${rec.clean_prob}`);
    assert.ok(Math.abs(ours.corrupted_prob - rec.corrupted_prob) <= 1e-4, `corrupted ${ours.corrupted_prob} vs ${rec.corrupted_prob}`);
    for (const k of ['hidden', 'mlp', 'attn'] as const) assert.equal(ours.scores[k]!.length, rec.scores[k].length, `${k}: tokens`);
    const worst = maxScoreDiff(ours, rec);
    assert.ok(worst <= 1e-4, `max score difference ${worst}`);
    assert.equal(ours.scores.hidden!.length, rec.ids.length);
    assert.equal(ours.scores.hidden![0].length, m.config.nLayer);
  });
}

/*
 * Held-out parity: facts and templates drawn at random (seeded) from the model's facts and
 * relation templates, so not the goldens' prompts, with fresh seeded noise, against the
 * float64 numpy reference. The vocabulary softmax sums in two stages (runtime/logsumexp.ts);
 * with the WASM backend's one-register sum these differed by up to 1.6e-4.
 */
slowTest('traces of held-out facts match the numpy reference within 1e-4 (windows 2 and 10)', async (t) => {
  const m = await model();
  const facts = fs.readFileSync(path.join(TINYWORLD, 'facts.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const relations = readJson<Record<string, { templates: string[] }>>(path.join(TINYWORLD, 'relations.json'));
  const goldenPrompts = new Set(golden.trace.map((r) => r.prompt));
  const rng = new Rng(20261201);
  let overall = 0;
  for (let q = 0; q < 4; q++) {
    const f = facts[Math.floor(rng.uniform() * facts.length)];
    const templates = relations[f.relation_id].templates;
    const prompt = templates[Math.floor(rng.uniform() * templates.length)].replace('{}', () => f.subject);
    if (goldenPrompts.has(prompt)) continue;
    const window = q % 2 === 0 ? 2 : 10;
    const opts = { subject: f.subject, noise: golden.noise_scale, window, seed: 100 + q, samples: 10 };
    const p = prepare(m, prompt, opts);
    const [a, b] = p.range;
    const d = m.config.dModel;
    // The standard-normal values behind the seeded noise, as the reference takes them.
    const noise = Array.from({ length: p.samples }, (_, i) =>
      Array.from({ length: b - a }, (_, j) => Array.from(p.noise.subarray((i * (b - a) + j) * d, (i * (b - a) + j + 1) * d), (v) => v / p.scale)),
    );
    const ours = await trace(m, prompt, { ...opts, noiseValues: noise });
    const ref = await runReference('trace', { model_dir: TINYWORLD_MODEL, ids: p.ids, subject_range: p.range, noise, noise_scale: opts.noise, window });
    assert.equal(ours.answer_id, ref.answer_id, `${prompt}: answer`);
    assert.ok(Math.abs(ours.clean_prob - ref.clean_prob) <= 1e-4, `${prompt}: clean ${ours.clean_prob} vs ${ref.clean_prob}`);
    assert.ok(Math.abs(ours.corrupted_prob - ref.corrupted_prob) <= 1e-4, `${prompt}: corrupted ${ours.corrupted_prob} vs ${ref.corrupted_prob}`);
    const worst = maxScoreDiff(ours, ref);
    t.diagnostic(`${JSON.stringify(prompt)} window ${window}: max score difference ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-4, `${prompt}: max score difference ${worst}`);
    overall = Math.max(overall, worst);
  }
  t.diagnostic(`held-out max score difference ${overall.toExponential(2)}`);
});

test('fast equals naive (hidden, windows, severed paths) on prompts outside the goldens', async () => {
  const m = await model();
  const cases: Array<[string, string, number]> = [
    ['The official language of Germany is', 'Germany', 3],
    ['Piotr Pavlov is a citizen of', 'Piotr Pavlov', 2],
  ];
  for (const [prompt, subject, window] of cases) {
    const opts = { subject, samples: 3, seed: 7, window, sever: ['mlp', 'attn'] as Array<'mlp' | 'attn'> };
    const fast = await trace(m, prompt, { ...opts, method: 'fast' });
    const naive = await trace(m, prompt, { ...opts, method: 'naive' });
    assert.equal(fast.answer_id, naive.answer_id);
    assert.ok(Math.abs(fast.corrupted_prob - naive.corrupted_prob) < 1e-5);
    const worst = maxScoreDiff(fast, naive);
    assert.ok(worst < 1e-5, `${prompt}: max difference ${worst}`);
    // Standard errors across the samples, cell by cell, agree too.
    assert.ok(maxScoreDiff({ scores: fast.stderr } as TraceResult, { scores: naive.stderr }) < 1e-5, `${prompt}: standard errors`);
    assert.ok(Math.abs(fast.corrupted_stderr - naive.corrupted_stderr) < 1e-6);
    assert.deepEqual(fast.quality.verdict, naive.quality.verdict);
    for (const k of ['mlp', 'attn'] as const) {
      fast.severed![k]!.forEach((row, t) =>
        row.forEach((v, l) => assert.ok(Math.abs(v - naive.severed![k]![t][l]) < 1e-5, `severed ${k} [${t}][${l}]`)),
      );
    }
    assert.ok(fast.work.token_layers * 3 < naive.work.token_layers, `work ${fast.work.token_layers} vs ${naive.work.token_layers}`);
  }
});

test('seeded noise is reproducible; an expected answer is traced instead of the greedy one', async () => {
  const m = await model();
  const a = await trace(m, 'The capital of France is', { subject: 'France', samples: 4, seed: 3, kinds: ['hidden'] });
  const b = await trace(m, 'The capital of France is', { subject: 'France', samples: 4, seed: 3, kinds: ['hidden'] });
  assert.deepEqual(a.scores, b.scores);
  const c = await trace(m, 'The capital of France is', { subject: 'France', samples: 4, seed: 4, kinds: ['hidden'] });
  assert.notDeepEqual(a.scores, c.scores);
  const e = await trace(m, 'The capital of France is', { subject: 'France', samples: 2, kinds: ['hidden'], expect: 'Berlin' });
  assert.equal(e.answer.token, ' Berlin');
  assert.ok(e.clean_prob < 0.1);
});

test('subject given as a token range, or marked in brackets', async () => {
  const m = await model();
  const marked = parseMarkedPrompt('The mother tongue of [Sarah Watanabe] is');
  assert.deepEqual(marked, { prompt: 'The mother tongue of Sarah Watanabe is', subject: 'Sarah Watanabe' });
  const byText = await trace(m, marked.prompt, { subject: marked.subject!, samples: 2, kinds: ['hidden'] });
  const byRange = await trace(m, marked.prompt, { subjectRange: byText.subject_range, samples: 2, kinds: ['hidden'] });
  assert.deepEqual(byRange.scores, byText.scores);
  assert.equal(parseMarkedPrompt('no subject here').subject, null);
  assert.equal(parseMarkedPrompt('a \\[literal\\] [x] y').prompt, 'a [literal] x y');
});

test('window rule: 10 of 48 layers scaled to depth, at least 2; reference interval', () => {
  assert.equal(windowForDepth(48), 10);
  assert.equal(windowForDepth(8), 2);
  assert.equal(windowForDepth(12), 3);
  assert.deepEqual(windowLayers(0, 10, 8), [0, 5]);
  assert.deepEqual(windowLayers(7, 10, 8), [2, 8]);
  assert.deepEqual(windowLayers(3, 2, 8), [2, 4]);
});

async function expectError(p: Promise<unknown>, code: string, field?: string) {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isFactLensError(e), `not a FactLensError: ${String(e)}`);
    assert.equal(e.code, code);
    if (field) assert.equal(e.data.field, field);
    return true;
  });
}

test('errors: missing subject, bad noise, bad options, over-long prompt, malformed brackets', async () => {
  const m = await model();
  await expectError(trace(m, 'The capital of France is', { subject: 'Spain' }), 'SUBJECT_NOT_FOUND', 'subject');
  await expectError(trace(m, 'The capital of France is', {}), 'INVALID_ARGUMENT', 'subject');
  await expectError(trace(m, 'The capital of France is', { subject: 'France', noiseValues: [[[1, 2]]], samples: 1 }), 'INVALID_ARGUMENT', 'noise');
  await expectError(trace(m, 'The capital of France is', { subject: 'France', samples: 0 }), 'INVALID_ARGUMENT', 'samples');
  await expectError(trace(m, 'The capital of France is', { subject: 'France', kinds: ['mlp', 'neuron' as 'mlp'] }), 'INVALID_ARGUMENT', 'kinds');
  await expectError(trace(m, 'The capital of France is', { subject: 'France', noise: -1 }), 'INVALID_ARGUMENT', 'noise');
  await expectError(trace(m, 'The capital of France is', { subjectRange: [4, 9] }), 'INVALID_ARGUMENT', 'subjectRange');
  await expectError(trace(m, 'word '.repeat(200), { subject: 'word' }), 'PROMPT_TOO_LONG', 'prompt');
  assert.throws(() => parseMarkedPrompt('The [capital of [France]] is'), /nested '\[' at column 17/);
  assert.throws(() => parseMarkedPrompt('The capital of [France is'), /never closed/);
  assert.throws(() => parseMarkedPrompt('[a] and [b]'), /second \[subject\]/);
});

test('cancellation stops a trace with CANCELLED', async () => {
  const m = await model();
  const control = { cancelled: false, onProgress: () => (control.cancelled = true) };
  await expectError(trace(m, 'The capital of France is', { subject: 'France', samples: 2 }, control), 'CANCELLED');
});

test('a trace scoped to the last subject token computes exactly that row of the full trace (the layer choice)', async () => {
  const m = await model();
  const opts = { subject: 'Charlotte Bos', kinds: ['mlp' as const], window: 1, samples: 3, seed: 7 };
  const full = await trace(m, 'Charlotte Bos was born in', opts);
  const scoped = await trace(m, 'Charlotte Bos was born in', opts, {}, { tokens: 'last-subject' });
  const last = full.subject_range[1] - 1;
  assert.ok(last > full.subject_range[0], 'a multi-token subject');
  assert.deepEqual(scoped.scores.mlp![last], full.scores.mlp![last]);
  scoped.scores.mlp!.forEach((row, t) => {
    if (t !== last) assert.ok(row.every(Number.isNaN), `token ${t} is not traced`);
  });
  assert.ok(scoped.work.token_layers < full.work.token_layers, `${scoped.work.token_layers} < ${full.work.token_layers}`);
});
