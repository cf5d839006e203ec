/**
 * Before/after probes for edits: the probability of target strings after a prompt (teacher
 * forced over all target tokens), the top next token, and greedy continuations.
 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { checkFinite } from '../runtime/finite.js';
import { encodePrompt } from '../predict.js';
import { forward } from '../runtime/forward.js';
import { padBatch } from '../runtime/batch.js';
import { logSoftmaxRows } from '../runtime/logsumexp.js';
import { generate } from '../runtime/generate.js';

export interface TargetScore {
  target: string;
  /** P(all target tokens | prompt) = Π p(token_j | prompt, tokens_<j). */
  prob: number;
  /** exp(mean log p): the per-token geometric mean (CounterFact's score). */
  meanTokenProb: number;
  tokens: number;
}

export interface PromptProbe {
  prompt: string;
  top: { token: string; prob: number };
  targets: TargetScore[];
}

function withSpace(t: string): string {
  return t.startsWith(' ') ? t : ` ${t}`;
}

/** Scores every target after every prompt in one batched forward. */
/** What to call the prompts and targets in errors (e.g. `--check 2`); default prompts[i], targets[j]. */
export interface ProbeFields {
  prompts?: string[];
  targets?: string[];
}

/**
 * PROMPT_TOO_LONG naming both fields when a prompt followed by a target (all but its last
 * token: teacher forcing) does not fit the model's context; the prompts alone are checked by
 * encodePrompt.
 */
export function checkProbeLengths(model: LoadedModel, promptIds: number[][], targetIds: number[][], fields: ProbeFields = {}): void {
  const limit = model.config.nCtx;
  promptIds.forEach((ids, p) => {
    targetIds.forEach((tids, t) => {
      const n = ids.length + tids.length - 1;
      if (n <= limit) return;
      const pf = fields.prompts?.[p] ?? `prompts[${p}]`;
      const tf_ = fields.targets?.[t] ?? `targets[${t}]`;
      throw new FactLensError(
        'PROMPT_TOO_LONG',
        `${pf} (${ids.length} tokens) followed by ${tf_} (${tids.length} tokens) is ${n} tokens; ${model.name} reads at most ${limit}`,
        { field: tf_, prompt: pf, tokens: n, limit },
      );
    });
  });
}

export function probePrompts(model: LoadedModel, prompts: string[], targets: string[], fields: ProbeFields = {}): PromptProbe[] {
  const tok = model.tokenizer;
  const targetIds = targets.map((t) => tok.encode(withSpace(t)));
  const rows: number[][] = [];
  const pairs: Array<[number, number]> = [];
  const meta: Array<{ p: number; t: number; first: number; n: number }> = [];
  const promptIds = prompts.map((p, i) => encodePrompt(model, p, fields.prompts?.[i] ?? 'prompt'));
  checkProbeLengths(model, promptIds, targetIds, fields);
  promptIds.forEach((ids, p) => {
    // Row for the top token (and targets of one token), then one row per multi-token target.
    targetIds.forEach((tids, t) => {
      const r = rows.length;
      rows.push([...ids, ...tids.slice(0, -1)]);
      const first = pairs.length;
      for (let j = 0; j < tids.length; j++) pairs.push([r, ids.length - 1 + j]);
      meta.push({ p, t, first, n: tids.length });
    });
    if (targets.length === 0) {
      rows.push(ids);
      pairs.push([rows.length - 1, ids.length - 1]);
    }
  });
  const batch = padBatch(rows, 'right');
  const V = model.config.vocabSize;
  // Read outside the tidy: tidy walks a returned typed array element by element (slow).
  const lpT = tf.tidy(() => logSoftmaxRows(forward(model, batch, { logitsAt: pairs }).logits!));
  const lp = lpT.dataSync() as Float32Array;
  lpT.dispose();
  checkFinite(model, lp, rows, 'the probe log-probabilities');
  const out: PromptProbe[] = prompts.map((prompt) => ({ prompt, top: { token: '', prob: 0 }, targets: [] }));
  const topAt = (pairIndex: number) => {
    let best = 0;
    const o = pairIndex * V;
    for (let i = 1; i < V; i++) if (lp[o + i] > lp[o + best]) best = i;
    return { token: tok.tokenToString(best), prob: Math.exp(lp[o + best]) };
  };
  if (targets.length === 0) {
    prompts.forEach((_, p) => (out[p].top = topAt(p)));
    return out;
  }
  for (const m of meta) {
    let sum = 0;
    for (let j = 0; j < m.n; j++) sum += lp[(m.first + j) * V + targetIds[m.t][j]];
    out[m.p].targets.push({ target: targets[m.t], prob: Math.exp(sum), meanTokenProb: Math.exp(sum / m.n), tokens: m.n });
    if (m.t === 0) out[m.p].top = topAt(m.first);
  }
  return out;
}

/** Greedy continuation of each prompt (text after the prompt). */
export function greedyContinuations(model: LoadedModel, prompts: string[], maxNewTokens = 20): string[] {
  const ids = prompts.map((p) => encodePrompt(model, p));
  const out = generate(model, ids, { maxNewTokens, strategy: 'greedy', useCache: true });
  return out.map((o) => model.tokenizer.decode(o));
}
