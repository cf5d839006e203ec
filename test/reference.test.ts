/**
 * Validates the independent numpy reference (test/reference/gpt2_ref.py, eval mode, float64):
 *
 * 1. On the GPT-2 architecture fixtures (golden.json made by transformers in eval mode) it matches
 *    Hugging Face: same top-10 ids, log-probs within 1e-5, hidden-state norms within 1e-5 relative.
 * 2. On tinyworld it matches ../shared/tinyworld/golden-eval.json (transformers, eval mode):
 *    the 24 forward prompts and one golden trace, so it can judge the engine on prompts that
 *    have no golden (test/slow/trace-heldout.test.ts).
 * 3. The trace mode's restoration hooks behave as rome-spec.md §1 requires, and its fast path
 *    (resuming a recorded batch) equals the literal one-batch-per-restoration path.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { ARCHS, TINYWORLD_GOLDEN, readJson, relDiff, type GoldenForwardCase } from './helpers/golden.js';
import { referenceForward, referenceTrace, runReference, tinyworldForwardReference, type GoldenTraceRecord } from './helpers/reference.js';

type Case = GoldenForwardCase;

for (const arch of ['gpt2', 'gpt2-bare']) {
  test(`reference matches transformers (eval mode) on archs/${arch}`, async () => {
    const g = readJson<{ cases: Case[] }>(path.join(ARCHS, arch, 'golden.json'));
    const ref = await referenceForward(path.join(ARCHS, arch), g.cases);
    assert.equal(ref.length, g.cases.length);
    g.cases.forEach((c, k) => {
      const r = ref[k];
      const label = `${arch} case ${k} (${c.ids.length} tokens)`;
      assert.deepEqual(r.top10_ids, c.top10_ids, `${label}: top-10 ids`);
      c.top10_logprobs.forEach((v, i) => {
        assert.ok(Math.abs(r.top10_logprobs[i] - v) <= 1e-5, `${label}: logprob ${i}: ${r.top10_logprobs[i]} vs ${v}`);
      });
      c.last_logits_first8.forEach((v, i) => {
        assert.ok(Math.abs(r.last_logits_first8[i] - v) <= 1e-5, `${label}: logit ${i}: ${r.last_logits_first8[i]} vs ${v}`);
      });
      assert.equal(r.hidden_last_token_norms.length, c.hidden_last_token_norms.length, `${label}: hidden entries`);
      c.hidden_last_token_norms.forEach((v, i) => {
        assert.ok(relDiff(r.hidden_last_token_norms[i], v) <= 1e-5, `${label}: hidden[${i}] norm ${r.hidden_last_token_norms[i]} vs ${v}`);
        c.hidden_last_token_first8[i].forEach((x, j) => {
          const y = r.hidden_last_token_first8[i][j];
          assert.ok(Math.abs(y - x) <= 1e-5, `${label}: hidden[${i}][${j}] ${y} vs ${x}`);
        });
      });
    });
  });
}

test('reference matches golden-eval.json on tinyworld: 24 forward prompts and a golden trace', async () => {
  const g = readJson<{
    forward: Case[];
    trace: Array<GoldenTraceRecord & { answer_id: number; clean_prob: number; corrupted_prob: number; scores: Record<string, number[][]> }>;
  }>(TINYWORLD_GOLDEN);
  const ref = await tinyworldForwardReference();
  assert.equal(ref.length, g.forward.length);
  g.forward.forEach((c, k) => {
    assert.deepEqual(ref[k].top10_ids, c.top10_ids, `forward ${k}: top-10 ids`);
    c.top10_logprobs.forEach((v, i) => assert.ok(Math.abs(ref[k].top10_logprobs[i] - v) <= 5e-5, `forward ${k}: logprob ${i}`));
    c.hidden_last_token_norms.forEach((v, i) => assert.ok(relDiff(ref[k].hidden_last_token_norms[i], v) <= 1e-5, `forward ${k}: hidden[${i}] norm`));
  });
  // The shortest golden trace (5 tokens), every score.
  const rec = g.trace[0];
  const r = await referenceTrace(rec);
  assert.equal(r.answer_id, rec.answer_id);
  assert.ok(Math.abs(r.corrupted_prob - rec.corrupted_prob) <= 5e-5, `corrupted ${r.corrupted_prob} vs ${rec.corrupted_prob}`);
  for (const kind of ['hidden', 'mlp', 'attn'] as const) {
    rec.scores[kind].forEach((row, t) =>
      row.forEach((v, l) => assert.ok(Math.abs(r.scores[kind]![t][l] - v) <= 5e-5, `${kind}[${t}][${l}] ${r.scores[kind]![t][l]} vs ${v}`)),
    );
  }
});

test('reference trace: hooks follow rome-spec §1 and the fast path equals the literal one (archs/gpt2)', async () => {
  // Tiny random GPT-2 (3 layers, d = 64): deterministic pseudo-random noise, 4 samples.
  const modelDir = path.join(ARCHS, 'gpt2');
  const ids = [12, 200, 37, 451, 9, 300, 77];
  const [a, b] = [2, 4];
  let s = 12345;
  const rand = () => {
    // xorshift32 -> approx. standard normal (sum of 12 uniforms - 6)
    let acc = 0;
    for (let i = 0; i < 12; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      acc += (s >>> 0) / 4294967296;
    }
    return acc - 6;
  };
  const noise = Array.from({ length: 4 }, () => Array.from({ length: b - a }, () => Array.from({ length: 64 }, rand)));
  const request = { model_dir: modelDir, ids, subject_range: [a, b], noise, noise_scale: 3, window: 2 };
  const [fast, naive] = await Promise.all([runReference('trace', request), runReference('trace', { ...request, naive: true })]);
  const L = 3;
  const T = ids.length;
  assert.equal(fast.answer_id, naive.answer_id);
  assert.ok(Math.abs(fast.corrupted_prob - naive.corrupted_prob) <= 1e-12);
  assert.ok(Math.abs(fast.corrupted_prob - fast.clean_prob) > 1e-4, 'the noise changes the prediction');
  for (const kind of ['hidden', 'mlp', 'attn']) {
    assert.equal(fast.scores[kind].length, T);
    for (let t = 0; t < T; t++) {
      assert.equal(fast.scores[kind][t].length, L);
      for (let l = 0; l < L; l++) {
        assert.ok(Math.abs(fast.scores[kind][t][l] - naive.scores[kind][t][l]) <= 1e-12, `${kind}[${t}][${l}] fast vs naive`);
        // Nothing before the subject is corrupted: restoring there changes nothing.
        if (t < a) assert.ok(Math.abs(fast.scores[kind][t][l] - fast.corrupted_prob) <= 1e-12, `${kind}[${t}][${l}] before subject`);
      }
    }
  }
  // Restoring the last block's output at the last token gives back the clean prediction.
  assert.ok(Math.abs(fast.scores.hidden[T - 1][L - 1] - fast.clean_prob) <= 1e-12);
  // A block output at the last layer at an earlier token cannot reach the last position.
  for (let t = 0; t < T - 1; t++) assert.ok(Math.abs(fast.scores.hidden[t][L - 1] - fast.corrupted_prob) <= 1e-12);
  // answer_id is honoured.
  const fixed = await runReference('trace', { ...request, answer_id: 5, kinds: ['hidden'] });
  assert.equal(fixed.answer_id, 5);
  assert.deepEqual(Object.keys(fixed.scores), ['hidden']);
});
