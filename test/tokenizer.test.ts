import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTokenizer, subjectLastIndexInTemplate, subjectTokenRange, type Tokenizer } from '../engine/tokenizer/index.js';
import { FactLensError } from '../engine/errors.js';
import { TINYWORLD, TINYWORLD_GOLDEN, readJson } from './helpers/golden.js';

interface Golden {
  tokenization: { text: string; ids: number[] }[];
  forward: { prompt: string; ids: number[] }[];
  trace: { prompt: string; subject: string; ids: number[]; subject_range: [number, number]; answer_id: number; answer: string }[];
}

const MODEL = path.join(TINYWORLD, 'model');
const ASSETS = path.resolve(__dirname, '..', 'engine', 'assets', 'tinyworld');
const golden = readJson<Golden>(TINYWORLD_GOLDEN);
const cases: { text: string; ids: number[] }[] = [
  ...golden.tokenization,
  ...golden.forward.map((c) => ({ text: c.prompt, ids: c.ids })),
  ...golden.trace.map((c) => ({ text: c.prompt, ids: c.ids })),
];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-tok-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let dirNo = 0;
/** A fresh temp folder holding `files` (name → contents, or a path to copy from MODEL when `true`). */
function folder(files: Record<string, string | true>): string {
  const dir = path.join(tmp, String(dirNo++));
  fs.mkdirSync(dir);
  for (const [name, content] of Object.entries(files)) {
    if (content === true) fs.copyFileSync(path.join(MODEL, name), path.join(dir, name));
    else fs.writeFileSync(path.join(dir, name), content);
  }
  return dir;
}

const fromJson = loadTokenizer(MODEL);
const vocabMergesDir = folder({ 'vocab.json': true, 'merges.txt': true, 'tokenizer_config.json': true });
const fromVocab = loadTokenizer(vocabMergesDir);
const formats: [string, Tokenizer][] = [
  ['tokenizer.json', fromJson],
  ['vocab.json + merges.txt', fromVocab],
];

function assertBadTokenizer(fn: () => unknown, check: (e: FactLensError) => void): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof FactLensError, `expected FactLensError, got ${String(e)}`);
    assert.equal(e.code, 'BAD_TOKENIZER');
    check(e);
    return true;
  });
}

for (const [name, tok] of formats) {
  test(`${name}: golden tokenization cases match id for id`, () => {
    for (const c of golden.tokenization) assert.deepEqual(tok.encode(c.text), c.ids, JSON.stringify(c.text));
  });

  test(`${name}: golden forward and trace prompts match id for id`, () => {
    for (const c of [...golden.forward, ...golden.trace]) assert.deepEqual(tok.encode(c.prompt), c.ids, c.prompt);
  });

  test(`${name}: decode(encode(x)) === x and decode(golden ids) === text`, () => {
    for (const c of cases) {
      assert.equal(tok.decode(tok.encode(c.text)), c.text);
      assert.equal(tok.decode(c.ids), c.text);
    }
  });

  test(`${name}: vocabulary size, EOS and special tokens`, () => {
    assert.equal(tok.vocabSize, 50257);
    assert.equal(tok.eosId, 50256);
    assert.deepEqual([...tok.specialTokens], [['<|endoftext|>', 50256]]);
    assert.equal(tok.tokenToString(50256), '<|endoftext|>');
  });
}

test('both file formats agree on a sample of the training corpus', () => {
  const lines = fs.readFileSync(path.join(TINYWORLD, 'corpus.txt'), 'utf8').split('\n');
  for (let i = 0; i < lines.length; i += 13) {
    const ids = fromJson.encode(lines[i]);
    assert.deepEqual(fromVocab.encode(lines[i]), ids, `line ${i + 1}`);
    assert.equal(fromJson.decode(ids), lines[i]);
  }
});

test('the assets copy of tinyworld tokenizes the golden cases identically', () => {
  const tok = loadTokenizer(ASSETS);
  for (const c of cases) assert.deepEqual(tok.encode(c.text), c.ids);
});

