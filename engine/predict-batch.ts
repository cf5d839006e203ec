/**
 * Many prompts, one padded forward pass per chunk: the `predict/batch` request and the
 * specificity checks. Every prompt gets what `predict` would give it alone (right padding and
 * the causal mask keep a row's real positions independent of the others; the tests compare
 * both on real prompt files). Prompts are sorted by length before chunking, so each chunk pads
 * little, and a chunk holds at most `tokensPerChunk` padded tokens, which bounds the memory of
 * the activations (the logits are taken at each row's last token only: rows × vocabulary).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LoadedModel } from './model/load.js';
import { encodePrompt, topK, type Candidate } from './predict.js';
import { forward } from './runtime/forward.js';
import { padBatch } from './runtime/batch.js';
import { site } from './runtime/sites.js';
import { logSoftmaxRows } from './runtime/logsumexp.js';
import { checkFinite } from './runtime/finite.js';
import { baseModel } from './edit/state.js';
import type { BatchPrediction, TargetProb } from './protocol/specificity.js';

/** Padded tokens per forward pass (rows × longest row of the chunk). */
export const DEFAULT_TOKENS_PER_CHUNK = 4096;
/** Rows per forward pass, whatever their length (bounds the rows × vocabulary logits). */
export const MAX_ROWS_PER_CHUNK = 128;

export interface LogprobRows {
  /** Next-token log-probabilities after each prompt, in input order: [prompts][V]. */
  rows: Float32Array[];
  /** Token ids of each prompt. */
  ids: number[][];
  chunks: number;
  /** With `capture`: each prompt's residual stream entering that block, [tokens × d] row-major. */
  states?: Float32Array[];
}

export interface BatchLogprobOptions {
  tokensPerChunk?: number;
  /** Keep the residual stream entering this block (hook_resid_pre) of every prompt. */
  capture?: number;
  /** Start every prompt at this block from its kept residual stream (`states[i]` for prompt i). */
  start?: { layer: number; states: Float32Array[] };
}

/**
 * The model without its applied edits, as a LoadedModel view (shares every tensor; nothing to
 * dispose). The model itself when nothing is applied.
 */
export function uneditedView(model: LoadedModel): LoadedModel {
  const base = baseModel(model);
  return base === model ? model : { ...model, weights: base.weights };
}

/** Chunks of row indices, shortest prompts first, each within the token and row budgets. */
export function planChunks(lengths: number[], tokensPerChunk = DEFAULT_TOKENS_PER_CHUNK): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[a] - lengths[b] || a - b);
  const chunks: number[][] = [];
  let cur: number[] = [];
  for (const i of order) {
    // Sorted ascending, so the row being added is the widest of its chunk.
    if (cur.length && ((cur.length + 1) * lengths[i] > tokensPerChunk || cur.length >= MAX_ROWS_PER_CHUNK)) {
      chunks.push(cur);
      cur = [];
    }
    cur.push(i);
  }
  if (cur.length) chunks.push(cur);
  return chunks;
}

/** Next-token log-probabilities of many prompts. Errors name the prompt (`prompts[i]`). */
export function batchLogprobs(model: LoadedModel, prompts: string[], optsIn: BatchLogprobOptions | number = {}): LogprobRows {
  const opts = typeof optsIn === 'number' ? { tokensPerChunk: optsIn } : optsIn;
  const ids = prompts.map((p, i) => encodePrompt(model, p, `prompts[${i}]`));
  const V = model.config.vocabSize;
  const d = model.config.dModel;
  const rows: Float32Array[] = new Array(prompts.length);
  const states: Float32Array[] | undefined = opts.capture !== undefined ? new Array(prompts.length) : undefined;
  const chunks = planChunks(ids.map((r) => r.length), opts.tokensPerChunk ?? DEFAULT_TOKENS_PER_CHUNK);
  for (const chunk of chunks) {
    const batch = padBatch(chunk.map((i) => ids[i]), 'right');
    const T = batch.width;
    let kept: tf.Tensor3D | null = null;
    const capture = opts.capture === undefined ? undefined : site.residPre(opts.capture);
    const hook = capture ? (name: string, x: tf.Tensor3D) => (name === capture ? (kept = tf.keep(x.clone())) : x) : undefined;
    // Read outside the tidy: tidy walks a returned typed array element by element (slow).
    const lpT = tf.tidy(() => {
      let startAt: { layer: number; h: tf.Tensor3D } | undefined;
      if (opts.start) {
        // Right-padded [B, T, d] from the kept states; padding positions are masked anyway.
        const buf = new Float32Array(chunk.length * T * d);
        chunk.forEach((i, r) => buf.set(opts.start!.states[i], r * T * d));
        startAt = { layer: opts.start.layer, h: tf.tensor3d(buf, [chunk.length, T, d]) };
      }
      // The same log-softmax as predict (two-stage log-sum-exp, exact enough on every backend).
      return logSoftmaxRows(forward(model, batch, { hook, startAt }).logits!);
    });
    const flat = lpT.dataSync() as Float32Array;
    lpT.dispose();
    checkFinite(model, flat, chunk.map((i) => ids[i]), 'the next-token log-probabilities');
    chunk.forEach((i, r) => (rows[i] = flat.slice(r * V, (r + 1) * V)));
    if (states && kept) {
      const k = kept as tf.Tensor3D;
      const all = k.dataSync() as Float32Array;
      k.dispose();
      chunk.forEach((i, r) => (states[i] = all.slice(r * T * d, (r * T + ids[i].length) * d)));
    }
  }
  return { rows, ids, chunks: chunks.length, ...(states ? { states } : {}) };
}

/** The first token of a target as the model would continue with it (" " + target unless it starts with a space). */
export function targetTokenId(model: LoadedModel, target: string): number {
  const ids = model.tokenizer.encode(target.startsWith(' ') ? target : ` ${target}`);
  return ids[0];
}

export function targetProbs(model: LoadedModel, row: Float32Array, targets: string[], targetIds = targets.map((t) => targetTokenId(model, t))): TargetProb[] {
  return targets.map((target, j) => ({
    target,
    id: targetIds[j],
    token: model.tokenizer.tokenToString(targetIds[j]),
    prob: Math.exp(row[targetIds[j]]),
  }));
}

export interface PredictBatchOptions {
  k?: number;
  targets?: string[];
  /** Ask the model without its applied edits. */
  unedited?: boolean;
  tokensPerChunk?: number;
}

export function predictBatch(model: LoadedModel, prompts: string[], opts: PredictBatchOptions = {}): { predictions: BatchPrediction[]; chunks: number } {
  const m = opts.unedited ? uneditedView(model) : model;
  const { rows, ids, chunks } = batchLogprobs(m, prompts, opts.tokensPerChunk);
  const targets = opts.targets ?? [];
  const targetIds = targets.map((t) => targetTokenId(model, t));
  const k = opts.k ?? 5;
  const predictions = prompts.map((prompt, i): BatchPrediction => ({
    prompt,
    tokens: ids[i].length,
    top: topK(rows[i], k, model) as Candidate[],
    targets: targetProbs(model, rows[i], targets, targetIds),
  }));
  return { predictions, chunks };
}
