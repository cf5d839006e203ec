/**
 * Greedy and seeded top-k generation, with a KV cache (each step feeds one token per row) or
 * without (each step re-runs the whole sequence: the reference the cached path is tested
 * against). Rows of different lengths are left-padded so every row's next token is at the end.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { DecoderModel, KV } from './decoder-forward.js';
import { forward } from './forward.js';
import { padBatch } from './batch.js';
import { Rng } from '../util/rng.js';
import { scoped } from '../util/scope.js';
import type { Hook } from './sites.js';

export interface GenerateOptions {
  maxNewTokens: number;
  /** 'greedy' (default) or top-k sampling. */
  strategy?: 'greedy' | 'top-k';
  topK?: number;
  seed?: number;
  useCache?: boolean;
  /** Stop a row once it emits this id (it then pads with it). */
  stopId?: number | null;
  /** Applied to the prompt and every generated token (e.g. a steering intervention). */
  hook?: Hook;
  signal?: { cancelled: boolean };
}

function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/**
 * Top-k sampling from the k largest logits (values sorted descending, their ids beside): a
 * softmax over them, one uniform draw. The k largest are found on the backend (tf.topk) so
 * only [rows, k] values are read back, not all V logits sorted in JavaScript per row and step.
 */
export function pickTopK(values: ArrayLike<number>, ids: ArrayLike<number>, rng: Rng): number {
  const max = values[0];
  const w = Array.from(values, (v) => Math.exp(v - max));
  const total = w.reduce((a, x) => a + x, 0);
  let u = rng.uniform() * total;
  for (let j = 0; j < w.length; j++) {
    u -= w[j];
    if (u <= 0) return ids[j];
  }
  return ids[ids.length - 1];
}

/** Returns the generated ids of each row (prompts not included). */
export function generate(m: DecoderModel, prompts: number[][], opts: GenerateOptions): number[][] {
  const strategy = opts.strategy ?? 'greedy';
  const rng = new Rng(opts.seed ?? 0);
  const k = opts.topK ?? 5;
  const out: number[][] = prompts.map(() => []);
  const done = prompts.map(() => false);
  const maxLen = m.config.nCtx;
  let steps = Math.min(opts.maxNewTokens, maxLen - Math.max(...prompts.map((p) => p.length)));
  if (steps <= 0) return out;

  const nextTokens = (logits: tf.Tensor2D): number[] => {
    const v = logits.shape[1];
    if (strategy === 'greedy') {
      const data = logits.dataSync() as Float32Array;
      return prompts.map((_, r) => argmax(data.subarray(r * v, (r + 1) * v)));
    }
    const kk = Math.max(1, Math.min(k, v));
    const top = tf.topk(logits, kk, true);
    const vals = top.values.dataSync() as Float32Array;
    const idx = top.indices.dataSync() as Int32Array;
    tf.dispose([top.values, top.indices]);
    return prompts.map((_, r) => pickTopK(vals.subarray(r * kk, (r + 1) * kk), idx.subarray(r * kk, (r + 1) * kk), rng));
  };
  const record = (toks: number[]) =>
    toks.map((tok, r) => {
      const t = done[r] ? (opts.stopId ?? tok) : tok;
      out[r].push(t);
      if (opts.stopId !== undefined && opts.stopId !== null && t === opts.stopId) done[r] = true;
      return t;
    });

  if (!opts.useCache) {
    for (let s = 0; s < steps && !done.every(Boolean); s++) {
      if (opts.signal?.cancelled) break;
      const batch = padBatch(prompts.map((p, r) => [...p, ...out[r]]), 'left');
      const toks = tf.tidy(() => nextTokens(forward(m, batch, { hook: opts.hook }).logits!));
      record(toks);
    }
    return out;
  }

  let batch = padBatch(prompts, 'left');
  let cache: { kv: KV[]; mask: number[][] } | null = null;
  for (let s = 0; s < steps && !done.every(Boolean); s++) {
    if (opts.signal?.cancelled) break;
    const current = batch;
    const prev = cache;
    const res = scoped(() => {
      const r = forward(m, current, {
        hook: opts.hook,
        returnKV: true,
        past: prev ?? undefined,
      });
      return { logits: r.logits!, kv: r.kv!, keyMask: r.keyMask! };
    });
    if (prev) for (const kv of prev.kv) tf.dispose([kv.k, kv.v]);
    const toks = record(nextTokens(res.logits));
    res.logits.dispose();
    cache = { kv: res.kv, mask: res.keyMask };
    // Next step: one real token per row, positions continue from each row's real length.
    batch = { ids: toks.map((t) => [t]), mask: toks.map(() => [1]), positions: toks.map(() => [0]), lengths: toks.map(() => 1), offsets: toks.map(() => 0), side: 'left', width: 1 };
  }
  if (cache) for (const kv of cache.kv) tf.dispose([kv.k, kv.v]);
  return out;
}