test('special tokens are matched anywhere in the text, partial ones are not', () => {
  const ids = fromJson.encode('hi<|endoftext|> there');
  assert.ok(ids.includes(50256));
  assert.equal(fromJson.decode(ids), 'hi<|endoftext|> there');
  assert.deepEqual(fromJson.encode('a<|endoftext|><|endoftext|>'), [...fromJson.encode('a'), 50256, 50256]);
  assert.ok(!fromJson.encode('<|endoftext|').includes(50256));
  assert.deepEqual(fromVocab.encode('hi<|endoftext|> there'), ids);
});

test('tokenToString gives the decoded text of one token', () => {
  const trace = golden.trace[0];
  assert.equal(fromJson.tokenToString(trace.answer_id), trace.answer);
  assert.equal(fromJson.tokenToString(6342), ' Paris');
  assert.equal(fromJson.tokenToString(464), 'The');
  assert.equal(fromVocab.tokenToString(6342), ' Paris');
});

test('invalid UTF-8 decodes to U+FFFD, like Hugging Face', () => {
  // "emoji 🚀🔥 end": the rocket and the fire are split across byte-level tokens.
  const c = golden.tokenization.find((t) => t.text.startsWith('emoji'))!;
  assert.equal(fromJson.decode(c.ids), c.text);
  assert.equal(fromJson.tokenToString(12520), ' \uFFFD'); // " " + first two bytes of a 4-byte sequence
  assert.equal(fromJson.decode([12520]), ' \uFFFD');
  // A truncated 4-byte sequence at the end of otherwise valid text.
  const partial = c.ids.slice(0, 3); // "em" + "oji" + " \xF0\x9F"
  assert.equal(fromJson.decode(partial), 'emoji \uFFFD');
});

test('empty input and bad ids', () => {
  assert.deepEqual(fromJson.encode(''), []);
  assert.equal(fromJson.decode([]), '');
  for (const bad of [-1, 50257, 1.5, Number.NaN]) {
    assert.throws(
      () => fromJson.decode([464, bad]),
      (e: unknown) => e instanceof FactLensError && e.code === 'INVALID_ARGUMENT' && e.data.index === 1,
    );
    assert.throws(() => fromJson.tokenToString(bad), (e: unknown) => e instanceof FactLensError && e.code === 'INVALID_ARGUMENT');
  }
});

test('subjectTokenRange matches golden trace subject ranges', () => {
  for (const t of golden.trace) {
    assert.deepEqual(subjectTokenRange(fromJson, t.ids, t.subject), t.subject_range, t.prompt);
    assert.deepEqual(subjectTokenRange(fromVocab, t.ids, t.subject), t.subject_range, t.prompt);
  }
});

test('subjectTokenRange: partial-token subjects, first occurrence, not found', () => {
  const ids = fromJson.encode('The capital of France is');
  // "ranc" lies inside the single token " France" (index 3).
  assert.deepEqual(subjectTokenRange(fromJson, ids, 'ranc'), [3, 4]);
  // A subject spanning the space before it starts at the token holding the space.
  assert.deepEqual(subjectTokenRange(fromJson, ids, ' France is'), [3, 5]);
  assert.deepEqual(subjectTokenRange(fromJson, ids, 'The'), [0, 1]);
  const twice = fromJson.encode('Paris is in France and France is big');
  assert.deepEqual(subjectTokenRange(fromJson, twice, 'France'), [3, 4]);
  assert.equal(subjectTokenRange(fromJson, ids, 'Germany'), null);
  assert.throws(() => subjectTokenRange(fromJson, ids, ''), (e: unknown) => e instanceof FactLensError && e.code === 'INVALID_ARGUMENT');
});

