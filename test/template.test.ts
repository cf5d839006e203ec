/**
 * "{}" templates are filled literally everywhere: a subject containing `$&` (or `$'`, `` $` ``,
 * `$$`), which String.prototype.replace would expand, stays as written — in the helper, a
 * CounterFact record's rewrite prompt, a fact file's prompts and trace-avg's facts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fillTemplate } from '../formats/template.js';
import { factFilePrompts } from '../formats/fact-file.js';
import { parseCounterFactRecord, isSkipped } from '../engine/eval/counterfact.js';
import { fillPrompt } from '../engine/trace/average.js';

const SUBJECTS = ['Rock$&Roll', "A$'B", 'C$`D', 'E$$F', '$1 Corp'];

test('fillTemplate puts the text in literally, once, and leaves a template without "{}" alone', () => {
  for (const s of SUBJECTS) {
    assert.equal(fillTemplate('The capital of {} is', s), `The capital of ${s} is`);
    // What String.replace does with the same arguments (the bug this prevents):
    if (s.includes('$&')) assert.notEqual('The capital of {} is'.replace('{}', s), `The capital of ${s} is`);
  }
  assert.equal(fillTemplate('{} and {}', 'x'), 'x and {}');
  assert.equal(fillTemplate('no hole', 'x'), 'no hole');
});

test('a CounterFact record, a fact file and trace-avg facts keep a subject with $& as written', () => {
  const subject = 'Rock$&Roll';
  const record = {
    case_id: 0,
    requested_rewrite: { prompt: '{} was founded in', subject, target_new: { str: 'Paris' }, target_true: { str: 'Rome' }, relation_id: 'P740' },
    paraphrase_prompts: [`${subject} began in`],
    neighborhood_prompts: ['Alafield was founded in'],
  };
  const c = parseCounterFactRecord(record, 0);
  assert.ok(!isSkipped(c), JSON.stringify(c));
  assert.equal(c.rewritePrompt, 'Rock$&Roll was founded in');
  const prompts = factFilePrompts(JSON.stringify([record]), 'json');
  const rewrite = prompts.find((p) => p.role === 'rewrite');
  assert.ok(rewrite, JSON.stringify(prompts));
  assert.equal(rewrite.prompt, 'Rock$&Roll was founded in');
  assert.equal(fillPrompt({ subject, prompt: 'The founder of {} is', object: 'x' }), 'The founder of Rock$&Roll is');
});
