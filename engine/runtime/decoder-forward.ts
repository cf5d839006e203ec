/**
 * The one forward implementation, split into the pieces callers compose: embedding, one
 * block (with optional past keys/values), the final norm and the unembedding. Every
 * activation site passes through the caller's hook. All ops are differentiable and avoid the
 * tfjs pitfalls measured in docs/tfjs-backends.md: activations are gathered with one-hot
 * matmuls (gather's gradient is missing on WASM), the causal mask is a constant additive
 * tensor (bandPart has no gradient), and weight matmuls are 2-D and non-transposed.
 *
 * On the native backend, outside a gradient tape, a GPT-2-style block runs instead as
 * onnxruntime graphs built from the same weights (native/block.ts), split at every site a hook
 * acts on; the ops here remain the definition it is tested against (test/native-block.test.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { BlockWeights, DecoderConfig, DecoderWeights, NormWeights } from '../model/decoder.js';
import { site, type Hook } from './sites.js';
import { applyRotary, rotaryTables } from './rotary.js';
import { hostData, hostWeight } from './native/host-weights.js';
import { nativeBiasGeluNew, nativeLayerNorm, nativeLinear } from './native/forward-ops.js';
import { nativeBlock } from './native/block.js';
import { nativeMatMulInstalled } from './native/matmul-kernel.js';
import { unembedOf } from '../model/unembedding.js';

export interface KV {
  /** [B, nKvHead, Tk, headDim] */
  k: tf.Tensor4D;
  v: tf.Tensor4D;
}

export interface DecoderModel {
  config: DecoderConfig;
  weights: DecoderWeights;
}

const NEG_INF = -1e9;

export function norm(cfg: DecoderConfig, w: NormWeights, x: tf.Tensor): tf.Tensor {
  if (cfg.norm === 'rmsnorm') {
    const ms = tf.mean(tf.square(x), -1, true);
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, cfg.normEps))), w.g);
  }
  // Forward passes on the native backend: one onnxruntime op (native/forward-ops.ts).
  const fused = w.b ? nativeLayerNorm(x, w.g, w.b, cfg.normEps) : null;
  if (fused) return fused;
  const mean = tf.mean(x, -1, true);
  const xc = tf.sub(x, mean);
  const variance = tf.mean(tf.square(xc), -1, true);
  const y = tf.mul(tf.mul(xc, tf.rsqrt(tf.add(variance, cfg.normEps))), w.g);
  return w.b ? tf.add(y, w.b) : y;
}

const GELU_C = Math.sqrt(2 / Math.PI);

export function activation(kind: DecoderConfig['act'], x: tf.Tensor): tf.Tensor {
  switch (kind) {
    case 'gelu_new': {
      // 0.5·x·(1 + tanh(z)) = x·σ(2z), z = √(2/π)(x + 0.044715x³): the same function, but
      // pow and tanh are ~30× slower than sigmoid and multiplies on WASM (bench/RESULTS.md).
      const x3 = tf.mul(tf.mul(x, x), x);
      const z2 = tf.mul(tf.add(x, tf.mul(x3, 0.044715)), 2 * GELU_C);
      return tf.mul(x, tf.sigmoid(z2));
    }
    case 'gelu':
      return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
    case 'relu':
      return tf.relu(x);
    case 'silu':
      return tf.mul(x, tf.sigmoid(x));
  }
}

/**
 * How weight products x·W ([N, in]·[in, out]) are computed: a plain matmul, unless editing code
 * (engine/edit/fastgrad.ts) swaps in a frozen-weight product for the span of one synchronous
 * gradient computation (its gradient uses a cached Wᵀ and never saves or differentiates W).
 */
