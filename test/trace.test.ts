/**
 * Causal tracing. Parity: every tinyworld golden trace record, with its stored noise, against
 * the eval-mode numpy reference (test/reference/gpt2_ref.py, itself checked against transformers
 * in reference.test.ts; golden.json's own trace scores were computed with dropout active, see
 * README). Subject ranges and the noise scale come straight from golden.json. The fast method
 * must equal the naive one on other prompts; bad input gives named errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { trace, parseMarkedPrompt, windowForDepth, windowLayers, type TraceResult } from '../engine/trace/index.js';
import { isFactLensError } from '../engine/errors.js';
import { TINYWORLD, readJson, relDiff } from './helpers/golden.js';
import { referenceTrace, type GoldenTraceRecord } from './helpers/reference.js';
import { model } from './helpers/model.js';

interface GoldenTrace extends GoldenTraceRecord {
  prompt: string;
  subject: string;
  answer_id: number;
}
const golden = readJson<{ trace: GoldenTrace[]; noise_scale: number }>(path.join(TINYWORLD, 'golden.json'));

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

test('3σ noise scale over the model subject set equals golden.json noise_scale', async () => {
  const m = await model();
  const r = await trace(m, 'The capital of France is', { subject: 'France', kinds: ['hidden'], samples: 1 });
  assert.ok(relDiff(r.noise_scale, golden.noise_scale) < 1e-5, `${r.noise_scale} vs ${golden.noise_scale}`);
  assert.match(r.noise_source, /1815 subjects/);
});

for (const [i, rec] of golden.trace.entries()) {
  test(`golden trace ${i}: "${rec.prompt}" reproduced with its stored noise`, async () => {
    const m = await model();
    const ours = await trace(m, rec.prompt, {
      subject: rec.subject,
      noise: golden.noise_scale,
      noiseValues: rec.noise,
      window: rec.window,
    });
    assert.deepEqual(ours.ids, rec.ids, 'token ids');
    assert.deepEqual(ours.subject_range, rec.subject_range, 'subject range');
    const ref = await referenceTrace(rec);
    assert.equal(ours.answer_id, ref.answer_id, 'answer (clean greedy prediction)');
    assert.ok(Math.abs(ours.clean_prob - ref.clean_prob) < 1e-4, `clean ${ours.clean_prob} vs ${ref.clean_prob}`);
    assert.ok(Math.abs(ours.corrupted_prob - ref.corrupted_prob) < 1e-4, `corrupted ${ours.corrupted_prob} vs ${ref.corrupted_prob}`);
    const worst = maxScoreDiff(ours, ref);
    assert.ok(worst < 1e-4, `max score difference ${worst}`);
    assert.equal(ours.scores.hidden!.length, rec.ids.length);
    assert.equal(ours.scores.hidden![0].length, m.config.nLayer);
  });
}

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
