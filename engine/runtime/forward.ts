/**
 * The forward pass over a padded batch: embeddings, every block, final norm, and logits at
 * the positions asked for. Callers own memory: wrap calls in tf.tidy (or dispose results).
 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import { attentionBias, block, embed, finalNorm, selectRows, unembed, type DecoderModel, type KV } from './decoder-forward.js';
import type { PaddedBatch } from './batch.js';
import { lastIndices } from './batch.js';
import type { Hook } from './sites.js';

export interface ForwardOptions {
  hook?: Hook;
  /**
   * Which (row, position) pairs to unembed. 'last' (default): each row's last real token;
   * 'none': skip the unembedding (activation reads only).
   */
  logitsAt?: 'last' | 'none' | Array<[number, number]>;
  /** Keys/values of earlier tokens (generation with a KV cache). */
  past?: { kv: KV[]; mask: number[][] };
  /** Return each layer's keys/values (past + new) for the next step. */
  returnKV?: boolean;
  /** Stop after this block: later blocks, the final norm and the logits are skipped. */
  stopAfterLayer?: number;
  /**
   * Start at this block with this residual stream (its hook_resid_pre, [B, T, d] laid out as
   * the batch): the embedding and the blocks below are skipped. For re-running the top of the
   * model when only weights from that layer up changed (specificity checks after an edit).
   * Not with `past` or `returnKV`.
   */
  startAt?: { layer: number; h: tf.Tensor3D };
}

export interface ForwardResult {
  /** [pairs, V] in the order of `logitsAt`. */
  logits?: tf.Tensor2D;
  /**
   * Final normalised hidden states [B, T, d]. Absent when stopped early, and when only logits
   * at the last position were asked for with no hook (the top block then ran for that position
   * alone); ask for logitsAt 'none' to read them.
   */
  hidden?: tf.Tensor3D;
  kv?: KV[];
  /** Key mask covering past + new tokens (for the next generation step). */
  keyMask?: number[][];
}

export function forward(m: DecoderModel, batch: PaddedBatch, opts: ForwardOptions = {}): ForwardResult {
  const b = batch.ids.length;
  const t = batch.width;
  const pastLen = opts.past ? opts.past.kv[0].k.shape[2] : 0;
  // Past the context there are no position embeddings: a clear error instead of GatherV2's.
  if (pastLen + t > m.config.nCtx) {
    throw new FactLensError('PROMPT_TOO_LONG', `an input of ${pastLen + t} tokens is longer than the model's context of ${m.config.nCtx}`, {
      field: 'prompt',
      tokens: pastLen + t,
      limit: m.config.nCtx,
    });
  }
  const keyMask = opts.past ? batch.mask.map((row, r) => [...opts.past!.mask[r], ...row]) : batch.mask;
  const pastPositions = opts.past ? opts.past.mask.map((row) => row.reduce((a, x) => a + x, 0)) : null;
  const positions = pastPositions ? batch.positions.map((row, r) => row.map((p) => p + pastPositions[r])) : batch.positions;

  const ids = tf.tensor2d(batch.ids, [b, t], 'int32');
  const pos = tf.tensor2d(positions, [b, t], 'int32');
  const bias = attentionBias(keyMask, pastLen, t);
  if (opts.startAt && (opts.past || opts.returnKV)) throw new Error('forward: startAt cannot be combined with past or returnKV');
  let h = opts.startAt ? opts.startAt.h : embed(m, ids, pos, opts.hook);
  const kvs: KV[] = [];
  const L = m.config.nLayer;
  const last = opts.stopAfterLayer ?? L - 1;
  const at = opts.logitsAt ?? 'last';
  const pairs: Array<[number, number]> | null = at === 'none' ? null : at === 'last' ? lastIndices(batch).map((p, r) => [r, p]) : at;
  // Only logits read, all at the last position, nothing hooked: the top block's output at
  // other positions is never used, so it runs for the last position only (its keys and
  // values still cover every position). Exact; saves most of one block.
  const topLastOnly = !opts.hook && !opts.returnKV && last === L - 1 && t > 1 && pairs !== null && pairs.every(([, p]) => p === t - 1);
  for (let l = opts.startAt?.layer ?? 0; l <= last; l++) {
    const r = block(m, l, h, bias, opts.past?.kv[l], opts.hook, topLastOnly && l === L - 1);
    h = r.h;
    if (opts.returnKV) kvs.push(r.kv);
  }
  const result: ForwardResult = { keyMask };
  if (opts.returnKV) result.kv = kvs;
  if (opts.stopAfterLayer !== undefined && opts.stopAfterLayer < m.config.nLayer - 1) return result;
  const hn = finalNorm(m, h, opts.hook);
  if (topLastOnly) {
    result.logits = unembed(m, selectRows(tf.reshape(hn, [b, m.config.dModel]) as tf.Tensor2D, pairs!.map(([r]) => r)));
    return result;
  }
  result.hidden = hn;
  if (pairs === null) return result;
  const flat = tf.reshape(hn, [b * t, m.config.dModel]) as tf.Tensor2D;
  result.logits = unembed(m, selectRows(flat, pairs.map(([r, p]) => r * t + p)));
  return result;
}