export type WeightMatMul = (x2d: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D;
const plainWeightMatMul: WeightMatMul = (x2d, w) => tf.matMul(x2d, w) as tf.Tensor2D;
let weightMatMul: WeightMatMul = plainWeightMatMul;
/** Installs a weight product (undefined: the plain matmul); returns the previous one. */
export function setWeightMatMul(fn: WeightMatMul | undefined): WeightMatMul {
  const prev = weightMatMul;
  weightMatMul = fn ?? plainWeightMatMul;
  return prev;
}

/** activation(linear(x2d, w)), with GPT-2's bias + gelu_new as one native op where it can be (native/forward-ops.ts). */
function biasActivation(kind: DecoderConfig['act'], x2d: tf.Tensor2D, w: { w: tf.Tensor2D; b?: tf.Tensor1D }): tf.Tensor {
  if (kind === 'gelu_new' && w.b) {
    const y = weightMatMul(x2d, w.w);
    return nativeBiasGeluNew(y, w.b) ?? activation(kind, tf.add(y, w.b));
  }
  return activation(kind, linear(x2d, w));
}

function linear(x2d: tf.Tensor2D, w: { w: tf.Tensor2D; b?: tf.Tensor1D }): tf.Tensor2D {
  // Forward passes on the native backend: product and bias in one onnxruntime GEMM.
  const fused = w.b && weightMatMul === plainWeightMatMul ? nativeLinear(x2d, w.w, w.b) : null;
  if (fused) return fused;
  const y = weightMatMul(x2d, w.w);
  return w.b ? (tf.add(y, w.b) as tf.Tensor2D) : y;
}

/**
 * Positions and the additive attention bias for a padded batch.
 * `keyMask[b][j]` = 1 where key j (past keys first, then the new tokens) is a real token.
 * Query i of row b sits at key index `pastLen + i`; it may see key j when j ≤ that index and
 * the key is real. Rows whose query is a pad token see nothing real; their outputs are unused.
 */
export function attentionBias(keyMask: number[][], pastLen: number, tq: number): tf.Tensor4D {
  const b = keyMask.length;
  const tk = pastLen + tq;
  const data = new Float32Array(b * tq * tk);
  for (let r = 0; r < b; r++) {
    for (let i = 0; i < tq; i++) {
      const base = (r * tq + i) * tk;
      for (let j = 0; j < tk; j++) {
        data[base + j] = j <= pastLen + i && keyMask[r][j] ? 0 : NEG_INF;
      }
    }
  }
  return tf.tensor4d(data, [b, 1, tq, tk]);
}

/** Token embeddings (site hook_embed), plus learned position embeddings where the model has them. */
export function embed(m: DecoderModel, ids: tf.Tensor2D, positions: tf.Tensor2D, hook?: Hook): tf.Tensor3D {
  const [b, t] = ids.shape;
  const d = m.config.dModel;
  let tok = tf.reshape(tf.gather(m.weights.wte, tf.reshape(ids, [-1])), [b, t, d]) as tf.Tensor3D;
  if (hook) tok = hook(site.embed, tok);
  if (m.weights.wpe) {
    const pos = tf.reshape(tf.gather(m.weights.wpe, tf.reshape(positions, [-1])), [b, t, d]);
    return tf.add(tok, pos);
  }
  return tok;
}

function splitHeads(x2d: tf.Tensor2D, b: number, t: number, heads: number, dh: number): tf.Tensor4D {
  return tf.transpose(tf.reshape(x2d, [b, t, heads, dh]), [0, 2, 1, 3]);
}

/**
 * Position ids [B, Tq] of the queries, recovered from the attention bias: the number of keys
 * a query may see (its row's real tokens up to and including itself, past keys included)
 * minus one. For the causal + padding bias that attentionBias builds this is exactly the
 * positions forward() computes (index among the row's real tokens, continuing after cached
 * ones), so left padding and KV-cached generation rotate each token by its true position.
 * Pad queries see nothing and get 0; their outputs are never used. The bias is a constant,
 * so this adds nothing to any gradient.
 */
function queryPositions(bias: tf.Tensor4D): tf.Tensor2D {
  const [b, , tq] = bias.shape;
  const visible = tf.cast(tf.greater(bias, NEG_INF / 2), 'float32');
  const seen = tf.sum(tf.slice(visible, [0, 0, 0, 0], [b, 1, tq, -1]), -1); // [B, 1, Tq]
  return tf.reshape(tf.relu(tf.sub(seen, 1)), [b, tq]) as tf.Tensor2D;
}

type Linear = { w: tf.Tensor2D; b?: tf.Tensor1D };
const qkvSplits = new WeakMap<tf.Tensor2D, { q: Linear; k: Linear; v: Linear }>();

/**
 * The fused q|k|v projection as three matrices, split once per weight tensor and cached:
 * slicing the [B·T, 3d] product on every call copies it out of the WASM heap and was ~15–28%
 * of a forward pass (bench/RESULTS.md). Keyed by the weight tensor, so a replaced weight gets
 * a fresh split; the split tensors are kept out of tidy scopes and freed with the weight.
 */
function splitQkv(qkv: Linear, nq: number, nkv: number): { q: Linear; k: Linear; v: Linear } {
  const hit = qkvSplits.get(qkv.w);
  if (hit && !hit.q.w.isDisposed && !qkv.w.isDisposed) return hit;
  const hosted = hostData(qkv.w.dataId);
  const [rows, cols] = qkv.w.shape;
  const part = (start: number, size: number): Linear => {
    // A host weight (outside the WASM heap) is split on the host: no WASM kernel may read it.
    let w: tf.Tensor2D;
    if (hosted) {
      const out = new Float32Array(rows * size);
      for (let r = 0; r < rows; r++) out.set(hosted.subarray(r * cols + start, r * cols + start + size), r * size);
      w = tf.keep(hostWeight(out, rows, size));
    } else {
      w = tf.keep(tf.slice(qkv.w, [0, start], [-1, size]));
    }
    const b = qkv.b ? tf.keep(tf.slice(qkv.b, [start], [size])) : undefined;
    return { w, ...(b ? { b } : {}) };
  };
  const split = { q: part(0, nq), k: part(nq, nkv), v: part(nq + nkv, nkv) };
  qkvSplits.set(qkv.w, split);
  return split;
}

/** Frees the cached q/k/v split of a block (call when its weights are disposed). */
export function disposeQkvSplit(qkv: Linear): void {
  const hit = qkvSplits.get(qkv.w);
  if (!hit) return;
  for (const p of [hit.q, hit.k, hit.v]) tf.dispose([p.w, ...(p.b ? [p.b] : [])]);
  qkvSplits.delete(qkv.w);
}

/**
 * Multi-head attention with optional rotary positions (applied to q and k before the past
 * keys are joined, so the cache holds rotated keys) and grouped-query attention: query head
 * j uses key/value head floor(j / (nHead / nKvHead)), as transformers' repeat_kv. Instead of
 * materialising repeated keys, the `rep` query heads sharing a kv head are stacked along the
 * time axis ([B, nKvHead, rep·Tq, dh]) so one batched matmul serves them all; the cache keeps
 * nKvHead heads.
 */
function attention(
  cfg: DecoderConfig,
  w: BlockWeights,
  x: tf.Tensor3D,
  biasIn: tf.Tensor4D,
  past: KV | undefined,
  lastOnly = false,
): { out: tf.Tensor3D; kv: KV } {
  const [b, t, d] = x.shape;
  const { nHead: h, nKvHead: hkv, headDim: dh } = cfg;
  if (hkv <= 0 || h % hkv !== 0) throw new Error(`nHead ${h} is not a multiple of nKvHead ${hkv}`);
  const rep = h / hkv;
  const x2 = tf.reshape(x, [b * t, d]) as tf.Tensor2D;
  const split = splitQkv(w.qkv, h * dh, hkv * dh);
  // lastOnly: keys/values for every position, the query (and so the output) for the last one.
  const tq = lastOnly ? 1 : t;
  const xq2 = lastOnly ? (tf.reshape(tf.slice(x, [0, t - 1, 0], [b, 1, d]), [b, d]) as tf.Tensor2D) : x2;
  const bias = lastOnly ? (tf.slice(biasIn, [0, 0, biasIn.shape[2] - 1, 0], [-1, -1, 1, -1]) as tf.Tensor4D) : biasIn;
  // [B, T, heads, dh]: rotary acts per token and head, before heads move to axis 1.
  let q = tf.reshape(linear(xq2, split.q), [b, tq, h, dh]) as tf.Tensor4D;
  let k = tf.reshape(linear(x2, split.k), [b, t, hkv, dh]) as tf.Tensor4D;
  const vNew = linear(x2, split.v);
  if (cfg.positional.kind === 'rotary') {
    const tables = rotaryTables(queryPositions(biasIn), dh, cfg.positional);
    q = applyRotary(q, lastOnly ? rotaryTables(queryPositions(bias), dh, cfg.positional) : tables);
    k = applyRotary(k, tables);
  }
  let kh = tf.transpose(k, [0, 2, 1, 3]) as tf.Tensor4D; // [B, hkv, T, dh]
  let vh = splitHeads(vNew, b, t, hkv, dh);
  if (past && past.k.shape[0] !== b) {
    return { out: sharedPastAttention(cfg, w, q, kh, vh, bias, past, [b, tq, t, d]), kv: { k: kh, v: vh } };
  }
  if (past) {
    kh = tf.concat([past.k, kh], 2);
    vh = tf.concat([past.v, vh], 2);
  }
  const tk = kh.shape[2];
  // [B, h, Tq, dh] → [B, hkv, rep·Tq, dh]: heads g·rep … g·rep+rep-1 are contiguous.
  const qh = tf.reshape(tf.transpose(q, [0, 2, 1, 3]), [b, hkv, rep * tq, dh]);
  const raw = tf.reshape(tf.matMul(qh, kh, false, true), [b, h, tq, tk]);
  const scores = tf.add(tf.mul(raw, 1 / Math.sqrt(dh)), bias);
  const probs = tf.reshape(tf.softmax(scores), [b, hkv, rep * tq, tk]);
  const ctx = tf.reshape(tf.matMul(probs, vh), [b, h, tq, dh]);
  const merged = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [b * tq, h * dh]) as tf.Tensor2D;
  const out = tf.reshape(linear(merged, w.o), [b, tq, d]) as tf.Tensor3D;
  return { out, kv: { k: kh, v: vh } };
}

