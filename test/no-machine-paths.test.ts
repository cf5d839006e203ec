/**
 * Tests and docs must run on any machine: no tracked file may name this checkout's absolute
 * path, the shared folder's absolute path, or the path the shared folder had on the machines where
 * the project started. The shared folder is found by test/helpers/golden.ts (FACTLENS_SHARED or
 * ../shared beside the repository).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from './helpers/browser.js';
import { SHARED } from './helpers/golden.js';

test('no tracked file names an absolute path of this machine or the shared folder', () => {
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' }).split('\0').filter(Boolean);
  assert.ok(files.length > 50, `git ls-files listed ${files.length} files`);
  const forbidden = new Set([['', 'work', 'shared'].join('/'), fs.realpathSync(ROOT)]);
  if (fs.existsSync(SHARED)) forbidden.add(fs.realpathSync(SHARED));
  const hits: string[] = [];
  for (const f of files) {
    const abs = path.join(ROOT, f);
    if (!fs.existsSync(abs) || !fs.statSync(abs).isFile() || fs.statSync(abs).size > 5_000_000) continue;
    const text = fs.readFileSync(abs, 'latin1');
    for (const bad of forbidden) {
      const at = text.indexOf(bad);
      if (at >= 0) hits.push(`${f}:${text.slice(0, at).split('\n').length}: ${bad}`);
    }
  }
  assert.deepEqual(hits, [], `machine paths in tracked files:\n${hits.join('\n')}`);
});