test('subjectLastIndexInTemplate follows ROME', () => {
  const france = subjectLastIndexInTemplate(fromJson, 'The capital of {} is', 'France');
  assert.deepEqual(france, { ids: [464, 3139, 286, 4881, 318], firstSubjectIndex: 3, lastSubjectIndex: 3 });

  // Subject at the start: no leading space is added; multi-token subject.
  const charlotte = subjectLastIndexInTemplate(fromJson, '{} was born in', 'Charlotte Bos');
  assert.deepEqual(charlotte, { ids: [24453, 11404, 14548, 373, 4642, 287], firstSubjectIndex: 0, lastSubjectIndex: 2 });

  // The subject is trimmed and gets exactly one leading space after a prefix.
  const sarah = subjectLastIndexInTemplate(fromJson, 'The mother tongue of {} is', '  Sarah Watanabe ');
  assert.deepEqual(sarah.ids, golden.trace[3].ids);
  assert.equal(sarah.firstSubjectIndex, 4);
  assert.equal(sarah.lastSubjectIndex, 7);

  // Template ending in the subject; prefix, word and suffix are tokenized separately.
  const end = subjectLastIndexInTemplate(fromVocab, 'I met {}', 'Chen Romero');
  assert.deepEqual(end.ids, [...fromVocab.encode('I met'), ...fromVocab.encode(' Chen Romero')]);
  assert.equal(end.lastSubjectIndex, end.ids.length - 1);

  // Separate tokenization can differ from tokenizing the whole string ("{}'s" splits "'s").
  const poss = subjectLastIndexInTemplate(fromJson, "{}'s capital is", 'France');
  assert.deepEqual(poss.ids, [...fromJson.encode('France'), ...fromJson.encode("'s capital is")]);
  assert.equal(poss.lastSubjectIndex, fromJson.encode('France').length - 1);
});

test('subjectLastIndexInTemplate rejects bad templates', () => {
  const isInvalid = (e: unknown) => e instanceof FactLensError && e.code === 'INVALID_ARGUMENT';
  assert.throws(() => subjectLastIndexInTemplate(fromJson, 'The capital of France is', 'France'), isInvalid);
  assert.throws(() => subjectLastIndexInTemplate(fromJson, '{} and {}', 'France'), isInvalid);
  assert.throws(() => subjectLastIndexInTemplate(fromJson, 'The capital of{} is', 'France'), isInvalid);
  assert.throws(() => subjectLastIndexInTemplate(fromJson, 'The capital of {} is', '  '), isInvalid);
});

test('vocab.json + merges.txt without tokenizer_config.json still treats <|endoftext|> as special', () => {
  const tok = loadTokenizer(folder({ 'vocab.json': true, 'merges.txt': true }));
  assert.equal(tok.eosId, 50256);
  assert.deepEqual(tok.encode('<|endoftext|>'), [50256]);
  for (const c of golden.tokenization) assert.deepEqual(tok.encode(c.text), c.ids);
});

test('tokenizer.json with [a, b] pair merges loads the same', () => {
  const raw = readJson<{ model: { merges: unknown[] } }>(path.join(MODEL, 'tokenizer.json'));
  raw.model.merges = raw.model.merges.map((m) => (typeof m === 'string' ? m.split(' ') : m));
  const asPairs = loadTokenizer(folder({ 'tokenizer.json': JSON.stringify(raw) }));
  raw.model.merges = raw.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const asStrings = loadTokenizer(folder({ 'tokenizer.json': JSON.stringify(raw) }));
  for (const c of cases) {
    assert.deepEqual(asPairs.encode(c.text), c.ids);
    assert.deepEqual(asStrings.encode(c.text), c.ids);
  }
});

test('errors: missing folder, no tokenizer files, half of vocab.json + merges.txt', () => {
  const missing = path.join(tmp, 'does-not-exist');
  assertBadTokenizer(() => loadTokenizer(missing), (e) => assert.equal(e.data.file, missing));
  const empty = folder({ 'config.json': '{}' });
  assertBadTokenizer(
    () => loadTokenizer(empty),
    (e) => {
      assert.equal(e.data.file, empty);
      assert.match(e.message, /tokenizer\.json/);
    },
  );
  const onlyVocab = folder({ 'vocab.json': true });
  assertBadTokenizer(() => loadTokenizer(onlyVocab), (e) => assert.equal(e.data.file, path.join(onlyVocab, 'merges.txt')));
});

