/**
 * A tokenizer.json loaded once comes back from its snapshot (tokenizer/snapshot.ts): the second
 * load skips the parse and the checks and must tokenize exactly as a full load does, on the
 * corpus, on every token of the vocabulary and on a tokenizer with byte fallback, an unknown
 * token and a token that is not well-formed UTF-16. A damaged or truncated snapshot is named and
 * the full load runs; a changed file is loaded in full (its errors are never hidden by the
 * snapshot of the file it was before).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTokenizer, type Tokenizer } from '../engine/tokenizer/index.js';
import { tokenizerLoadStats } from '../engine/tokenizer/load.js';
import { useTempCache } from './helpers/temp-cache.js';
import { defaultModelDir } from '../engine/model/load.js';
import { FactLensError } from '../engine/errors.js';

const cache = useTempCache('factlens-toksnap-');
const { warnings } = cache;
let work: string;
before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-tokdir-'));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) fs.copyFileSync(path.join(defaultModelDir(), f), path.join(work, f));
});
after(() => fs.rmSync(work, { recursive: true, force: true }));

const TEXTS = ['The capital of France is', ' Émile Zola wrote', 'naïve café 日本 ', '<|endoftext|>Hello', '  two  spaces\tand tabs', 'x'.repeat(300), '🙂 emoji\u0000nul'];
const entries = () => fs.readdirSync(path.join(cache.dir, 'tokenizers')).map((f) => path.join(cache.dir, 'tokenizers', f));

/** Loads `dir` once in full (no snapshot yet) and once from the snapshot the first load wrote. */
function bothWays(dir: string): { full: Tokenizer; snap: Tokenizer } {
  for (const f of fs.existsSync(path.join(cache.dir, 'tokenizers')) ? entries() : []) fs.rmSync(f);
  const { full, fromSnapshot } = tokenizerLoadStats;
  const a = loadTokenizer(dir);
  assert.deepEqual(tokenizerLoadStats, { full: full + 1, fromSnapshot }, 'the first load is a full one');
  const b = loadTokenizer(dir);
  assert.deepEqual(tokenizerLoadStats, { full: full + 1, fromSnapshot: fromSnapshot + 1 }, 'the second load takes the snapshot');
  return { full: a, snap: b };
}

function assertSame(a: Tokenizer, b: Tokenizer, texts: string[]): void {
  assert.equal(b.vocabSize, a.vocabSize);
  assert.equal(b.eosId, a.eosId);
  assert.equal(b.fingerprint, a.fingerprint);
  assert.deepEqual([...b.specialTokens], [...a.specialTokens]);
  for (const t of texts) {
    const ids = a.encode(t);
    assert.deepEqual(b.encode(t), ids, JSON.stringify(t));
    assert.equal(b.decode(ids), a.decode(ids));
  }
}

test('a snapshot load encodes, decodes and sizes exactly as a full load: corpus lines and every token', () => {
  const { full, snap } = bothWays(work);
  assert.equal(entries().length, 1);
  const corpus = fs.readFileSync(path.join(defaultModelDir(), 'corpus.txt'), 'utf8').split('\n').slice(0, 3000);
  assertSame(full, snap, [...TEXTS, ...corpus]);
  for (let id = 0; id < full.vocabSize; id++) {
    const s = full.tokenToString(id);
    assert.equal(snap.tokenToString(id), s, `token ${id}`);
    // The token's own text through the merges (a multi-byte piece may decode to U+FFFD: skipped).
    if (!s.includes('\uFFFD')) assert.deepEqual(snap.encode(s), full.encode(s), `encode of token ${id}`);
  }
});

