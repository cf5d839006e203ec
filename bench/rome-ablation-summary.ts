/**
 * Table of a ROME configuration screen (bench/rome-ablation.ts): per variant, ES / PS / NS / S
 * (as CounterFact: record means × 100, S their harmonic mean) and `took` over the records that
 * every listed file has, so rows compare the same records.
 *
 *   node --import tsx bench/rome-ablation-summary.ts bench/data/rome-ablation/L3-c4-s20-v2.jsonl [more.jsonl ...]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

interface Cell {
  ES: number;
  PS: number | null;
  NS: number | null;
  took: number;
  dw: number;
}
type Row = Record<string, unknown> & { index: number };

const files = process.argv.slice(2);
const runs = files.map((f) => ({
  name: path.basename(f, '.jsonl'),
  rows: fs
    .readFileSync(f, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Row),
}));
const common = runs
  .map((r) => new Set(r.rows.map((x) => x.index)))
  .reduce((a, b) => new Set([...a].filter((i) => b.has(i))));

const mean = (xs: number[]) => (xs.length ? (100 * xs.reduce((a, b) => a + b, 0)) / xs.length : NaN);
const hmean = (xs: number[]) => (xs.some((x) => x === 0) ? 0 : xs.length / xs.reduce((a, x) => a + 1 / x, 0));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
};

console.log(`${common.size} records (indices ${Math.min(...common)}–${Math.max(...common)} present in every file)\n`);
console.log('| run | variant | ES | PS | NS | S | took | median ‖ΔW‖ |');
console.log('|---|---|---:|---:|---:|---:|---:|---:|');
for (const run of runs) {
  const rows = run.rows.filter((r) => common.has(r.index));
  const variants = Object.keys(rows[0] ?? {}).filter((k) => typeof rows[0][k] === 'object' && rows[0][k] !== null && 'ES' in (rows[0][k] as object));
  for (const v of variants) {
    const cells = rows.map((r) => r[v] as Cell);
    const ES = mean(cells.map((c) => c.ES));
    const PS = mean(cells.filter((c) => c.PS !== null).map((c) => c.PS!));
    const NS = mean(cells.filter((c) => c.NS !== null).map((c) => c.NS!));
    const took = mean(cells.map((c) => c.took));
    console.log(
      `| ${run.name} | ${v} | ${ES.toFixed(1)} | ${PS.toFixed(1)} | ${NS.toFixed(1)} | ${hmean([ES, PS, NS]).toFixed(1)} | ${took.toFixed(1)} | ${median(cells.map((c) => c.dw)).toFixed(2)} |`,
    );
  }
}