/**
 * Attention when every group of `pb` rows shares one past (causal tracing: many restorations of
 * the same corrupted run attend to its cached keys/values for earlier positions). Rows are
 * group-major (row = group·pb + r); the past is [pb, hkv, Tp, dh] and is broadcast over groups
 * by the batched matmul instead of being copied per group. The softmax over [past | new] keys
 * is computed in two parts with a shared maximum, so nothing is concatenated or sliced on the
 * key axis. Returns the attention output; only the new keys/values are returned as kv.
 */
function sharedPastAttention(
  cfg: DecoderConfig,
  w: BlockWeights,
  q: tf.Tensor4D,
  khNew: tf.Tensor4D,
  vhNew: tf.Tensor4D,
  bias: tf.Tensor4D,
  past: KV,
  [b, t, tk, d]: [number, number, number, number],
): tf.Tensor3D {
  const { nHead: h, nKvHead: hkv, headDim: dh } = cfg;
  const rep = h / hkv;
  const pb = past.k.shape[0];
  const tp = past.k.shape[2];
  if (b % pb !== 0) throw new Error(`shared past of ${pb} rows does not divide a batch of ${b}`);
  const groups = b / pb;
  const scale = 1 / Math.sqrt(dh);
  const qh = tf.reshape(tf.transpose(q, [0, 2, 1, 3]), [b, hkv, rep * t, dh]);
  const q5 = tf.reshape(qh, [groups, pb, hkv, rep * t, dh]);
  const pk5 = tf.reshape(past.k, [1, pb, hkv, tp, dh]);
  const pv5 = tf.reshape(past.v, [1, pb, hkv, tp, dh]);
  const bb = bias.shape[0];
  const biasPast = tf.slice(bias, [0, 0, 0, 0], [bb, 1, t, tp]);
  const biasNew = tf.slice(bias, [0, 0, 0, tp], [bb, 1, t, tk]);
  const sPast = tf.add(tf.mul(tf.reshape(tf.matMul(q5, pk5, false, true), [b, h, t, tp]), scale), biasPast);
  const sNew = tf.add(tf.mul(tf.reshape(tf.matMul(qh, khNew, false, true), [b, h, t, tk]), scale), biasNew);
  const m = tf.maximum(tf.max(sPast, -1, true), tf.max(sNew, -1, true));
  const ePast = tf.exp(tf.sub(sPast, m));
  const eNew = tf.exp(tf.sub(sNew, m));
  const denom = tf.add(tf.sum(ePast, -1, true), tf.sum(eNew, -1, true));
  const cPast = tf.reshape(tf.matMul(tf.reshape(ePast, [groups, pb, hkv, rep * t, tp]), pv5), [b, h, t, dh]);
  const cNew = tf.reshape(tf.matMul(tf.reshape(eNew, [b, hkv, rep * t, tk]), vhNew), [b, h, t, dh]);
  const ctx = tf.div(tf.add(cPast, cNew), denom);
  const merged = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [b * t, h * dh]) as tf.Tensor2D;
  return tf.reshape(linear(merged, w.o), [b, t, d]) as tf.Tensor3D;
}

