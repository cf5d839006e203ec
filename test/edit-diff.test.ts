/**
 * The edit view's pure parts (webviews/edit/diff.ts) on recorded real edits
 * (test/fixtures/edit-*.json): the verdict and its measured reason, target-token matching,
 * the changed words of generations, and the paired top-5 rows.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { changedWords, isTargetToken, romeDiagnostics, topRows, verdictOf } from '../webviews/edit/diff.js';
import type { EditDiff } from '../webviews/edit/protocol.js';

const ROOT = path.resolve(__dirname, '..');
const fixture = (name: string) => JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'fixtures', name), 'utf8')) as EditDiff;

describe('edit verdict', () => {
  test('took: the new target is the top prediction on the edit prompt after the edit', () => {
    const v = verdictOf(fixture('edit-france-rome.json'));
    assert.equal(v.took, true);
    assert.match(v.headline, /^The edit took: " Rome"/);
    assert.equal(v.advice, '');
  });

  test('did not take: the measured k·u ratio is the reason, and what to try', () => {
    const d = fixture('edit-lyon-portugal.json');
    const v = verdictOf(d);
    assert.equal(v.took, false);
    const ratio = romeDiagnostics(d.edit).kRatio!;
    assert.ok(ratio < 0.5);
    assert.match(v.reason, new RegExp(`only ${Math.round(ratio * 100)}% of the change \\(k·u ratio ${ratio.toFixed(2)}\\)`));
    assert.match(v.advice, /reference formula/);
  });

  test("the engine's own verdict wins when the record has one", () => {
    const d = fixture('edit-lyon-portugal.json');
    const v = verdictOf({ ...d, edit: { ...d.edit, took: false, reason: 'v* capped at the clamp radius' } });
    assert.equal(v.reason, 'v* capped at the clamp radius');
  });

  test('target tokens: the first token of the target, leading space as GPT-2 writes it', () => {
    assert.ok(isTargetToken(' Rome', 'Rome'));
    assert.ok(isTargetToken(' New', 'New York'));
    assert.ok(!isTargetToken(' Romania', 'Rome'));
    assert.ok(!isTargetToken(' ', 'Rome'));
  });
});

describe('changed words and top-5 rows', () => {
  test('words of the new generation not in the common sequence are marked', () => {
    const w = changedWords(' Paris. The official language of France is French.', ' Rome. The official language of France is Italian.');
    assert.deepEqual(
      w.filter((x) => x.changed).map((x) => x.text),
      ['Rome.', 'Italian.'],
    );
    assert.equal(w.map((x) => x.text).join(''), ' Rome. The official language of France is Italian.');
    assert.deepEqual(changedWords('same text', 'same text'), [{ text: 'same text', changed: false }]);
  });

  test('every token of either top-5 gets a before and an after bar (0 where absent)', () => {
    const d = fixture('edit-france-rome.json').prompts[0];
    const rows = topRows(d.before, d.after);
    const tokens = new Set([...d.before.top.slice(0, 5), ...d.after.top.slice(0, 5)].map((c) => c.token));
    assert.equal(rows.length, 2 * tokens.size);
    const rome = rows.filter((r) => r.token === ' Rome');
    assert.deepEqual(rome.map((r) => r.side), ['before', 'after']);
    assert.equal(rome[1].prob, d.after.top[0].prob);
  });
});

test('v* p(new) in the view is exp(−NLL), the figure the verdict quotes; target_prob_final only for older records', () => {
  const base = { id: 'x', request: { prompt: '{} is in', subject: 'A', target: 'B' }, method: 'rome' as const, layers: [3], createdAt: '' };
  const now = romeDiagnostics({ ...base, info: { nll_final: Math.log(1e5), target_prob_final: 0.0048 } } as never);
  assert.ok(Math.abs(now.vStarProb! - 1e-5) < 1e-12, String(now.vStarProb));
  const old = romeDiagnostics({ ...base, info: { target_prob_final: 0.0048 } } as never);
  assert.equal(old.vStarProb, 0.0048);
});
