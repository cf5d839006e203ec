/**
 * Line → edit template and subject (extension/prompts/template.ts): the bracketed span of a
 * `.prompts` line becomes `{}`, escapes are literal text, a subject that also occurs earlier
 * keeps its bracketed position, CounterFact records give their own template with paraphrase
 * and neighbourhood prompts, and bad lines are refused naming the problem and the place.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseFactFile } from '../formats/fact-file.js';
import { editInputFromPromptLine, editInputFromRecord, editInputFromText, TemplateError, templateOf } from '../extension/prompts/template.js';

const ROOT = path.resolve(__dirname, '..');

describe('edit template from a prompt line', () => {
  test('the bracketed subject becomes {}; the expected answer is the true target', () => {
    assert.deepEqual(editInputFromPromptLine('The capital of [France] is => Paris', 0, 'capitals.prompts:1'), {
      template: 'The capital of {} is',
      subject: 'France',
      targetTrue: 'Paris',
      source: 'capitals.prompts:1',
    });
    assert.deepEqual(editInputFromPromptLine('[Paris] is located in the country of', 3), { template: '{} is located in the country of', subject: 'Paris' });
    assert.deepEqual(editInputFromPromptLine('  The headquarters of [Alafield] is in      # an invented company', 0), {
      template: 'The headquarters of {} is in',
      subject: 'Alafield',
    });
  });

  test('spaces inside the brackets stay outside the subject (the prompt keeps them, as the trace does); multi-word subjects', () => {
    assert.deepEqual(editInputFromPromptLine('[ Akiko Costa ] plays the', 0), { template: '{}  plays the', subject: 'Akiko Costa' });
    assert.deepEqual(editInputFromPromptLine('[Alafield X26 laptop] is produced by', 0), { template: '{} is produced by', subject: 'Alafield X26 laptop' });
  });

  test('escapes are literal characters of the template', () => {
    const r = editInputFromPromptLine('Rating \\[beta\\] of [Alafield] \\# 1 \\=> is', 0);
    assert.equal(r.template, 'Rating [beta] of {} # 1 => is');
    assert.equal(r.subject, 'Alafield');
    assert.deepEqual(editInputFromPromptLine('The path C:\\\\ of [Korea] is', 0).template, 'The path C:\\ of {} is');
  });

  test('a subject that also occurs earlier: the bracketed occurrence is the one replaced', () => {
    const r = editInputFromPromptLine('Paris and [Paris] is in', 0);
    assert.equal(r.template, 'Paris and {} is in');
  });

  test('bad lines are refused naming the problem and the line', () => {
    assert.throws(() => editInputFromPromptLine('The capital of France is', 4), (e: Error) => e instanceof TemplateError && /no \[subject\].*line 5/.test(e.message));
    assert.throws(() => editInputFromPromptLine('The capital of [France is', 0), /never closed.*line 1, column 16/);
    assert.throws(() => editInputFromPromptLine('# a comment', 2), /line 3 has no prompt/);
    assert.throws(() => editInputFromPromptLine('The [capital] of [France] is', 0), /second \[subject\]/);
    assert.throws(() => editInputFromPromptLine('A {} in [France] is', 0), /already contains "\{\}"/);
  });

  test('templateOf checks the offset', () => {
    assert.equal(templateOf('The capital of France is', 'France', 15), 'The capital of {} is');
    assert.throws(() => templateOf('The capital of France is', 'France', 3), /not at offset 3/);
  });

  test('plain text: the first occurrence of the chosen subject', () => {
    assert.deepEqual(editInputFromText('  The capital of Japan is ', 'Japan', 'notes.md:2'), { template: 'The capital of {} is', subject: 'Japan', source: 'notes.md:2' });
    assert.throws(() => editInputFromText('The capital of Japan is', 'Korea'), /does not occur/);
  });
});

describe('edit template from CounterFact records', () => {
  test('the record\'s own template, targets, paraphrases and neighbourhood prompts', () => {
    const text = fs.readFileSync(path.join(ROOT, 'samples', 'counterfact.json'), 'utf8');
    const parsed = parseFactFile(text, 'json');
    const raw = JSON.parse(text)[0];
    const r = editInputFromRecord(parsed.records[0], 'counterfact.json:3');
    assert.deepEqual(r, {
      template: raw.requested_rewrite.prompt,
      subject: raw.requested_rewrite.subject,
      targetTrue: raw.requested_rewrite.target_true.str,
      targetNew: raw.requested_rewrite.target_new.str,
      paraphrases: raw.paraphrase_prompts,
      neighborhood: raw.neighborhood_prompts,
      source: 'counterfact.json:3',
    });
  });

  test('JSON lines records and the flat {subject, prompt, object} form', () => {
    const text = [
      JSON.stringify({ requested_rewrite: { prompt: 'The mother tongue of {} is', subject: 'Hiroshi Dumitru', target_new: { str: 'French' }, target_true: { str: 'Japanese' } } }),
      JSON.stringify({ subject: 'Paris', prompt: '{} is located in the country of', object: 'France' }),
    ].join('\n');
    const [a, b] = parseFactFile(text, 'jsonl').records.map((rec) => editInputFromRecord(rec));
    assert.deepEqual(a, { template: 'The mother tongue of {} is', subject: 'Hiroshi Dumitru', targetTrue: 'Japanese', targetNew: 'French' });
    assert.deepEqual(b, { template: '{} is located in the country of', subject: 'Paris', targetTrue: 'France' });
  });
});