function mlp(cfg: DecoderConfig, w: BlockWeights, x: tf.Tensor3D, l: number, hook?: Hook): tf.Tensor3D {
  const [b, t, d] = x.shape;
  const x2 = tf.reshape(x, [b * t, d]) as tf.Tensor2D;
  const act =
    cfg.gatedMlp && w.mlpGate
      ? tf.mul(activation(cfg.act, linear(x2, w.mlpGate)), linear(x2, w.mlpIn))
      : biasActivation(cfg.act, x2, w.mlpIn);
  let post = tf.reshape(act, [b, t, cfg.dMlp]) as tf.Tensor3D;
  if (hook) post = hook(site.mlpPost(l), post);
  let out = tf.reshape(linear(tf.reshape(post, [b * t, cfg.dMlp]) as tf.Tensor2D, w.mlpOut), [b, t, d]) as tf.Tensor3D;
  if (hook) out = hook(site.mlpOut(l), out);
  return out;
}

/**
 * One transformer block. Returns the new residual stream and this layer's full keys/values.
 * With `lastOnly` the output is the last position's only ([B, 1, d]): keys and values are
 * still made for every position, the query, attention output and MLP only for the last (the
 * top layer of a pass that reads only the last position's logits). Hooks after residPre then
 * see that one position.
 */
