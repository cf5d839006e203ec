/**
 * Damaged cache files are named and recomputed, never trusted; temporary files of a writer
 * killed mid-write are cleaned up (issue #13, item 4). The built CLI runs real ROME edits
 * with a private cache folder; bytes of its statistics, Cholesky factor and template files
 * are flipped between runs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { BACKEND_ARGS, buildCli, factlens } from './helpers/cli.js';

let cache: string;
const env = () => ({ FACTLENS_CACHE_DIR: cache });
const rome = async () => {
  const r = await factlens(
    ['edit', '-p', 'The mother tongue of {} is', '-s', 'Danielle Darrieux', '-t', 'English', '--layer', '3', '--stats-samples', '40', '--tokens', '0', '--json', ...BACKEND_ARGS],
    env(),
  );
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  return { stderr: r.stderr, deltaWNorm: out.deltaWNorm as number, after: out.prompts[0].after.targets[0].prob as number, statsCached: out.timings.statsCached as boolean };
};
const walk = (dir: string): string[] =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
const find = (re: RegExp) => {
  const hits = walk(cache).filter((f) => re.test(f));
  assert.equal(hits.length, 1, `one file matching ${re} in ${walk(cache).join(', ')}`);
  return hits[0];
};
/** Flips one byte in the last quarter of a file (inside the numbers, past any header). */
const flip = (file: string) => {
  const buf = fs.readFileSync(file);
  const at = Math.floor(buf.length * 0.8);
  buf[at] ^= 0x40;
  fs.writeFileSync(file, buf);
};

before(async () => {
  await buildCli();
  cache = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-cache-'));
});
after(() => fs.rmSync(cache, { recursive: true, force: true }));

describe('cache files carry checksums', () => {
  let first: Awaited<ReturnType<typeof rome>>;

  test('a first edit writes statistics, their Cholesky factor and the templates', async () => {
    first = await rome();
    assert.equal(first.statsCached, false);
    find(/\.mom2$/);
    find(/\.mom2\.chol$/);
    find(/templates.*\.json$/);
    assert.doesNotMatch(first.stderr, /warning/);
  });

  test('a flipped byte in the .chol: named in a warning, recomputed, the same edit; stale temporary files removed', async () => {
    const chol = find(/\.mom2\.chol$/);
    flip(chol);
    // A temporary file of a writer that was killed (its pid is gone).
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    const stale = `${find(/\.mom2$/)}.tmp-${dead}-0badf00d`;
    fs.writeFileSync(stale, 'half a file');
    const r = await rome();
    assert.match(r.stderr, /warning: cache file .*\.mom2\.chol is damaged \(checksum mismatch\); recomputing it/);
    assert.ok(r.stderr.includes(chol), r.stderr);
    assert.equal(r.deltaWNorm, first.deltaWNorm);
    assert.equal(r.after, first.after);
    assert.ok(!fs.existsSync(stale), 'the stale temporary file was removed');
    // Rewritten whole: the next run trusts it again without a warning.
    const again = await rome();
    assert.doesNotMatch(again.stderr, /warning/);
    assert.equal(again.deltaWNorm, first.deltaWNorm);
  });

  test('flipped bytes in the statistics and the templates: both named, recomputed, the same edit', async () => {
    const mom2 = find(/\.mom2$/);
    const templates = find(/templates.*\.json$/);
    flip(mom2);
    // A plausible-looking change to a template (still valid JSON, still one "{}").
    const t = fs.readFileSync(templates, 'utf8');
    const i = t.indexOf('. {}');
    assert.ok(i > 0, 'a template ending in ". {}"');
    fs.writeFileSync(templates, `${t.slice(0, i)}! {}${t.slice(i + 4)}`);
    const r = await rome();
    assert.ok(r.stderr.includes(`cache file ${mom2} is damaged (checksum mismatch)`), r.stderr);
    assert.ok(r.stderr.includes(`cache file ${templates} is damaged (checksum mismatch)`), r.stderr);
    assert.equal(r.statsCached, false);
    assert.equal(r.deltaWNorm, first.deltaWNorm);
    assert.equal(r.after, first.after);
  });
});
