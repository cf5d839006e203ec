/**
 * Encodings cached across processes (tokenizer/encode-cache.ts), keyed by the tokenizer's
 * fingerprint: the cached ids are the tokenizer's own, a valid entry spares the tokenization,
 * a damaged or ill-fitting one is named and recomputed, a changed tokenizer file or library
 * version gets a new key, and the CLI's trace gives the same result with and without the entry.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTokenizer, type Tokenizer } from '../engine/tokenizer/index.js';
import { TOKENIZER_LIBRARY } from '../engine/tokenizer/hf.js';
import { encodeAll, forgetEncodings } from '../engine/tokenizer/encode-cache.js';
import { writeJsonCache } from '../engine/edit/hash.js';
import { useTempCache } from './helpers/temp-cache.js';
import { defaultModelDir } from '../engine/model/load.js';
import { BACKEND_ARGS, buildCli, factlens, ROOT } from './helpers/cli.js';

const cache = useTempCache('factlens-enc-');
const { warnings } = cache;

const tok = loadTokenizer(defaultModelDir());
const texts = Array.from({ length: 150 }, (_, i) => [`Subject ${i}`, `Émile Zola ${i}`, ` spaced ${i}`, `${i}-ö-日本`][i % 4]);
const files = () => fs.readdirSync(path.join(cache.dir, 'encodings')).map((f) => path.join(cache.dir, 'encodings', f));

/** The tokenizer with a count of encode() calls. */
function counting(t: Tokenizer): { t: Tokenizer; calls: () => number } {
  let n = 0;
  const wrapped = Object.create(t) as Tokenizer;
  wrapped.encode = (s: string) => {
    n++;
    return t.encode(s);
  };
  return { t: wrapped, calls: () => n };
}

test('the library version in fingerprints is the one installed', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', '@huggingface', 'tokenizers', 'package.json'), 'utf8')) as { version: string };
  assert.equal(TOKENIZER_LIBRARY, `@huggingface/tokenizers@${pkg.version}`);
});

test('cached encodings are the tokenizer\'s, and a second process reads instead of encoding', () => {
  const direct = texts.map((s) => tok.encode(s));
  const first = counting(tok);
  assert.deepEqual(encodeAll(first.t, texts), direct);
  assert.equal(first.calls(), texts.length);
  assert.equal(files().length, 1);
  forgetEncodings();
  const second = counting(tok);
  assert.deepEqual(encodeAll(second.t, texts), direct);
  assert.equal(second.calls(), 0, 'read from the cache file');
});

test('a damaged entry, or one that does not fit the tokenizer, is named and recomputed', () => {
  const direct = texts.map((s) => tok.encode(s));
  const [file] = files();
  const buf = fs.readFileSync(file);
  buf[Math.floor(buf.length * 0.7)] ^= 0x04;
  fs.writeFileSync(file, buf);
  forgetEncodings();
  warnings.length = 0;
  const c = counting(tok);
  assert.deepEqual(encodeAll(c.t, texts), direct);
  assert.equal(c.calls(), texts.length);
  assert.ok(warnings.some((w) => w.includes(file) && /damaged/.test(w)), warnings.join('\n'));
  // A well-formed entry with an id beyond the vocabulary (checksum intact).
  const offsets = [0, ...texts.map((_, i) => i + 1)];
  writeJsonCache(file, { fingerprint: tok.fingerprint, offsets, ids: texts.map(() => tok.vocabSize) });
  forgetEncodings();
  warnings.length = 0;
  assert.deepEqual(encodeAll(tok, texts), direct);
  assert.ok(warnings.some((w) => /do not fit/.test(w)), warnings.join('\n'));
});

test('the fingerprint follows the tokenizer file\'s content, not its folder', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-tok-'));
  try {
    const src = path.join(defaultModelDir(), 'tokenizer.json');
    fs.copyFileSync(src, path.join(dir, 'tokenizer.json'));
    assert.equal(loadTokenizer(dir).fingerprint, tok.fingerprint);
    const json = JSON.parse(fs.readFileSync(src, 'utf8')) as { model: { merges: unknown[] } };
    json.model.merges.pop();
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
    assert.notEqual(loadTokenizer(dir).fingerprint, tok.fingerprint);
    assert.match(tok.fingerprint!, /^[0-9a-f]{64}$/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('factlens trace gives the same result with its encodings cached as without', async () => {
  await buildCli();
  fs.rmSync(path.join(cache.dir, 'encodings'), { recursive: true, force: true });
  const run = async () => {
    const r = await factlens(['trace', 'The capital of [France] is', '--samples', '3', '--kind', 'hidden', '--json', ...BACKEND_ARGS], { FACTLENS_CACHE_DIR: cache.dir });
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { noise_scale: number; noise_source: string; scores: unknown; answer: string };
    assert.ok(out.noise_scale > 0 && /1815 subjects|subjects/.test(out.noise_source), JSON.stringify(out.noise_source));
    return { scale: out.noise_scale, source: out.noise_source, scores: out.scores, answer: out.answer };
  };
  const cold = await run();
  assert.equal(files().length, 1, 'the subjects\' encodings were cached');
  const warm = await run();
  assert.deepEqual(warm, cold);
});
