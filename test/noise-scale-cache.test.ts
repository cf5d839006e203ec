/**
 * The 3σ noise scale of a model folder's own subject set is kept on disk (trace/noise.ts:
 * folderScaleKey): a later process reads it instead of working it out, it keys on the subject
 * file's bytes (a changed file is worked out again), a damaged entry is named and recomputed,
 * and given subjects never use it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadModel, defaultModelDir, disposeModel, type LoadedModel } from '../engine/model/load.js';
import { threeSigmaAsync } from '../engine/trace/noise.js';
import { readJsonCache, writeJsonCache } from '../engine/edit/hash.js';
import { useTempCache } from './helpers/temp-cache.js';
import { TEST_BACKEND } from './helpers/model.js';
import { TINYWORLD_GOLDEN, readJson, relDiff } from './helpers/golden.js';

const cache = useTempCache('factlens-scale-');
const entries = () => {
  const dir = path.join(cache.dir, 'noise-scale');
  return fs.existsSync(dir) ? fs.readdirSync(dir).map((f) => path.join(dir, f)) : [];
};
let copy: string;
before(() => {
  // A copy of the embedded model folder whose subject file the tests may change.
  copy = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-scale-model-'));
  for (const f of fs.readdirSync(defaultModelDir())) fs.copyFileSync(path.join(defaultModelDir(), f), path.join(copy, f));
});
after(() => fs.rmSync(copy, { recursive: true, force: true }));

/** The folder's scale in a fresh model (so nothing comes from the in-process memo). */
async function folderScale(dir: string): Promise<{ scale: number; source: string }> {
  const m: LoadedModel = await loadModel({ dir, backend: TEST_BACKEND });
  try {
    return await threeSigmaAsync(m);
  } finally {
    disposeModel(m);
  }
}

test('the folder scale is written once and read back by a later load, equal to the goldens', async () => {
  for (const f of entries()) fs.rmSync(f);
  const first = await folderScale(copy);
  const golden = readJson<{ noise_scale: number }>(TINYWORLD_GOLDEN).noise_scale;
  assert.ok(relDiff(first.scale, golden) < 1e-5, `${first.scale} vs ${golden}`);
  assert.equal(entries().length, 1);
  // Mark the entry: a later load that returns the mark read the disk instead of working it out.
  const [file] = entries();
  const e = readJsonCache<{ key: string; scale: number; source: string }>(file)!;
  writeJsonCache(file, { ...e, scale: 1.25 });
  const again = await folderScale(copy);
  assert.deepEqual(again, { scale: 1.25, source: first.source });
});

test('a changed subject file is worked out again; given subjects never read the folder entry', async () => {
  const facts = path.join(copy, 'facts.jsonl');
  const good = fs.readFileSync(facts, 'utf8');
  try {
    const a = await folderScale(copy);
    fs.writeFileSync(facts, good.split('\n').slice(0, 200).join('\n'));
    const b = await folderScale(copy);
    assert.notEqual(b.scale, a.scale);
    assert.match(b.source, /^3σ of the token embeddings of \d+ subjects/);
    assert.ok(Number(/of (\d+) subjects/.exec(b.source)![1]) < Number(/of (\d+) subjects/.exec(a.source)![1]));
    const m = await loadModel({ dir: copy, backend: TEST_BACKEND });
    try {
      const given = await threeSigmaAsync(m, ['France', 'Paris']);
      assert.match(given.source, /2 given subjects/);
      assert.notEqual(given.scale, b.scale);
    } finally {
      disposeModel(m);
    }
  } finally {
    fs.writeFileSync(facts, good);
  }
});

test('a damaged entry is named and the scale worked out again', async () => {
  for (const f of entries()) fs.rmSync(f);
  const first = await folderScale(copy);
  for (const file of entries()) fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace(/"scale": [0-9.e-]+/, '"scale": 9'));
  cache.warnings.length = 0;
  const again = await folderScale(copy);
  assert.ok(cache.warnings.some((w) => /noise-scale/.test(w) && /damaged/.test(w)), cache.warnings.join('\n'));
  assert.deepEqual(again, first);
});