test('errors: corrupt tokenizer.json names the file and line', () => {
  const dir = folder({ 'tokenizer.json': '{\n  "version": "1.0",\n  "model": {\n    "vocab": {"a": 0,}\n  }\n}\n', 'vocab.json': true, 'merges.txt': true });
  assertBadTokenizer(
    () => loadTokenizer(dir),
    (e) => {
      assert.equal(e.data.file, path.join(dir, 'tokenizer.json'));
      assert.equal(e.data.line, 4);
    },
  );
  const truncated = folder({ 'tokenizer.json': fs.readFileSync(path.join(MODEL, 'tokenizer.json'), 'utf8').slice(0, 5000) });
  assertBadTokenizer(() => loadTokenizer(truncated), (e) => assert.equal(e.data.file, path.join(truncated, 'tokenizer.json')));
});

test('errors: tokenizer.json with the wrong structure names the field', () => {
  const file = (dir: string) => path.join(dir, 'tokenizer.json');
  const noModel = folder({ 'tokenizer.json': '{"added_tokens": []}' });
  assertBadTokenizer(() => loadTokenizer(noModel), (e) => assert.deepEqual([e.data.file, e.data.field], [file(noModel), 'model']));
  const wordPiece = folder({ 'tokenizer.json': '{"model": {"type": "WordPiece", "vocab": {}}}' });
  assertBadTokenizer(() => loadTokenizer(wordPiece), (e) => assert.equal(e.data.field, 'model.type'));
  const badMerge = folder({ 'tokenizer.json': '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b", "a b c"]}}' });
  assertBadTokenizer(() => loadTokenizer(badMerge), (e) => assert.equal(e.data.field, 'model.merges[1]'));
  const unknownMerge = folder({ 'tokenizer.json': '{"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": [["a", "b"]]}}' });
  assertBadTokenizer(
    () => loadTokenizer(unknownMerge),
    (e) => {
      assert.equal(e.data.field, 'model.merges[0]');
      assert.equal(e.data.token, 'ab');
    },
  );
  const badId = folder({ 'tokenizer.json': '{"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}}' });
  assertBadTokenizer(() => loadTokenizer(badId), (e) => assert.equal(e.data.field, 'model.vocab["a"]'));
});

test('errors: vocab.json and merges.txt problems name the file and line', () => {
  const vocab = '{\n"a": 0,\n"b": 1,\n"ab": 2\n}\n';
  const ok = loadTokenizer(folder({ 'vocab.json': vocab, 'merges.txt': '#version: 0.2\na b\n' }));
  assert.deepEqual(ok.encode('ab'), [2]);

  const corruptVocab = folder({ 'vocab.json': '{\n"a": 0,\n"b" 1\n}', 'merges.txt': '#version: 0.2\n' });
  assertBadTokenizer(
    () => loadTokenizer(corruptVocab),
    (e) => assert.deepEqual([e.data.file, e.data.line], [path.join(corruptVocab, 'vocab.json'), 3]),
  );
  const badValue = folder({ 'vocab.json': '{\n"a": 0,\n"b": -1\n}', 'merges.txt': '' });
  assertBadTokenizer(
    () => loadTokenizer(badValue),
    (e) => assert.deepEqual([e.data.file, e.data.line], [path.join(badValue, 'vocab.json'), 3]),
  );
  const badLine = folder({ 'vocab.json': vocab, 'merges.txt': '#version: 0.2\na b\nab\n' });
  assertBadTokenizer(
    () => loadTokenizer(badLine),
    (e) => assert.deepEqual([e.data.file, e.data.line], [path.join(badLine, 'merges.txt'), 3]),
  );
  const unknown = folder({ 'vocab.json': vocab, 'merges.txt': '#version: 0.2\na b\nb a\n' });
  assertBadTokenizer(
    () => loadTokenizer(unknown),
    (e) => assert.deepEqual([e.data.file, e.data.line, e.data.token], [path.join(unknown, 'merges.txt'), 3, 'ba']),
  );
});

test('errors: a corrupt tokenizer_config.json is reported, not ignored', () => {
  const dir = folder({ 'tokenizer.json': true, 'tokenizer_config.json': '{"eos_token": ' });
  assertBadTokenizer(() => loadTokenizer(dir), (e) => assert.equal(e.data.file, path.join(dir, 'tokenizer_config.json')));
});
