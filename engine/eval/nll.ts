/**
 * Teacher-forced target scoring, batched (rome-spec §3.2): for each (prefix, target) the
 * model reads prefix ++ target[:-1] and target token j is scored at position
 * len(prefix) + j − 1. Rows are right-padded and many rows go through one forward; only the
 * scored positions are unembedded (`logitsAt`), and the log-softmax is reduced on the backend
 * to three numbers per position (log-sum-exp, the target's logit, the argmax), so with GPT-2's
 * 50,257-token vocabulary nothing of size V is read back.
 *
 * Prefix and target are token ids: the reference tokenizes `prefix + " " + target` as one
 * string but takes the prefix length from the prefix alone and the target ids from
 * `" " + target` alone, i.e. it assumes the concatenation tokenizes as the two parts do. We
 * concatenate the ids, which is what that assumption means (and is exact for GPT-2's BPE when
 * the target starts with a space, since pre-tokenization splits before " word").
 */
import { FactLensError } from '../errors.js';
import * as tf from '@tensorflow/tfjs-core';
import type { DecoderModel } from '../runtime/decoder-forward.js';
import { forward } from '../runtime/forward.js';
import { padBatch } from '../runtime/batch.js';
import { logSumExpRows } from '../runtime/logsumexp.js';

/** One prefix with several targets (e.g. target_new and target_true after one prompt). */
export interface ScoreItem {
  prefix: number[];
  targets: number[][];
}

export interface TargetScore {
  /** Mean over target tokens of −log p(token_j | prefix, target_<j). */
  nll: number;
  /** −log p per target token. */
  tokenNll: number[];
  /** Every target token is the argmax at its position (memit's exact-match test). */
  allArgmax: boolean;
}

export interface ScoreOptions {
  /** Padded tokens (rows × width) per forward (default 4096). */
  maxBatchTokens?: number;
  /** Scored positions per forward (default 256: [256, V] logits). */
  maxPositions?: number;
}

/**
 * Scores every target of every item. Targets of one prefix share input rows where they can:
 * a target t is read from any row prefix ++ x whose x starts with t[:-1] (so every
 * single-token target, and every target that extends another, costs no extra row). Returns
 * scores[item][target].
 */
export function scoreItems(model: DecoderModel, items: ScoreItem[], opts: ScoreOptions = {}): TargetScore[][] {
  const rows: number[][] = [];
  const reads: Array<{ item: number; target: number; row: number; offset: number }> = [];
  items.forEach((it, i) => {
    if (it.prefix.length === 0) throw new Error(`scoreItems: item ${i} has an empty prefix`);
    const mine: number[] = [];
    // Longest targets first, so shorter ones can reuse their rows.
    const order = it.targets.map((_, j) => j).sort((a, b) => it.targets[b].length - it.targets[a].length);
    for (const j of order) {
      const t = it.targets[j];
      if (t.length === 0) throw new Error(`scoreItems: item ${i} target ${j} is empty`);
      const need = t.slice(0, -1);
      let row = mine.find((r) => need.every((tok, k) => rows[r][it.prefix.length + k] === tok) && rows[r].length >= it.prefix.length + need.length);
      if (row === undefined) {
        row = rows.length;
        rows.push([...it.prefix, ...need]);
        if (rows[row].length > model.config.nCtx) {
          throw new FactLensError('PROMPT_TOO_LONG', `item ${i} with its target is ${rows[row].length} tokens; the context is ${model.config.nCtx}`, {
            field: 'prompt',
            tokens: rows[row].length,
            limit: model.config.nCtx,
          });
        }
        mine.push(row);
      }
      reads.push({ item: i, target: j, row, offset: it.prefix.length - 1 });
    }
  });
  const out: TargetScore[][] = items.map((it) => new Array(it.targets.length));
  const V = model.config.vocabSize;
  const maxTokens = opts.maxBatchTokens ?? 4096;
  const maxPos = opts.maxPositions ?? 256;
  // Reads grouped by row, rows processed in order in chunks.
  const byRow = new Map<number, typeof reads>();
  for (const r of reads) {
    const l = byRow.get(r.row) ?? [];
    l.push(r);
    byRow.set(r.row, l);
  }
  let start = 0;
  while (start < rows.length) {
    let end = start;
    let width = 0;
    let positions = 0;
    while (end < rows.length) {
      const w = Math.max(width, rows[end].length);
      const p = positions + (byRow.get(end) ?? []).reduce((a, r) => a + items[r.item].targets[r.target].length, 0);
      if (end > start && (w * (end - start + 1) > maxTokens || p > maxPos)) break;
      width = w;
      positions = p;
      end++;
    }
    const pairs: Array<[number, number]> = [];
    const flat: number[] = [];
    const chunkReads: Array<{ read: (typeof reads)[number]; first: number }> = [];
    for (let r = start; r < end; r++) {
      for (const rd of byRow.get(r) ?? []) {
        const t = items[rd.item].targets[rd.target];
        chunkReads.push({ read: rd, first: pairs.length });
        t.forEach((tok, k) => {
          flat.push(pairs.length * V + tok);
          pairs.push([r - start, rd.offset + k]);
        });
      }
    }
    const batch = padBatch(rows.slice(start, end), 'right');
    const [lse, picked, am] = tf.tidy(() => {
      const logits = forward(model, batch, { logitsAt: pairs }).logits!;
      return [logSumExpRows(logits), tf.gather(tf.reshape(logits, [-1]), tf.tensor1d(flat, 'int32')), tf.argMax(logits, 1)];
    });
    const lseD = lse.dataSync() as Float32Array;
    const pickedD = picked.dataSync() as Float32Array;
    const amD = am.dataSync() as Int32Array;
    tf.dispose([lse, picked, am]);
    for (const { read, first } of chunkReads) {
      const t = items[read.item].targets[read.target];
      const tokenNll: number[] = [];
      let all = true;
      t.forEach((tok, k) => {
        tokenNll.push(lseD[first + k] - pickedD[first + k]);
        if (amD[first + k] !== tok) all = false;
      });
      out[read.item][read.target] = { nll: tokenNll.reduce((a, x) => a + x, 0) / tokenNll.length, tokenNll, allArgmax: all };
    }
    start = end;
  }
  return out;
}


/** Argmax of the next-token logits after each row (its last real token), batched. */
export function nextTokenArgmax(model: DecoderModel, rows: number[][], opts: ScoreOptions = {}): number[] {
  const maxTokens = opts.maxBatchTokens ?? 4096;
  const maxPos = opts.maxPositions ?? 256;
  const out: number[] = [];
  let start = 0;
  while (start < rows.length) {
    let end = start;
    let width = 0;
    while (end < rows.length) {
      const w = Math.max(width, rows[end].length);
      if (end > start && (w * (end - start + 1) > maxTokens || end - start + 1 > maxPos)) break;
      width = w;
      end++;
    }
    const batch = padBatch(rows.slice(start, end), 'right');
    const am = tf.tidy(() => tf.argMax(forward(model, batch).logits!, 1));
    out.push(...(am.dataSync() as Int32Array));
    am.dispose();
    start = end;
  }
  return out;
}
