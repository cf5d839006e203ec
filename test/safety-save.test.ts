/**
 * `factlens edit --save` cannot destroy or silently lose weights (issue #13, item 1): the
 * built CLI on a copy of the embedded model, with real edits (FT, the fastest method).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BACKEND_ARGS, buildCli, factlens, ROOT } from './helpers/cli.js';

const TINY = path.join(ROOT, 'engine', 'assets', 'tinyworld');
let work: string;
let model: string;

const sha = (f: string) => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
/** A quick real edit (FT at layer 3) that makes "Paris is located in the country of" → Japan. */
const edit = (extra: string[]) =>
  factlens(
    ['edit', '--model', model, '-p', '{} is located in the country of', '-s', 'Paris', '-t', 'Japan', '--method', 'ft', '--layer', '3', '--tokens', '0', ...BACKEND_ARGS, ...extra],
    { FACTLENS_CACHE_DIR: path.join(work, 'cache') },
  );
const topAfterLoad = async (dir: string) => {
  const r = await factlens(['predict', 'Paris is located in the country of', '--model', dir, '--json', '--top', '1', ...BACKEND_ARGS]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).top[0].token as string;
};

before(async () => {
  await buildCli();
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-save-'));
  model = path.join(work, 'm');
  fs.mkdirSync(model);
  for (const f of fs.readdirSync(TINY)) fs.copyFileSync(path.join(TINY, f), path.join(model, f));
});
after(() => fs.rmSync(work, { recursive: true, force: true }));

describe('edit --save refuses destinations that would lose weights', () => {
  test('a symlink to the loaded model folder is refused before the edit is computed; the weights stay', async () => {
    const link = path.join(work, 'link');
    fs.symlinkSync(model, link);
    const before = sha(path.join(model, 'model.safetensors'));
    const r = await edit(['--save', link]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /loaded model's own folder/);
    assert.ok(r.stderr.includes(fs.realpathSync(model)), r.stderr);
    // Refused before the compute: no progress line of the edit was printed.
    assert.doesNotMatch(r.stderr, /^\s*\d+% /m, r.stderr);
    assert.equal(sha(path.join(model, 'model.safetensors')), before);
    assert.equal(await topAfterLoad(model), ' France');
  });

  test('a folder inside the model folder (through a symlinked parent) is refused', async () => {
    const link = path.join(work, 'link2');
    fs.symlinkSync(model, link);
    const r = await edit(['--save', path.join(link, 'sub')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /inside the loaded model's folder/);
    assert.ok(!fs.existsSync(path.join(model, 'sub')));
  });

  test('a non-empty unrelated folder is refused without --force, its files untouched', async () => {
    const dest = path.join(work, 'busy');
    fs.mkdirSync(dest);
    fs.writeFileSync(path.join(dest, 'config.json'), '{"mine": true}\n');
    fs.writeFileSync(path.join(dest, 'vocab.json'), '{"a": 1}\n');
    const r = await edit(['--save', dest]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /is not empty \(config\.json, vocab\.json\).*--force/);
    assert.equal(fs.readFileSync(path.join(dest, 'config.json'), 'utf8'), '{"mine": true}\n');
    assert.deepEqual(fs.readdirSync(dest).sort(), ['config.json', 'vocab.json']);
  });

  test('--force over a folder with a stale shard index: the index goes, the saved edit is what loads', async () => {
    const dest = path.join(work, 'sharded');
    fs.mkdirSync(dest);
    // An older sharded checkpoint of the unedited model: index + one shard + config + tokenizer.
    for (const f of fs.readdirSync(model)) if (f !== 'model.safetensors') fs.copyFileSync(path.join(model, f), path.join(dest, f));
    fs.copyFileSync(path.join(model, 'model.safetensors'), path.join(dest, 'model-00001-of-00001.safetensors'));
    const header = JSON.parse(
      (() => {
        const buf = fs.readFileSync(path.join(model, 'model.safetensors'));
        const n = Number(buf.readBigUInt64LE(0));
        return buf.subarray(8, 8 + n).toString('utf8');
      })(),
    ) as Record<string, unknown>;
    const weightMap = Object.fromEntries(Object.keys(header).filter((k) => k !== '__metadata__').map((k) => [k, 'model-00001-of-00001.safetensors']));
    fs.writeFileSync(path.join(dest, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    fs.writeFileSync(path.join(dest, 'NOTES.txt'), 'keep me\n');
    assert.equal(await topAfterLoad(dest), ' France');

    const r = await edit(['--save', dest, '--force']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!fs.existsSync(path.join(dest, 'model.safetensors.index.json')), 'the stale index was removed');
    assert.ok(!fs.existsSync(path.join(dest, 'model-00001-of-00001.safetensors')), 'the stale shard was removed');
    assert.equal(fs.readFileSync(path.join(dest, 'NOTES.txt'), 'utf8'), 'keep me\n', 'unrelated files stay');
    assert.equal(await topAfterLoad(dest), ' Japan');
    // No temporary sibling is left behind.
    assert.deepEqual(fs.readdirSync(work).filter((f) => f.includes('factlens-tmp')), []);
  });

  test('a new folder: saved, verified, and it loads with the edit', async () => {
    const dest = path.join(work, 'new', 'edited');
    const r = await edit(['--save', dest, '--json']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).saved, dest);
    assert.equal(await topAfterLoad(dest), ' Japan');
  });
});
