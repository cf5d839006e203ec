/**
 * Prompt files (.prompts), CounterFact-style records (.json / .jsonl) and subject guesses for
 * selections: positions, brackets, escapes, and errors with line and column.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatPromptLine, parsePromptFile, parsePromptLine, entryErrors } from '../formats/prompt-file.js';
import { parseFactFile, positionAt } from '../formats/fact-file.js';
import { normalizeSelection, subjectCandidates } from '../extension/prompts/subject.js';
import { parseMarkedPrompt } from '../engine/trace/marked.js';
import { TINYWORLD } from './helpers/golden.js';

const ROOT = path.resolve(__dirname, '..');

describe('.prompts lines', () => {
  test('prompt, subject, expected answer and their columns', () => {
    const raw = 'The capital of [France] is => Paris';
    const { entry, diagnostics } = parsePromptLine(raw, 4);
    assert.deepEqual(diagnostics, []);
    assert.deepEqual(entry, {
      line: 4,
      prompt: 'The capital of France is',
      subject: 'France',
      expect: 'Paris',
      expectColumns: [30, 35],
      promptColumns: [0, 26],
      subjectColumns: [16, 22],
      subjectOffset: 15,
    });
    assert.equal(raw.slice(16, 22), 'France');
    assert.equal(raw.slice(30, 35), 'Paris');
  });

  test('leading indentation, trailing spaces and comments are not part of the prompt', () => {
    const raw = '   [Paris] is located in the country of   # a city';
    const { entry, diagnostics } = parsePromptLine(raw, 0);
    assert.deepEqual(diagnostics, []);
    assert.equal(entry!.prompt, 'Paris is located in the country of');
    assert.equal(entry!.subject, 'Paris');
    assert.deepEqual(entry!.promptColumns, [3, 39]);
    assert.deepEqual(entry!.subjectColumns, [4, 9]);
    assert.equal(entry!.expect, undefined);
  });

  test('a comment after the answer; # inside a word is text', () => {
    const { entry } = parsePromptLine('[C#] was designed by => Microsoft # language', 0);
    assert.equal(entry!.subject, 'C#');
    assert.equal(entry!.prompt, 'C# was designed by');
    assert.equal(entry!.expect, 'Microsoft');
  });

  test('escapes: \\[ \\] \\# \\\\ \\= are literal', () => {
    const { entry, diagnostics } = parsePromptLine('The \\[sic\\] \\#1 of [A\\]B] is \\=> not an answer => yes', 0);
    assert.deepEqual(diagnostics, []);
    assert.equal(entry!.prompt, 'The [sic] #1 of A]B is => not an answer');
    assert.equal(entry!.subject, 'A]B');
    assert.equal(entry!.expect, 'yes');
    // A backslash before anything else is itself.
    assert.equal(parsePromptLine('a\\b [c] d', 0).entry!.prompt, 'a\\b c d');
    assert.equal(parsePromptLine('a\\\\[b] c', 0).entry!.subject, 'b');
  });

  test('agrees with the engine\'s parseMarkedPrompt on brackets', () => {
    for (const s of ['The capital of [France] is', '[Paris] is in', 'The \\[x\\] of [Y] is', 'A [B C] d']) {
      const engine = parseMarkedPrompt(s);
      const ours = parsePromptLine(s, 0).entry!;
      assert.equal(ours.prompt, engine.prompt, s);
      assert.equal(ours.subject, engine.subject, s);
    }
  });

  test('blank and comment lines hold no prompt', () => {
    assert.deepEqual(parsePromptLine('', 0), { diagnostics: [] });
    assert.deepEqual(parsePromptLine('   ', 0), { diagnostics: [] });
    assert.deepEqual(parsePromptLine('  # [not] a prompt', 0), { diagnostics: [] });
  });

  const errorOf = (raw: string, line = 6) => {
    const r = parsePromptLine(raw, line);
    const e = entryErrors(r);
    assert.ok(e.length > 0, `an error for ${JSON.stringify(raw)}`);
    return e[0];
  };

  test('errors name line and column (1-based in messages, 0-based in fields)', () => {
    const missing = errorOf('The capital of France is', 1);
    assert.equal(missing.line, 1);
    assert.equal(missing.column, 0);
    assert.match(missing.message, /no \[subject\] marked.*\(line 2, column 1\)/);

    const unclosed = errorOf('The capital of [France is');
    assert.equal(unclosed.column, 15);
    assert.match(unclosed.message, /'\[' is never closed \(line 7, column 16\)/);

    const stray = errorOf('The capital of France] is');
    assert.equal(stray.column, 21);
    assert.match(stray.message, /'\]' without '\[' \(line 7, column 22\)/);

    const empty = errorOf('The capital of [] is');
    assert.deepEqual([empty.column, empty.endColumn], [15, 17]);
    assert.match(empty.message, /empty \[\]/);

    const two = errorOf('The [capital] of [France] is');
    assert.equal(two.column, 17);
    assert.match(two.message, /a second \[subject\]/);

    const nested = errorOf('The [cap[ital] of] is');
    assert.equal(nested.column, 8);
    assert.match(nested.message, /nested '\['/);

    const noAnswer = errorOf('The capital of [France] is =>');
    assert.equal(noAnswer.column, 27);
    assert.match(noAnswer.message, /no expected answer after '=>'/);

    const noPrompt = errorOf('=> Paris');
    assert.match(noPrompt.message, /no prompt before '=>'/);

    const arrows = errorOf('The capital of [France] is => Paris => Lyon');
    assert.equal(arrows.column, 36);
    assert.match(arrows.message, /a second '=>'/);
  });

  test('a subject that also occurs earlier is a warning (the engine corrupts the first occurrence)', () => {
    const r = parsePromptLine('Paris, not [Paris] Texas, is in', 3);
    assert.deepEqual(entryErrors(r), []);
    assert.equal(r.diagnostics.length, 1);
    assert.equal(r.diagnostics[0].severity, 'warning');
    assert.deepEqual([r.diagnostics[0].column, r.diagnostics[0].endColumn], [12, 17]);
  });

  test('whole files: entries and diagnostics by line, CRLF too', () => {
    const text = '# header\r\nThe capital of [France] is => Paris\r\n\r\nbroken [line\r\n[Japan] is in';
    const { entries, diagnostics } = parsePromptFile(text);
    assert.deepEqual(entries.map((e) => [e.line, e.subject]), [[1, 'France'], [3, null], [4, 'Japan']]);
    assert.deepEqual(diagnostics.map((d) => [d.line, d.column]), [[3, 7]]);
  });

  test('the sample prompt files parse as documented', () => {
    const capitals = parsePromptFile(fs.readFileSync(path.join(ROOT, 'samples', 'capitals.prompts'), 'utf8'));
    assert.deepEqual(capitals.diagnostics, []);
    assert.ok(capitals.entries.length >= 7);
    assert.ok(capitals.entries.every((e) => e.subject && e.prompt.includes(e.subject)));
    const france = capitals.entries.find((e) => e.subject === 'France')!;
    assert.equal(france.prompt, 'The capital of France is');
    assert.equal(france.expect, 'Paris');
    assert.deepEqual(parsePromptFile(fs.readFileSync(path.join(ROOT, 'samples', 'people.prompts'), 'utf8')).diagnostics, []);
    const mistakes = parsePromptFile(fs.readFileSync(path.join(ROOT, 'samples', 'mistakes.prompts'), 'utf8'));
    const errorLines = [...new Set(mistakes.diagnostics.filter((d) => d.severity === 'error').map((d) => d.line))];
    assert.deepEqual(errorLines, [1, 2, 3, 4, 5, 6], 'every line after the comment has a mistake');
  });

  test('formatPromptLine is the inverse of parsing', () => {
    for (const [prompt, subject, expect] of [
      ['The capital of France is', 'France', 'Paris'],
      ['The [sic] #1 of A]B is', 'A]B', undefined],
      ['x => y of Z', 'Z', 'w'],
    ] as Array<[string, string, string | undefined]>) {
      const line = formatPromptLine(prompt, subject, expect);
      const { entry, diagnostics } = parsePromptLine(line, 0);
      assert.deepEqual(entryErrors({ diagnostics }), [], line);
      assert.equal(entry!.prompt, prompt, line);
      assert.equal(entry!.subject, subject, line);
      assert.equal(entry!.expect, expect, line);
    }
  });
});

describe('CounterFact-style records', () => {
  test('a .json array: one record per requested_rewrite, at the key\'s line', () => {
    const text = fs.readFileSync(path.join(ROOT, 'samples', 'counterfact.json'), 'utf8');
    const r = parseFactFile(text, 'json');
    assert.equal(r.isFactFile, true);
    assert.deepEqual(r.diagnostics, []);
    assert.equal(r.records.length, 3);
    const first = r.records[0];
    assert.equal(first.prompt, 'David Stan was born in');
    assert.equal(first.subject, 'David Stan');
    assert.equal(first.expect, 'Salvador');
    assert.equal(first.targetNew, 'Nairobi');
    assert.equal(first.caseId, 0);
    const lines = text.split('\n');
    for (const rec of r.records) assert.match(lines[rec.line], /"requested_rewrite"/);
    assert.ok(r.records[1].line > first.line);
  });

  test('the shared CounterFact set parses whole', () => {
    const file = path.join(TINYWORLD, 'counterfact-dev.json');
    if (!fs.existsSync(file)) return;
    const r = parseFactFile(fs.readFileSync(file, 'utf8'), 'json');
    assert.equal(r.records.length, 1000);
    assert.ok(r.records.every((x) => x.prompt.includes(x.subject)));
  });

  test('.jsonl: one record per line, facts form too; bad lines have line and column', () => {
    const text = [
      '{"case_id": 7, "requested_rewrite": {"prompt": "The capital of {} is", "subject": "France", "target_true": {"str": "Paris"}, "target_new": {"str": "Rome"}}}',
      '{"subject": "Japan", "object": "Tokyo", "prompt": "The capital of {} is"}',
      '',
      '{"requested_rewrite": {"prompt": "no hole", "subject": "X"}}',
      '{"broken": ',
      '{"unrelated": true}',
    ].join('\n');
    const r = parseFactFile(text, 'jsonl');
    assert.deepEqual(
      r.records.map((x) => [x.line, x.prompt, x.subject, x.expect]),
      [
        [0, 'The capital of France is', 'France', 'Paris'],
        [1, 'The capital of Japan is', 'Japan', 'Tokyo'],
      ],
    );
    assert.deepEqual(r.diagnostics.map((d) => d.line), [3, 4]);
    assert.match(r.diagnostics[0].message, /"\{\}" exactly once/);
    assert.match(r.diagnostics[1].message, /not valid JSON \(line 5, column \d+\)/);
  });

  test('a .json with a syntax error that looks like CounterFact reports its position', () => {
    const text = '[\n  {"requested_rewrite": {"prompt": "{} is", "subject": "A"}},\n  {oops}\n]';
    const r = parseFactFile(text, 'json');
    assert.equal(r.isFactFile, true);
    assert.equal(r.diagnostics.length, 1);
    assert.equal(r.diagnostics[0].line, 2);
    assert.match(r.diagnostics[0].message, /line 3, column \d+/);
    // Other JSON files are not fact files and get no diagnostics.
    assert.deepEqual(parseFactFile('{"name": "x", "version": 1}', 'json'), { records: [], diagnostics: [], isFactFile: false });
    assert.equal(parseFactFile('{oops', 'json').diagnostics.length, 0);
  });

  test('positionAt', () => {
    assert.deepEqual(positionAt('ab\ncd\nef', 4), { line: 1, column: 1 });
    assert.deepEqual(positionAt('ab', 0), { line: 0, column: 0 });
  });
});

describe('subjects of a selection', () => {
  const guess = (s: string) => {
    const g = subjectCandidates(s);
    return g.candidates[g.guess]?.text;
  };

  test('the guess is the first name, without an article or question word', () => {
    assert.equal(guess('The capital of France is'), 'France');
    assert.equal(guess('The Eiffel Tower is located in the city of'), 'Eiffel Tower');
    assert.equal(guess('David Stan was born in'), 'David Stan');
    assert.equal(guess('Where is the Bank of America headquartered'), 'Bank of America');
    assert.equal(guess('The headquarters of Alafield is in'), 'Alafield');
    assert.equal(guess('Alafield X26 laptop is produced by'), 'Alafield X26');
  });

  test('candidates: names and their parts first, then words and short spans, all in the prompt', () => {
    const prompt = 'The Eiffel Tower is located in the city of';
    const { candidates } = subjectCandidates(prompt);
    const texts = candidates.map((c) => c.text);
    assert.deepEqual(texts.slice(0, 3), ['Eiffel Tower', 'Eiffel', 'Tower']);
    assert.ok(texts.includes('city'));
    assert.ok(!texts.includes('Tower is') && !texts.includes('of'), 'spans do not start or end on stop words');
    for (const c of candidates) assert.equal(prompt.slice(c.start, c.start + c.text.length), c.text);
    assert.equal(new Set(texts).size, texts.length, 'no duplicates');
  });

  test('lower-case text still gets a guess; empty text none', () => {
    assert.equal(guess('the capital of france is'), 'capital');
    assert.equal(subjectCandidates('  ,. ').guess, -1);
  });

  test('selections become one-line prompts', () => {
    assert.equal(normalizeSelection('  The capital\n  of France\tis  '), 'The capital of France is');
  });
});
