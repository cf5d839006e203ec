/**
 * Average indirect effect over many facts (rome-spec §1.9): trace every fact the model gets
 * right, bucket token positions into six rows, average scores per bucket and layer, and
 * subtract the average corrupted probability.
 */
import * as fs from 'node:fs';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { nextTokenLogprobs } from '../predict.js';
import { Job, type JobControl } from '../util/jobs.js';
import { trace, type TraceScope } from './index.js';
import { TRACE_KINDS, type TraceResult } from './types.js';
import { readRegularText, jsonErrorMessage } from '../util/files.js';
import type { AverageOptions, AverageResult, Fact } from '../protocol/trace.js';
import { fillTemplate } from '../../formats/template.js';

export type { AverageOptions, AverageResult, Fact };

export const AIE_BUCKETS = [
  'first subject token',
  'middle subject tokens',
  'last subject token',
  'first subsequent token',
  'further tokens',
  'last token',
] as const;

/** Reads a facts file: JSON lines or a JSON array of {subject, prompt, object|attribute|target}. */
export function readFacts(file: string): Array<{ line: number; fact: Fact | null; error?: string }> {
  if (!fs.existsSync(file)) throw new FactLensError('FILE_MISSING', `facts file ${file} does not exist`, { file });
  const text = readRegularText(file, 'facts');
  let items: Array<{ line: number; raw: unknown; error?: string }>;
  if (text.trimStart().startsWith('[')) {
    let arr: unknown;
    try {
      arr = JSON.parse(text);
    } catch (e) {
      throw new FactLensError('INVALID_ARGUMENT', `${file}: not valid JSON: ${jsonErrorMessage(e)}`, { file });
    }
    items = (arr as unknown[]).map((raw, i) => ({ line: i + 1, raw }));
  } else {
    items = text.split('\n').flatMap((l, i) => {
      if (!l.trim()) return [];
      try {
        return [{ line: i + 1, raw: JSON.parse(l) as unknown }];
      } catch (e) {
        return [{ line: i + 1, raw: null, error: `not valid JSON: ${jsonErrorMessage(e)}` }];
      }
    });
  }
  return items.map(({ line, raw, error }) => {
    if (error) return { line, fact: null, error };
    const r = raw as Record<string, unknown>;
    const rw = (r?.['requested_rewrite'] ?? r) as Record<string, unknown>;
    const subject = rw['subject'];
    const prompt = rw['prompt'];
    const obj = r['object'] ?? r['attribute'] ?? (rw['target_true'] as Record<string, unknown> | undefined)?.['str'];
    if (typeof subject !== 'string' || typeof prompt !== 'string' || typeof obj !== 'string') {
      return { line, fact: null, error: 'needs string fields subject, prompt and object' };
    }
    return { line, fact: { subject, prompt, object: obj, relation_id: rw['relation_id'] as string | undefined } };
  });
}

export function fillPrompt(f: Fact): string {
  return fillTemplate(f.prompt, f.subject);
}

/** Bucket index lists of one trace's token positions (a position may fall in two buckets). */
function bucketsOf(T: number, [b, e]: [number, number]): number[][] {
  const rows: number[][] = [[b], [], [e - 1], [], [], [T - 1]];
  for (let i = b + 1; i < e - 1; i++) rows[1].push(i);
  if (e < T) rows[3].push(e);
  for (let i = e + 1; i < T - 1; i++) rows[4].push(i);
  return rows;
}

