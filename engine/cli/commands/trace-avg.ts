/** `factlens trace-avg --facts FILE`: average indirect effect over the facts the model knows. */
import * as path from 'node:path';
import { disposeModel } from '../../model/load.js';
import { AIE_BUCKETS, readFacts, traceAverage, type AverageResult } from '../../trace/average.js';
import { TRACE_KINDS, type TraceKind } from '../../trace/types.js';
import { intOption, listOption, UsageError, type OptionsSpec, type ParsedArgs } from '../args.js';
import { loadModelFromArgs, modelOptions, outputOptions } from '../common.js';
import type { CommandIO } from '../types.js';
import { Rng } from '../../util/rng.js';

export const name = 'trace-avg';
export const summary = 'average indirect effect of restorations over many facts (the paper\'s Figure 2)';
export const usage = 'trace-avg [--facts FILE] [--limit N] [--shuffle SEED] [--shard I/N] [--kind hidden,mlp,attn] [--samples N] [--window N] [--model DIR] [--json]';
export const description =
  'Traces every fact whose answer the model predicts (greedy next token = first token of the object),\n' +
  'buckets token positions (first/middle/last subject token, first subsequent, further, last token),\n' +
  'and reports mean restored probability minus mean corrupted probability per bucket and layer.\n' +
  'Facts: JSON lines or an array of {subject, prompt ("{}" marks the subject), object}; CounterFact\n' +
  'records work too (target_true). Default: the facts.jsonl shipped with the model.';

export const options: OptionsSpec = {
  ...modelOptions,
  facts: { type: 'string', valueName: 'FILE', description: 'facts file [default: <model>/facts.jsonl]' },
  limit: { type: 'string', valueName: 'N', description: 'stop after N traced facts', default: '100' },
  kind: { type: 'string', valueName: 'KINDS', description: 'comma-separated kinds', default: 'hidden,mlp,attn' },
  samples: { type: 'string', valueName: 'N', description: 'corrupted samples per fact', default: '10' },
  window: { type: 'string', valueName: 'N', description: 'restored MLP/attention window' },
  shuffle: { type: 'string', valueName: 'SEED', description: 'visit the facts in a seeded random order (a sample across relations)' },
  shard: { type: 'string', valueName: 'I/N', description: 'only every N-th fact starting at I (after shuffling), to split a long run over processes' },
  ...outputOptions,
};

export async function run(args: ParsedArgs, io: CommandIO): Promise<number> {
  if (args.positionals.length) throw new UsageError(`unexpected argument '${args.positionals[0]}'`, name);
  const kinds = listOption(args.values.kind, 'kind', TRACE_KINDS, name) as TraceKind[];
  const model = await loadModelFromArgs(args, io);
  try {
    const file = typeof args.values.facts === 'string' ? path.resolve(args.values.facts) : path.join(model.dir, 'facts.jsonl');
    const facts = readFacts(file);
    if (args.values.shuffle !== undefined) {
      const rng = new Rng(intOption(args.values.shuffle, 'shuffle', 0, name, 0));
      for (let i = facts.length - 1; i > 0; i--) {
        const j = Math.floor(rng.uniform() * (i + 1));
        [facts[i], facts[j]] = [facts[j], facts[i]];
      }
    }
    let selected = facts;
    if (typeof args.values.shard === 'string') {
      const m = /^(\d+)\/(\d+)$/.exec(args.values.shard);
      if (!m || Number(m[1]) >= Number(m[2])) throw new UsageError(`--shard takes I/N with 0 ≤ I < N, got '${args.values.shard}'`, name);
      selected = facts.filter((_, i) => i % Number(m[2]) === Number(m[1]));
    }
    const result = await traceAverage(
      model,
      selected,
      {
        kinds,
        limit: intOption(args.values.limit, 'limit', 100, name),
        samples: intOption(args.values.samples, 'samples', 10, name),
        window: args.values.window === undefined ? undefined : intOption(args.values.window, 'window', 0, name),
      },
      { onProgress: (f, msg) => io.log(`${(f * 100).toFixed(0).padStart(3)}% ${msg}`) },
    );
    io.stdout.write(args.values.json ? JSON.stringify(result) + '\n' : formatAverage(result));
  } finally {
    disposeModel(model);
  }
  return 0;
}

/** Markdown tables, one per kind: buckets down, layers across (percentage points of AIE). */
export function formatAverage(r: AverageResult): string {
  const L = r.aie[r.kinds[0]]![0].length;
  const out: string[] = [];
  out.push(
    `${r.facts_traced} facts traced of ${r.facts_considered} read (${r.facts_skipped.length} skipped); ` +
      `avg clean p ${(r.avg_clean_prob * 100).toFixed(1)}%, avg corrupted p ${(r.avg_corrupted_prob * 100).toFixed(1)}%, ` +
      `ATE ${(r.ate * 100).toFixed(1)}%; window ${r.window}, ${r.samples} samples, ν ${r.noise_scale.toPrecision(4)}`,
  );
  for (const k of r.kinds) {
    out.push('', `AIE, ${k} (percentage points; peak ${(r.peaks[k]!.aie * 100).toFixed(1)} at ${r.peaks[k]!.bucket}, layer ${r.peaks[k]!.layer})`, '');
    out.push(`| position (samples) | ${Array.from({ length: L }, (_, l) => `L${l}`).join(' | ')} |`);
    out.push(`|---|${Array.from({ length: L }, () => '---:').join('|')}|`);
    AIE_BUCKETS.forEach((b, bi) => {
      out.push(`| ${b} (${r.counts[bi]}) | ${r.aie[k]![bi].map((v) => (Number.isNaN(v) ? '–' : (v * 100).toFixed(1))).join(' | ')} |`);
    });
  }
  return out.join('\n') + '\n';
}
