/**
 * The stacked-edits table of issue #15 from `factlens eval --sequential --json` summaries
 * (bench/data/rome-sequential/<method>[-null-space]-<N>.summary.json): ES / PS / NS / S over all
 * N records after the last edit, and retention (greedy first-token accuracy on 1,000 untouched
 * facts) before the first edit and after the last.
 *
 *   node --import tsx bench/rome-sequential-summary.ts [bench/data/rome-sequential]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

const dir = process.argv[2] ?? path.join('bench', 'data', 'rome-sequential');
interface Summary {
  method: string;
  n: number;
  post: Record<string, number>;
  seconds_per_edit: number;
  retention?: { before: number; after: number; facts: number };
}
const rows = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.summary.json'))
  .map((f) => {
    try {
      return { file: f, s: JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as Summary };
    } catch {
      return null; // a run still writing its summary
    }
  })
  .filter((r): r is { file: string; s: Summary } => r !== null && typeof r.s.n === 'number')
  .sort((a, b) => a.s.n - b.s.n || a.file.localeCompare(b.file));
const f1 = (x: number) => x.toFixed(1);
console.log('| method | N | ES | PS | NS | S | retention before → after | s / edit |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const { file, s } of rows) {
  const label = `${s.method.toUpperCase()}${file.includes('null-space') ? ' + null-space' : ''}`;
  const r = s.retention ? `${f1(s.retention.before)} → **${f1(s.retention.after)}**` : '–';
  console.log(`| ${label} | ${s.n} | ${f1(s.post.ES)} | ${f1(s.post.PS)} | ${f1(s.post.NS)} | **${f1(s.post.S)}** | ${r} | ${f1(s.seconds_per_edit)} |`);
}
