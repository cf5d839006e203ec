/**
 * Specificity checks: for each prompt, the unedited model's answer ("before"), the answer of
 * the model with its applied edits ("after"), and what the difference means
 * (engine/specificity/classify.ts).
 *
 * "Before" answers are cached per model content hash and prompt (the unedited weights are
 * the checkpoint's, so the hash names them), so re-checking a file after each edit costs one
 * batch for the "after" side only; with no edit applied, "after" is "before" and nothing runs.
 */
import type { LoadedModel } from '../model/load.js';
import type { Candidate } from '../predict.js';
import { topK } from '../predict.js';
import { modelContentHash } from '../edit/hash.js';
import { listEdits } from '../edit/apply.js';
import { batchLogprobs, targetTokenId, uneditedView } from '../predict-batch.js';
import type { CheckAnswer, SpecificityCheck, SpecificityCheckResult, SpecificityPrompt } from '../protocol/specificity.js';
import { classifyCheck, recordRequests, relatedEdits, summarizeEdit, type EditedSubject } from './classify.js';

/** Candidates kept per cached answer (the most a check asks for). */
export const CACHED_TOP = 20;

/** Unedited top-k answers by model hash and prompt, least recently used dropped first. */
export class BeforeCache {
  private readonly map = new Map<string, Candidate[]>();
  constructor(readonly maxEntries = 50_000) {}

  private key(hash: string, prompt: string): string {
    return `${hash}\u0000${prompt}`;
  }

  get(hash: string, prompt: string): Candidate[] | undefined {
    const k = this.key(hash, prompt);
    const v = this.map.get(k);
    if (v) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }

  set(hash: string, prompt: string, top: Candidate[]): void {
    const k = this.key(hash, prompt);
    this.map.delete(k);
    this.map.set(k, top);
    while (this.map.size > this.maxEntries) this.map.delete(this.map.keys().next().value!);
  }

  get size(): number {
    return this.map.size;
  }
}

/** The process-wide cache (the engine serves one model at a time, but keys carry the hash). */
export const beforeCache = new BeforeCache();

/**
 * Unedited residual streams entering a block, by model hash, block and prompt, within a byte
 * budget (least recently used dropped first). An edit changes only the MLP output weights of
 * its layers, so everything below its lowest layer is the unedited model's: with these, the
 * "after" pass starts there instead of at the embedding.
 */
export class StateCache {
  private readonly map = new Map<string, Float32Array>();
  private bytes = 0;
  constructor(readonly maxBytes = 256 * 1024 * 1024) {}

  private key(hash: string, layer: number, prompt: string): string {
    return `${hash}\u0000${layer}\u0000${prompt}`;
  }