test('vocab.json + merges.txt: a snapshot load equals a full one; a changed side file loads in full', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-tokdir-'));
  try {
    for (const f of ['vocab.json', 'merges.txt', 'tokenizer_config.json']) fs.copyFileSync(path.join(defaultModelDir(), f), path.join(dir, f));
    const { full, snap } = bothWays(dir);
    const corpus = fs.readFileSync(path.join(defaultModelDir(), 'corpus.txt'), 'utf8').split('\n').slice(0, 1000);
    assertSame(full, snap, [...TEXTS, ...corpus]);
    // The same files as tokenizer.json encode the same (tokenizer.test.ts checks the formats agree).
    assert.deepEqual(snap.encode('The capital of France is'), [464, 3139, 286, 4881, 318]);
    // A side file is part of the key: a new EOS token is a full load that sees it.
    fs.writeFileSync(path.join(dir, 'added_tokens.json'), JSON.stringify({ '<|stop|>': 50257 }));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|stop|>' }));
    const { full: full2 } = tokenizerLoadStats;
    const changed = loadTokenizer(dir);
    assert.equal(tokenizerLoadStats.full, full2 + 1);
    assert.equal(changed.eosId, 50257);
    assert.notEqual(changed.fingerprint, full.fingerprint);
    assert.equal(loadTokenizer(dir).eosId, 50257, 'and its snapshot keeps it');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a byte-fallback tokenizer with an unknown token and a lone surrogate round-trips through its snapshot', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-tokdir-'));
  try {
    const vocab: Record<string, number> = { '<unk>': 0, a: 1, b: 2, ab: 3, abb: 4, '\ud800x': 5, '"q\\': 6 };
    for (let i = 0; i < 256; i++) vocab[`<0x${i.toString(16).toUpperCase().padStart(2, '0')}>`] = 10 + i;
    const tok = {
      version: '1.0',
      added_tokens: [{ id: 300, content: '<|end|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      model: { type: 'BPE', unk_token: '<unk>', byte_fallback: true, fuse_unk: false, vocab, merges: ['a b', 'ab b'] },
    };
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tok));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ eos_token: '<|end|>' }));
    const { full, snap } = bothWays(dir);
    assert.equal(full.eosId, 300);
    assertSame(full, snap, ['abb', 'abab', 'zz', 'é', 'a<|end|>b', '"q\\']);
    assert.equal(snap.tokenToString(5), full.tokenToString(5));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a damaged or truncated snapshot is named and the full load runs', () => {
  for (const damage of [(b: Buffer) => (b[b.length - 3] ^= 0xff), (b: Buffer) => b.subarray(0, b.length - 100)] as const) {
    bothWays(work);
    const [file] = entries();
    const bytes = fs.readFileSync(file);
    const out = damage(bytes);
    fs.writeFileSync(file, Buffer.isBuffer(out) ? out : bytes);
    warnings.length = 0;
    const { full } = tokenizerLoadStats;
    const t = loadTokenizer(work);
    assert.equal(tokenizerLoadStats.full, full + 1);
    assert.ok(warnings.some((w) => w.includes(file) && /damaged/.test(w)), warnings.join('\n'));
    assert.deepEqual(t.encode('The capital of France is'), [464, 3139, 286, 4881, 318]);
    // ...and the full load wrote a good one again.
    const again = loadTokenizer(work);
    assert.equal(tokenizerLoadStats.full, full + 1);
    assert.deepEqual(again.encode('The capital of France is'), [464, 3139, 286, 4881, 318]);
  }
});

test('a changed file is loaded in full: its bad merge is reported even though the old file had a snapshot', () => {
  loadTokenizer(work); // the valid file's snapshot is on disk
  const file = path.join(work, 'tokenizer.json');
  const good = fs.readFileSync(file, 'utf8');
  try {
    const raw = JSON.parse(good) as { model: { merges: Array<string | string[]> } };
    raw.model.merges[3] = 'zzqq xxyy';
    fs.writeFileSync(file, JSON.stringify(raw));
    assert.throws(
      () => loadTokenizer(work),
      (e: unknown) => e instanceof FactLensError && e.code === 'BAD_TOKENIZER' && /model\.merges\[3\]/.test(e.message) && e.message.includes(file),
    );
  } finally {
    fs.writeFileSync(file, good);
  }
});
