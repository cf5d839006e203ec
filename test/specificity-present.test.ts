/**
 * How specificity checks show in the editor (extension/specificity/present.ts): the after-line
 * text, Problems messages per verdict, the hover's top-5 table, the status-bar summary.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { decorationText, hoverMarkdown, percent, problemOf, statusText } from '../extension/specificity/present.js';
import type { AppliedEditSummary, SpecificityCheck } from '../engine/protocol.js';

const cand = (token: string, prob: number, id = 1) => ({ id, token, prob, logprob: Math.log(prob) });
const EDIT: AppliedEditSummary = { id: 'e1', subject: 'Paris', target: 'Japan', targetTrue: 'France', method: 'rome', label: 'Paris → Japan' };

function check(verdict: SpecificityCheck['verdict'], before: [string, number], afterTop: [string, number]): SpecificityCheck {
  return {
    prompt: 'The Louvre is in',
    subject: 'Louvre',
    related: verdict === 'moved' || verdict === 'not-reached',
    changed: before[0] !== afterTop[0],
    verdict,
    before: { token: before[0], prob: before[1], top: [cand(before[0], before[1]), cand(' Lyon', 0.0004, 2)] },
    after: { token: afterTop[0], prob: afterTop[1], top: [cand(afterTop[0], afterTop[1], 3)] },
    edits: ['e1'],
  };
}

describe('specificity presentation', () => {
  test('percentages and the after-line text', () => {
    assert.equal(percent(0.9987), '99.9%');
    assert.equal(percent(0.64), '64.0%');
    assert.equal(percent(0.0012), '0.12%');
    assert.equal(percent(1e-7), '<0.01%');
    assert.equal(decorationText(check('unchanged', [' Paris', 0.999], [' Paris', 0.987])), 'Paris 99.9% → Paris 98.7%');
    assert.equal(decorationText(check('collateral', [' Paris', 0.999], [' Tokyo', 0.64])), 'Paris 99.9% → Tokyo 64.0%');
  });

  test('collateral damage is a Warning naming the edit and both answers; not-reached is Information; others none', () => {
    const w = problemOf(check('collateral', [' Paris', 0.999], [' Tokyo', 0.64]), [EDIT]);
    assert.deepEqual(w && { ...w, edits: w.edits.map((e) => e.id) }, {
      kind: 'collateral',
      severity: 'warning',
      message: `edit 'Paris → Japan' changed this answer: " Paris" → " Tokyo"`,
      edits: ['e1'],
    });
    const i = problemOf(check('not-reached', [' France', 0.99], [' France', 0.9]), [EDIT]);
    assert.equal(i?.severity, 'information');
    assert.match(i!.message, /does not reach this phrasing: it answers " France", not " Japan"/);
    assert.equal(problemOf(check('unchanged', [' Paris', 0.9], [' Paris', 0.9]), [EDIT]), null);
    assert.equal(problemOf(check('moved', [' France', 0.9], [' Japan', 0.9]), [EDIT]), null);
    const two = problemOf({ ...check('collateral', [' a', 0.5], [' b', 0.5]), edits: ['e1', 'e2'] }, [EDIT, { ...EDIT, id: 'e2', label: 'Rome → Chile' }]);
    assert.match(two!.message, /^one of the edits 'Paris → Japan', 'Rome → Chile' changed/);
  });

  test('hover: top-5 before and after, the verdict and the applied edits', () => {
    const md = hoverMarkdown(check('collateral', [' Paris', 0.999], [' Tokyo', 0.64]), [EDIT]);
    assert.match(md, /\*\*changed\*\* by an edit about another subject/);
    assert.match(md, /\| 1 \| `" Paris"` \| 99\.9% \| `" Tokyo"` \| 64\.0% \|/);
    assert.match(md, /\| 2 \| `" Lyon"` \| 0\.040% \| {2}\| {2}\|/);
    assert.match(md, /- Paris → Japan \(ROME, was France\)/);
  });

  test('status bar', () => {
    assert.equal(statusText({ unchanged: 23, others: 24 }), 'specificity 23/24 unchanged');
  });
});