  get(hash: string, layer: number, prompt: string): Float32Array | undefined {
    const k = this.key(hash, layer, prompt);
    const v = this.map.get(k);
    if (v) {
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }

  set(hash: string, layer: number, prompt: string, state: Float32Array): void {
    const k = this.key(hash, layer, prompt);
    const old = this.map.get(k);
    if (old) this.bytes -= old.byteLength;
    this.map.delete(k);
    this.map.set(k, state);
    this.bytes += state.byteLength;
    while (this.bytes > this.maxBytes && this.map.size > 1) {
      const [first, v] = this.map.entries().next().value!;
      this.map.delete(first);
      this.bytes -= v.byteLength;
    }
  }
}

export const stateCache = new StateCache();

export interface CheckOptions {
  k?: number;
  cache?: BeforeCache;
  states?: StateCache;
  tokensPerChunk?: number;
  /** Run the "after" pass from the embedding even where unedited states are kept (benchmarks, tests). */
  fullAfter?: boolean;
}

const answer = (top: Candidate[], k: number): CheckAnswer => ({ token: top[0].token, prob: top[0].prob, top: top.slice(0, k) });

/**
 * Unedited answers (top CACHED_TOP) of the prompts, from the cache where it has them; the
 * prompts computed here also leave their residual stream entering block `keep` in `states`.
 */
export function beforeAnswers(
  model: LoadedModel,
  prompts: string[],
  cache: BeforeCache,
  tokensPerChunk?: number,
  keep?: { layer: number; states: StateCache },
): { tops: Candidate[][]; cached: number } {
  const hash = modelContentHash(model);
  const tops: Candidate[][] = prompts.map((p) => cache.get(hash, p) ?? []);
  const missing = [...new Set(prompts.filter((_, i) => tops[i].length === 0))];
  if (missing.length) {
    const base = uneditedView(model);
    const { rows, states } = batchLogprobs(base, missing, { tokensPerChunk, capture: keep?.layer });
    missing.forEach((p, j) => {
      cache.set(hash, p, topK(rows[j], CACHED_TOP, model));
      if (keep && states) keep.states.set(hash, keep.layer, p, states[j]);
    });
    prompts.forEach((p, i) => {
      if (!tops[i].length) tops[i] = cache.get(hash, p)!;
    });
  }
  const missed = new Set(missing);
  return { tops, cached: prompts.filter((p) => !missed.has(p)).length };
}

/**
 * Top-k answers of the edited model. Prompts whose unedited residual stream entering the lowest
 * edited block is kept start there; the others run from the embedding and leave theirs.
 */
function afterAnswers(model: LoadedModel, prompts: string[], k: number, layer: number, states: StateCache, opts: CheckOptions): Candidate[][] {
  const hash = modelContentHash(model);
  const out: Candidate[][] = new Array(prompts.length);
  const kept = prompts.map((p) => (opts.fullAfter || layer === 0 ? undefined : states.get(hash, layer, p)));
  const warm = prompts.map((_, i) => i).filter((i) => kept[i]);
  const cold = prompts.map((_, i) => i).filter((i) => !kept[i]);
  if (warm.length) {
    const { rows } = batchLogprobs(model, warm.map((i) => prompts[i]), { tokensPerChunk: opts.tokensPerChunk, start: { layer, states: warm.map((i) => kept[i]!) } });
    warm.forEach((i, j) => (out[i] = topK(rows[j], k, model)));
  }
  if (cold.length) {
    // Below `layer` the edited model is the unedited one: its states there are the unedited states.
    const capture = opts.fullAfter || layer === 0 ? undefined : layer;
    const r = batchLogprobs(model, cold.map((i) => prompts[i]), { tokensPerChunk: opts.tokensPerChunk, capture });
    cold.forEach((i, j) => {
      out[i] = topK(r.rows[j], k, model);
      if (r.states) states.set(hash, layer, prompts[i], r.states[j]);
    });
  }
  return out;
}

export function checkSpecificity(model: LoadedModel, prompts: SpecificityPrompt[], opts: CheckOptions = {}): SpecificityCheckResult {
  const t0 = performance.now();
  const k = Math.min(opts.k ?? 5, CACHED_TOP);
  const cache = opts.cache ?? beforeCache;
  const records = listEdits(model);
  const texts = prompts.map((p) => p.prompt);
  const states = opts.states ?? stateCache;
  // The lowest block whose weights an applied edit changed.
  const layer = records.length ? Math.min(...records.flatMap((r) => r.deltas.map((d) => d.layer))) : 0;
  const keep = records.length && layer > 0 && !opts.fullAfter ? { layer, states } : undefined;
  const before = beforeAnswers(model, texts, cache, opts.tokensPerChunk, keep);
  const afterTops = records.length === 0 ? before.tops : afterAnswers(model, texts, k, layer, states, opts);
  const edited: EditedSubject[] = records.flatMap((r) =>
    recordRequests(r).map((q) => ({
      editId: r.id,
      subject: q.subject,
      targetId: targetTokenId(model, q.target),
      ...(q.targetTrue ? { targetTrueId: targetTokenId(model, q.targetTrue) } : {}),
    })),
  );
  const allIds = records.map((r) => r.id);
  const checks = prompts.map((p, i): SpecificityCheck => {
    const rel = relatedEdits(p.prompt, p.subject, edited);
    const c = classifyCheck(rel, before.tops[i][0].id, afterTops[i][0].id);
    return {
      prompt: p.prompt,
      subject: p.subject ?? null,
      ...c,
      before: answer(before.tops[i], k),
      after: answer(afterTops[i], k),
      edits: rel.length ? [...new Set(rel.map((e) => e.editId))] : allIds,
    };
  });
  const others = checks.filter((c) => c.verdict === 'unchanged' || c.verdict === 'collateral');
  return {
    edits: records.map(summarizeEdit),
    checks,
    unchanged: others.filter((c) => c.verdict === 'unchanged').length,
    others: others.length,
    total: checks.length,
    cachedBefore: before.cached,
    seconds: (performance.now() - t0) / 1000,
  };
}