export function block(
  m: DecoderModel,
  l: number,
  h: tf.Tensor3D,
  bias: tf.Tensor4D,
  past?: KV,
  hook?: Hook,
  lastOnly = false,
): { h: tf.Tensor3D; kv: KV } {
  const cfg = m.config;
  const w = m.weights.blocks[l];
  if (hook) h = hook(site.residPre(l), h);
  // Forward passes on the native backend: the block as onnxruntime graphs (native/block.ts).
  const fused =
    weightMatMul === plainWeightMatMul
      ? nativeBlock({ cfg, layer: l, w, split: () => splitQkv(w.qkv, cfg.nHead * cfg.headDim, cfg.nKvHead * cfg.headDim), h, bias, past, hook, lastOnly })
      : null;
  if (fused) {
    const out = hook ? hook(site.residPost(l), fused.h) : fused.h;
    return { h: out, kv: fused.kv };
  }
  const a = attention(cfg, w, norm(cfg, w.ln1, h) as tf.Tensor3D, bias, past, lastOnly);
  if (lastOnly) h = tf.slice(h, [0, h.shape[1] - 1, 0], [-1, 1, -1]) as tf.Tensor3D;
  let attnOut = a.out;
  if (hook) attnOut = hook(site.attnOut(l), attnOut);
  let out: tf.Tensor3D;
  if (cfg.parallel === 'none') {
    const h1 = tf.add(h, attnOut) as tf.Tensor3D;
    out = tf.add(h1, mlp(cfg, w, norm(cfg, w.ln2 ?? w.ln1, h1) as tf.Tensor3D, l, hook));
  } else {
    const mlpIn = cfg.parallel === 'shared-norm' ? w.ln1 : (w.ln2 ?? w.ln1);
    out = tf.add(tf.add(h, attnOut), mlp(cfg, w, norm(cfg, mlpIn, h) as tf.Tensor3D, l, hook));
  }
  if (hook) out = hook(site.residPost(l), out);
  return { h: out, kv: a.kv };
}

/** Final norm (site ln_final.hook_normalized). */
export function finalNorm(m: DecoderModel, h: tf.Tensor3D, hook?: Hook): tf.Tensor3D {
  let y = norm(m.config, m.weights.lnF, h) as tf.Tensor3D;
  if (hook) y = hook(site.finalNorm, y);
  return y;
}

/**
 * Logits for rows of normalised hidden states [N, d] → [N, V]. On the native backend the product
 * takes the output embedding's rows as stored (a transposed product costs MLAS nothing extra);
 * plain WASM's transposed matmul is slow and the editing code's frozen-weight products
 * (edit/fastgrad.ts) want [d, V], so there the transpose is built once (model/unembedding.ts).
 */
export function unembed(m: DecoderModel, x2d: tf.Tensor2D): tf.Tensor2D {
  const native = weightMatMul === plainWeightMatMul && nativeMatMulInstalled() && tf.getBackend() === 'wasm';
  const y = native ? (tf.matMul(x2d, m.weights.head, false, true) as tf.Tensor2D) : weightMatMul(x2d, unembedOf(m.weights));
  return m.weights.unembedBias ? (tf.add(y, m.weights.unembedBias) as tf.Tensor2D) : y;
}

/**
 * Picks rows `index[i]` of x [N, d] as a one-hot matmul, so the gradient flows back into x on
 * every backend (tf.gather's gradient needs UnsortedSegmentSum, which WASM lacks).
 */
export function selectRows(x2d: tf.Tensor2D, index: number[]): tf.Tensor2D {
  return tf.matMul(oneHotMatrix(index, x2d.shape[0]), x2d);
}

/** A constant [index.length, depth] one-hot matrix built on the host (tf.oneHot rejects depth 1). */
export function oneHotMatrix(index: number[], depth: number): tf.Tensor2D {
  const m = new Float32Array(index.length * depth);
  index.forEach((j, i) => {
    m[i * depth + j] = 1;
  });
  return tf.tensor2d(m, [index.length, depth]);
}
