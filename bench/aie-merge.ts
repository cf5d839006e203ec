/**
 * Merges `factlens trace-avg --shard I/N --json` outputs (one long average split over
 * processes) into one AverageResult, exactly: per-bucket sums are recovered from the means
 * and sample counts, the corrupted baseline from the per-shard fact counts.
 *   node --import tsx bench/aie-merge.ts out.json shard0.json shard1.json ...
 * Prints the markdown tables (as `factlens trace-avg` does).
 */
import * as fs from 'node:fs';
import type { AverageResult } from '../engine/trace/average.js';
import { formatAverage } from '../engine/cli/commands/trace-avg.js';

const [out, ...inputs] = process.argv.slice(2);
if (!out || inputs.length === 0) {
  console.error('usage: node --import tsx bench/aie-merge.ts OUT.json SHARD.json...');
  process.exit(2);
}
const shards = inputs.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')) as AverageResult);
const first = shards[0];
const traced = shards.reduce((a, s) => a + s.facts_traced, 0);
const avgLow = shards.reduce((a, s) => a + s.avg_corrupted_prob * s.facts_traced, 0) / traced;
const avgClean = shards.reduce((a, s) => a + s.avg_clean_prob * s.facts_traced, 0) / traced;
const counts = first.buckets.map((_, b) => shards.reduce((a, s) => a + s.counts[b], 0));
const merged: AverageResult = {
  ...first,
  counts,
  aie: {},
  ci95: {},
  peaks: {},
  facts_considered: shards.reduce((a, s) => a + s.facts_considered, 0),
  facts_traced: traced,
  facts_skipped: shards.flatMap((s) => s.facts_skipped),
  avg_clean_prob: avgClean,
  avg_corrupted_prob: avgLow,
  ate: avgClean - avgLow,
  elapsed_ms: shards.reduce((a, s) => a + s.elapsed_ms, 0),
};
for (const k of first.kinds) {
  const L = first.aie[k]![0].length;
  merged.aie[k] = first.buckets.map((_, b) =>
    Array.from({ length: L }, (_, l) => {
      if (!counts[b]) return NaN;
      const sum = shards.reduce((a, s) => a + (s.counts[b] ? (s.aie[k]![b][l] + s.avg_corrupted_prob) * s.counts[b] : 0), 0);
      return sum / counts[b] - avgLow;
    }),
  );
  // Confidence half-widths do not merge exactly from the shards' summaries; keep none.
  merged.ci95[k] = first.buckets.map(() => new Array<number>(L).fill(NaN));
  let best = { bucket: first.buckets[0], layer: 0, aie: -Infinity };
  merged.aie[k]!.forEach((row, b) => row.forEach((v, l) => v > best.aie && (best = { bucket: first.buckets[b], layer: l, aie: v })));
  merged.peaks[k] = best;
}
fs.writeFileSync(out, JSON.stringify(merged) + '\n');
process.stdout.write(formatAverage(merged));