export async function traceAverage(
  model: LoadedModel,
  facts: Array<{ line: number; fact: Fact | null; error?: string }>,
  opts: AverageOptions = {},
  control: JobControl = {},
  scope: TraceScope = {},
): Promise<AverageResult> {
  const started = performance.now();
  const kinds = opts.kinds ?? [...TRACE_KINDS];
  const L = model.config.nLayer;
  const job = new Job(control, 'trace average');
  const sums: Record<string, number[][]> = {};
  const sq: Record<string, number[][]> = {};
  for (const k of kinds) {
    sums[k] = AIE_BUCKETS.map(() => new Array<number>(L).fill(0));
    sq[k] = AIE_BUCKETS.map(() => new Array<number>(L).fill(0));
  }
  const counts = AIE_BUCKETS.map(() => 0);
  const skipped: AverageResult['facts_skipped'] = [];
  let traced = 0;
  let considered = 0;
  let cleanSum = 0;
  let lowSum = 0;
  let last: TraceResult | null = null;
  const limit = opts.limit ?? Infinity;
  for (const item of facts) {
    if (traced >= limit) break;
    considered++;
    if (!item.fact) {
      skipped.push({ line: item.line, subject: '', reason: item.error ?? 'unreadable' });
      continue;
    }
    const f = item.fact;
    const prompt = fillPrompt(f);
    try {
      // Only facts the model predicts: greedy next token = first token of " object".
      const ids = model.tokenizer.encode(prompt);
      const [lp] = nextTokenLogprobs(model, [ids]);
      let best = 0;
      for (let i = 1; i < lp.length; i++) if (lp[i] > lp[best]) best = i;
      const want = model.tokenizer.encode(` ${f.object.trim()}`)[0];
      if (best !== want) {
        skipped.push({ line: item.line, subject: f.subject, reason: 'not predicted correctly' });
        continue;
      }
      // Share the caller's cancellation so a long fact stops within one trace checkpoint.
      const r = await trace(
        model,
        prompt,
        { ...opts, subject: f.subject, kinds },
        {
          get cancelled() {
            return control.cancelled;
          },
        },
        scope,
      );
      last = r;
      traced++;
      cleanSum += r.clean_prob;
      lowSum += r.corrupted_prob;
      const rows = bucketsOf(r.ids.length, r.subject_range);
      rows.forEach((positions, bi) => {
        counts[bi] += positions.length;
        for (const k of kinds) {
          for (const t of positions) {
            for (let l = 0; l < L; l++) {
              const v = r.scores[k]![t][l];
              sums[k][bi][l] += v;
              sq[k][bi][l] += v * v;
            }
          }
        }
      });
    } catch (e) {
      if ((e as FactLensError).code === 'CANCELLED') throw e;
      skipped.push({ line: item.line, subject: f.subject, reason: (e as Error).message });
    }
    await job.checkpoint(Math.min(1, traced / Math.min(limit, facts.length)), `traced ${traced} facts (${skipped.length} skipped)`);
  }
  if (traced === 0) {
    throw new FactLensError('INVALID_ARGUMENT', 'no fact was predicted correctly, so there is nothing to average', { field: 'facts' });
  }
  const avgLow = lowSum / traced;
  const aie: AverageResult['aie'] = {};
  const ci95: AverageResult['ci95'] = {};
  const peaks: AverageResult['peaks'] = {};
  for (const k of kinds) {
    aie[k] = sums[k].map((row, bi) => row.map((s) => (counts[bi] ? s / counts[bi] - avgLow : NaN)));
    ci95[k] = sq[k].map((row, bi) =>
      row.map((s2, l) => {
        const c = counts[bi];
        if (c < 2) return NaN;
        const mean = sums[k][bi][l] / c;
        return (1.96 * Math.sqrt(Math.max(0, s2 / c - mean * mean))) / Math.sqrt(c);
      }),
    );
    let best = { bucket: AIE_BUCKETS[0] as string, layer: 0, aie: -Infinity };
    aie[k]!.forEach((row, bi) =>
      row.forEach((v, l) => {
        if (v > best.aie) best = { bucket: AIE_BUCKETS[bi], layer: l, aie: v };
      }),
    );
    peaks[k] = best;
  }
  return {
    kinds,
    buckets: AIE_BUCKETS,
    aie,
    counts,
    ci95,
    facts_considered: considered,
    facts_traced: traced,
    facts_skipped: skipped,
    avg_clean_prob: cleanSum / traced,
    avg_corrupted_prob: avgLow,
    ate: cleanSum / traced - avgLow,
    peaks,
    window: last!.window,
    samples: last!.samples,
    noise_scale: last!.noise_scale,
    backend: model.backend,
    elapsed_ms: Math.round(performance.now() - started),
  };
}
