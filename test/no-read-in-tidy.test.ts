/**
 * tf.tidy walks the value its callback returns with for…in, so a typed array (or arraySync's
 * nested arrays) returned from inside one is visited element by element: 1.93M floats cost ~3 s
 * of a trace (issue #12). Reads belong after the tidy (engine/util/scope.ts `tidyData`). This
 * scans every tf.tidy callback in the tracked TypeScript for a synchronous read.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ROOT } from './helpers/browser.js';

/** The text of the call starting at `open` (an opening parenthesis) up to its matching close. */
function callBody(text: string, open: number): string {
  let depth = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === '(') depth++;
    else if (c === ')' && --depth === 0) return text.slice(open, i + 1);
  }
  return text.slice(open);
}

export function readsInsideTidy(text: string): number[] {
  const lines: number[] = [];
  const re = /\btf\.tidy\(/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const body = callBody(text, m.index + m[0].length - 1);
    // A scalar read (`.dataSync()[0]`) returns a number, which tidy does not walk.
    if (/\.(dataSync|arraySync)\(\)(?!\[)/.test(body)) lines.push(text.slice(0, m.index).split('\n').length);
  }
  return lines;
}

test('the scan finds a read inside a tidy and passes one after it', () => {
  assert.deepEqual(readsInsideTidy('const a = 1;\nconst x = tf.tidy(() => f(g(y)).dataSync());'), [2]);
  assert.deepEqual(readsInsideTidy('const x = tf.tidy(() => f(g(y)));\nx.dataSync();'), []);
  assert.deepEqual(readsInsideTidy('const s = tf.tidy(() => loss(x).dataSync()[0]);'), []);
});

test('no tf.tidy callback reads a tensor synchronously (dataSync/arraySync)', () => {
  const files = execFileSync('git', ['ls-files', '-z', '--', '*.ts'], { cwd: ROOT, encoding: 'utf8' })
    .split('\0')
    .filter((f) => f && !f.endsWith('no-read-in-tidy.test.ts'));
  assert.ok(files.length > 50, `git ls-files listed ${files.length} files`);
  const hits: string[] = [];
  for (const f of files) {
    const abs = path.join(ROOT, f);
    if (!fs.existsSync(abs)) continue;
    for (const line of readsInsideTidy(fs.readFileSync(abs, 'utf8'))) hits.push(`${f}:${line}`);
  }
  assert.deepEqual(hits, [], `synchronous reads inside tf.tidy (read after it, e.g. tidyData):\n${hits.join('\n')}`);
});
