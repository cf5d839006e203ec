/**
 * Seeded top-k sampling for the generation metrics (rome-spec §3.4: one continuation per
 * generation prompt, `totalLength` tokens including the prompt, top-k 5).
 *
 * Same sampling rule (runtime/generate.ts pickTopK over tf.topk), RNG stream and KV-cached
 * forward as runtime/generate.ts (left-padded rows, one token per row per step, rows consume
 * the RNG in order), so for the same seed it produces the same tokens; what differs is the
 * length rule: each row stops at `totalLength` tokens including its own prompt, and rows
 * that would pass the context are sampled in groups.
 *
 * Texts are decoded as the reference's generate_fast does: special tokens skipped, NFKD,
 * "\n\n" → " ", and any literal "<|endoftext|>" removed. The reference does not stop at
 * end-of-text: the model keeps sampling after it, and so do we.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LoadedModel } from '../model/load.js';
import type { DecoderModel, KV } from '../runtime/decoder-forward.js';
import { forward } from '../runtime/forward.js';
import { padBatch, type PaddedBatch } from '../runtime/batch.js';
import { pickTopK } from '../runtime/generate.js';
import { Rng } from '../util/rng.js';
import { scoped } from '../util/scope.js';

export interface SampleOptions {
  /** Tokens per text including the prompt (capped at the model's context). */
  totalLength: number;
  topK?: number;
  seed?: number;
}

/**
 * Generated ids of each row (prompt excluded): row r gets `totalLength − prompt_r.length`
 * tokens (the context caps totalLength). Rows are sampled together (left-padded, so a row's
 * positions run 0..len−1 then on); a row that already has enough tokens still draws (and
 * discards) its samples, so the RNG stream does not depend on which rows are full. When the
 * longest prompt plus the most new tokens would pass the context, rows are sampled in groups
 * of similar prompt length (shortest first), one after the other from the same RNG.
 */
export function sampleTopK(m: DecoderModel, prompts: number[][], opts: SampleOptions): number[][] {
  const k = Math.max(1, Math.min(opts.topK ?? 5, m.config.vocabSize));
  const rng = new Rng(opts.seed ?? 0);
  const nCtx = m.config.nCtx;
  const total = Math.min(opts.totalLength, nCtx);
  const out: number[][] = prompts.map(() => []);
  const rows = prompts.map((_, i) => i).filter((i) => prompts[i].length > 0 && prompts[i].length < total);
  const fits = (g: number[]) => {
    const lens = g.map((i) => prompts[i].length);
    return Math.max(...lens) + (total - Math.min(...lens)) <= nCtx;
  };
  const groups: number[][] = [];
  if (rows.length && fits(rows)) groups.push(rows);
  else {
    for (const i of [...rows].sort((a, b) => prompts[a].length - prompts[b].length || a - b)) {
      const g = groups[groups.length - 1];
      if (g && fits([...g, i])) g.push(i);
      else groups.push([i]);
    }
  }
  for (const g of groups) {
    const gen = sampleGroup(m, g.map((i) => prompts[i]), total, k, rng);
    g.forEach((i, j) => (out[i] = gen[j]));
  }
  return out;
}

function sampleGroup(m: DecoderModel, prompts: number[][], total: number, k: number, rng: Rng): number[][] {
  const want = prompts.map((p) => Math.max(0, total - p.length));
  const steps = Math.max(0, ...want);
  const out: number[][] = prompts.map(() => []);
  let batch: PaddedBatch = padBatch(prompts, 'left');
  let cache: { kv: KV[]; mask: number[][] } | null = null;
  try {
    for (let s = 0; s < steps; s++) {
      const current = batch;
      const prev = cache;
      const res = scoped(() => {
        const r = forward(m, current, { returnKV: true, past: prev ?? undefined });
        const top = tf.topk(r.logits!, k, true);
        return { values: top.values, indices: top.indices, kv: r.kv!, keyMask: r.keyMask! };
      });
      if (prev) for (const kv of prev.kv) tf.dispose([kv.k, kv.v]);
      cache = { kv: res.kv, mask: res.keyMask };
      const vals = res.values.dataSync() as Float32Array;
      const idx = res.indices.dataSync() as Int32Array;
      tf.dispose([res.values, res.indices]);
      const toks = prompts.map((_, r) => pickTopK(vals.subarray(r * k, (r + 1) * k), idx.subarray(r * k, (r + 1) * k), rng));
      toks.forEach((t, r) => {
        if (out[r].length < want[r]) out[r].push(t);
      });
      batch = {
        ids: toks.map((t) => [t]),
        mask: toks.map(() => [1]),
        positions: toks.map(() => [0]),
        lengths: toks.map(() => 1),
        offsets: toks.map(() => 0),
        side: 'left',
        width: 1,
      };
    }
  } finally {
    if (cache) for (const kv of cache.kv) tf.dispose([kv.k, kv.v]);
  }
  return out;
}

/** Text as the reference's generate_fast returns it (prompt included, special tokens removed). */
export function decodeGeneration(model: LoadedModel, ids: number[]): string {
  const special = new Set(model.tokenizer.specialTokens.values());
  const text = model.tokenizer.decode(ids.filter((id) => !special.has(id)));
  return text.normalize('NFKD').replace(/\n\n/g, ' ').split('<|endoftext|>').join('');
}

/** One continuation per prompt, `totalLength` tokens in all (prompt included), as texts. */
export function generateTexts(model: LoadedModel, prompts: string[], opts: SampleOptions): string[] {
  if (prompts.length === 0) return [];
  const ids = prompts.map((p) => model.tokenizer.encode(p).slice(0, model.config.nCtx));
  const gen = sampleTopK(model, ids, opts);
  return ids.map((p, r) => decodeGeneration(model, [...p, ...gen[r]]));
}
