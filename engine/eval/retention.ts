/**
 * Retention (issue #15): how much of what the model knew survives a stack of edits — the greedy
 * first-token accuracy on a fixed sample of facts (default 1,000 from the model's
 * `facts.jsonl`) whose subject none of the edits touches, measured before the first edit and
 * after the last.
 *
 * The sample is fixed: a seeded shuffle (seed 0) of the facts file, skipping facts whose subject
 * is edited, first n taken; a fact counts as known when the top next token after its prompt is
 * the first token of " " + object.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { forward } from '../runtime/forward.js';
import { padBatch } from '../runtime/batch.js';
import { fillPrompt, readFacts, type Fact } from '../trace/average.js';
import { Rng } from '../util/rng.js';

export interface RetentionSample {
  file: string;
  facts: Fact[];
}

/** The fixed sample: `n` facts of `file` (default the model's facts.jsonl) with a subject not in `exclude`. */
export function retentionSample(model: LoadedModel, exclude: Iterable<string>, opts: { file?: string; n?: number; seed?: number } = {}): RetentionSample {
  const file = path.resolve(opts.file ?? path.join(model.dir, 'facts.jsonl'));
  const skip = new Set([...exclude].map((s) => s.trim()));
  const all = readFacts(file)
    .map((x) => x.fact)
    .filter((f): f is Fact => !!f);
  if (all.length === 0) throw new FactLensError('INVALID_ARGUMENT', `${file} has no facts to measure retention on`, { file, field: 'facts' });
  const idx = all.map((_, i) => i);
  const rng = new Rng(opts.seed ?? 0);
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  const n = opts.n ?? 1000;
  const facts: Fact[] = [];
  for (const i of idx) {
    if (facts.length >= n) break;
    if (!skip.has(all[i].subject.trim())) facts.push(all[i]);
  }
  return { file, facts };
}

/** Percent of the facts whose object's first token is the greedy next token (batches of 64). */
export function retentionAccuracy(model: LoadedModel, facts: Fact[], batch = 64): number {
  const tok = model.tokenizer;
  let right = 0;
  for (let s = 0; s < facts.length; s += batch) {
    const chunk = facts.slice(s, s + batch);
    const rows = chunk.map((f) => tok.encode(fillPrompt(f)));
    const pairs = rows.map((r, i) => [i, r.length - 1] as [number, number]);
    const t = tf.tidy(() => tf.argMax(forward(model, padBatch(rows, 'right'), { logitsAt: pairs }).logits!, 1));
    const top = t.dataSync();
    t.dispose();
    chunk.forEach((f, i) => {
      const first = tok.encode(` ${f.object.trim()}`)[0];
      if (top[i] === first) right++;
    });
  }
  return (100 * right) / Math.max(1, facts.length);
}
