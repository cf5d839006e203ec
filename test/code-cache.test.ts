/**
 * The CLI launcher's V8 code cache (bin/code-cache.js): a child process per run, as a user runs
 * the CLI, each with its own FACTLENS_CACHE_DIR. A small bundle shows every case of the cache
 * (first run, reuse, damaged entry, changed bundle of the same length, unwritable folder,
 * switched off); the real CLI shows that a trace is the same with the cache as without it.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..');
const LOADER = path.join(ROOT, 'bin', 'code-cache.js');
const BIN = path.join(ROOT, 'bin', 'factlens.js');

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  /** What the loader reported of the entry: none / used / rejected / damaged. */
  cache: string[];
}

function run(script: string, args: string[], env: NodeJS.ProcessEnv): Run {
  const r = spawnSync(process.execPath, [script, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, FACTLENS_CODE_CACHE_REPORT: '1', ...env },
    timeout: 120_000,
  });
  const cache = [...r.stderr.matchAll(/^code cache: (\w+) /gm)].map((m) => m[1]);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, cache };
}

function entries(cacheDir: string): string[] {
  const dir = path.join(cacheDir, 'code');
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
}

describe('code cache with a small bundle', () => {
  let work: string;
  let bundle: string;
  let runner: string;
  const source = (word: string) =>
    // An ESM import the way the bundle loads webgpu (engine/util/esm-import.ts): in code restored
    // from the cache, Node 20's own import() fails, so a run that uses the entry checks the hook.
    `'use strict';\nconst imp = globalThis[Symbol.for('factlens.importEsm')] ?? ((s) => import(s));\nexports.say = () => imp('node:os').then((os) => ${JSON.stringify(word)} + ' ' + require('node:path').basename(__filename) + ' ' + typeof os.cpus);\n`;
  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-code-cache-'));
    bundle = path.join(work, 'bundle.js');
    runner = path.join(work, 'run.js');
    fs.writeFileSync(runner, `void (require(${JSON.stringify(LOADER)}).requireWithCodeCache(${JSON.stringify(bundle)}).say().then((s) => process.stdout.write(s)));\n`);
  });

  test('first run writes an entry; the next one uses it and gives the same output', () => {
    const cacheDir = path.join(work, 'c1');
    fs.writeFileSync(bundle, source('alpha'));
    const a = run(runner, [], { FACTLENS_CACHE_DIR: cacheDir });
    assert.equal(a.status, 0, a.stderr);
    assert.deepEqual(a.cache, ['none']);
    assert.equal(entries(cacheDir).length, 1);
    const b = run(runner, [], { FACTLENS_CACHE_DIR: cacheDir });
    assert.equal(b.status, 0, b.stderr);
    assert.deepEqual(b.cache, ['used']);
    assert.equal(b.stdout, a.stdout);
    assert.equal(a.stdout, 'alpha bundle.js function');
  });

  test('a damaged entry is discarded, never handed to V8, and written again', () => {
    const cacheDir = path.join(work, 'c2');
    fs.writeFileSync(bundle, source('alpha'));
    assert.equal(run(runner, [], { FACTLENS_CACHE_DIR: cacheDir }).status, 0);
    const [name] = entries(cacheDir);
    const file = path.join(cacheDir, 'code', name);
    const bytes = fs.readFileSync(file);
    bytes[bytes.length - 5] ^= 0xff;
    fs.writeFileSync(file, bytes);
    const r = run(runner, [], { FACTLENS_CACHE_DIR: cacheDir });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.cache, ['damaged']);
    assert.match(r.stdout, /^alpha /);
    assert.deepEqual(run(runner, [], { FACTLENS_CACHE_DIR: cacheDir }).cache, ['used']);
  });

  test('a changed bundle of the same length gets a new entry and runs its own code', () => {
    const cacheDir = path.join(work, 'c3');
    fs.writeFileSync(bundle, source('alpha'));
    assert.equal(run(runner, [], { FACTLENS_CACHE_DIR: cacheDir }).status, 0);
    const before = entries(cacheDir);
    fs.writeFileSync(bundle, source('omega'));
    assert.equal(fs.statSync(bundle).size, Buffer.byteLength(source('alpha')));
    const r = run(runner, [], { FACTLENS_CACHE_DIR: cacheDir });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.cache, ['none']);
    assert.match(r.stdout, /^omega /);
    const after = entries(cacheDir);
    assert.equal(after.length, 1, 'the old bundle\'s entry is removed');
    assert.notDeepEqual(after, before);
  });

  test('an unwritable cache folder or FACTLENS_NO_CODE_CACHE=1 still runs the bundle', () => {
    fs.writeFileSync(bundle, source('alpha'));
    const blocker = path.join(work, 'not-a-folder');
    fs.writeFileSync(blocker, 'a file where the cache folder would be');
    const r = run(runner, [], { FACTLENS_CACHE_DIR: blocker });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^alpha /);
    const off = run(runner, [], { FACTLENS_CACHE_DIR: path.join(work, 'c4'), FACTLENS_NO_CODE_CACHE: '1' });
    assert.equal(off.status, 0, off.stderr);
    assert.deepEqual(off.cache, []);
    assert.deepEqual(entries(path.join(work, 'c4')), []);
  });
});

describe('code cache with the real CLI', () => {
  test('a trace is the same with the cache as without it', () => {
    if (!fs.existsSync(path.join(ROOT, 'dist', 'engine', 'cli.js'))) {
      assert.fail('dist/engine/cli.js is missing: run npm run build (test/cli.test.ts builds it too)');
    }
    const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-code-cache-cli-'));
    const args = ['trace', 'The capital of [France] is', '--kind', 'hidden', '--json'];
    const strip = (s: string) => JSON.stringify({ ...JSON.parse(s), elapsed_ms: 0 });
    const off = run(BIN, args, { FACTLENS_CACHE_DIR: cacheDir, FACTLENS_NO_CODE_CACHE: '1' });
    const first = run(BIN, args, { FACTLENS_CACHE_DIR: cacheDir });
    const second = run(BIN, args, { FACTLENS_CACHE_DIR: cacheDir });
    for (const r of [off, first, second]) assert.equal(r.status, 0, r.stderr);
    assert.deepEqual([off.cache, first.cache, second.cache], [[], ['none'], ['used']]);
    assert.equal(strip(first.stdout), strip(off.stdout));
    assert.equal(strip(second.stdout), strip(off.stdout));
  });
});
