/**
 * A tokenizer.json's checks are remembered by its fingerprint (tokenizer/load.ts: checkedBefore):
 * a second load takes the earlier pass and encodes exactly as a checked load does, a damaged entry
 * is named and the checks run again, and a changed file is checked again (its errors are never
 * hidden by an entry of the file it was before).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadTokenizer } from '../engine/tokenizer/index.js';
import { tokenizerCheckStats } from '../engine/tokenizer/load.js';
import { useTempCache } from './helpers/temp-cache.js';
import { defaultModelDir } from '../engine/model/load.js';
import { FactLensError } from '../engine/errors.js';

const cache = useTempCache('factlens-tokcheck-');
const { warnings } = cache;
let work: string;
before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-tokdir-'));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'config.json']) fs.copyFileSync(path.join(defaultModelDir(), f), path.join(work, f));
});
after(() => fs.rmSync(work, { recursive: true, force: true }));

const TEXTS = ['The capital of France is', ' Émile Zola wrote', 'naïve café 日本 ', '<|endoftext|>Hello', '  two  spaces\tand tabs', 'x'.repeat(300)];
const entries = () => fs.readdirSync(path.join(cache.dir, 'tokenizers')).map((f) => path.join(cache.dir, 'tokenizers', f));

test('the second load takes the earlier pass and encodes, decodes and sizes the same', () => {
  const { checked, reused } = tokenizerCheckStats;
  const a = loadTokenizer(work);
  assert.deepEqual(tokenizerCheckStats, { checked: checked + 1, reused });
  assert.equal(entries().length, 1);
  const b = loadTokenizer(work);
  assert.deepEqual(tokenizerCheckStats, { checked: checked + 1, reused: reused + 1 });
  assert.equal(b.vocabSize, a.vocabSize);
  assert.equal(b.eosId, a.eosId);
  assert.equal(b.fingerprint, a.fingerprint);
  for (const t of TEXTS) {
    const ids = a.encode(t);
    assert.deepEqual(b.encode(t), ids, t);
    assert.equal(b.decode(ids), a.decode(ids));
  }
});

test('a damaged entry is named and the checks run again', () => {
  loadTokenizer(work);
  const [file] = entries();
  fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/"maxId": \d+/, '"maxId": 7'));
  warnings.length = 0;
  const { checked } = tokenizerCheckStats;
  const t = loadTokenizer(work);
  assert.equal(tokenizerCheckStats.checked, checked + 1);
  assert.ok(warnings.some((w) => w.includes(file) && /damaged/.test(w)), warnings.join('\n'));
  assert.equal(t.encode('The capital of France is').length, 5);
});

test('a changed file is checked again: its bad merge is reported even though the old file passed', () => {
  loadTokenizer(work); // the valid file's pass is on record
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
