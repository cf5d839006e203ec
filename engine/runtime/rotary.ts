/**
 * Rotary position embeddings (RoPE), applied to queries and keys before attention.
 *
 * Each head vector is rotated pairwise by angles `pos · θ_i`, θ_i = base^(-2i/dims), over its
 * first `dims` entries; the rest pass through unchanged. Two pairings exist:
 * - 'interleaved' (GPT-J `rotate_every_two`): pair i is (2i, 2i+1);
 * - 'half' (GPT-NeoX / Llama / Qwen2 `rotate_half`): pair i is (i, i + dims/2).
 *
 * Implemented as `x·cos + rot(x)·sin` where rot is a constant signed permutation applied as a
 * 2-D non-transposed matmul (exact: one ±1 term per output) and cos/sin are full-head-width
 * tables in which the pass-through entries have angle 0 (cos 1, sin 0), so there is no
 * slicing or concatenation, and everything is differentiable on every backend (no gather).
 */
import * as tf from '@tensorflow/tfjs-core';

export interface RotarySpec {
  dims: number;
  style: 'interleaved' | 'half';
  base: number;
}

/**
 * Per-entry inverse frequencies over the whole head [headDim]: θ of the pair each entry
 * belongs to, 0 for entries past `dims`. Rounded step by step in float32 as transformers does
 * (`1 / base ** (arange(0, dims, 2).float() / dims)`).
 */
export function inverseFrequencies(headDim: number, spec: RotarySpec): Float32Array {
  const { dims, style, base } = spec;
  checkSpec(headDim, spec);
  const half = dims / 2;
  const theta = new Float32Array(half);
  for (let i = 0; i < half; i++) theta[i] = Math.fround(1 / Math.fround(Math.pow(base, Math.fround((2 * i) / dims))));
  const out = new Float32Array(headDim);
  for (let j = 0; j < dims; j++) out[j] = style === 'interleaved' ? theta[j >> 1] : theta[j % half];
  return out;
}

/** The constant [headDim, headDim] matrix R with x·R = rotate_every_two(x) or rotate_half(x) on the first `dims` entries (0 elsewhere). */
export function rotationMatrix(headDim: number, spec: RotarySpec): Float32Array {
  const { dims, style } = spec;
  checkSpec(headDim, spec);
  const r = new Float32Array(headDim * headDim);
  const set = (row: number, col: number, v: number) => {
    r[row * headDim + col] = v;
  };
  if (style === 'interleaved') {
    // out[2i] = -x[2i+1], out[2i+1] = x[2i]
    for (let i = 0; i < dims / 2; i++) {
      set(2 * i + 1, 2 * i, -1);
      set(2 * i, 2 * i + 1, 1);
    }
  } else {
    // out[j] = -x[j+h] (j < h), out[j] = x[j-h] (h ≤ j < dims)
    const h = dims / 2;
    for (let j = 0; j < h; j++) {
      set(j + h, j, -1);
      set(j, j + h, 1);
    }
  }
  return r;
}

function checkSpec(headDim: number, spec: RotarySpec): void {
  if (!(spec.dims > 0 && spec.dims <= headDim && spec.dims % 2 === 0)) {
    throw new Error(`rotary dims ${spec.dims} must be even and in (0, ${headDim}]`);
  }
}

export interface RotaryTables {
  /** [B, T, 1, headDim]: broadcast over heads of a [B, T, H, headDim] tensor. */
  cos: tf.Tensor4D;
  sin: tf.Tensor4D;
  /** [headDim, headDim] rotation matrix (see rotationMatrix). */
  rot: tf.Tensor2D;
}

/**
 * cos/sin tables for position ids [B, T] (a float or int tensor, or host numbers). Positions
 * are absolute token indices within each row (past tokens included), so cached generation
 * and left padding rotate every token by its true position.
 */
export function rotaryTables(positions: tf.Tensor2D | number[][], headDim: number, spec: RotarySpec): RotaryTables {
  return tf.tidy(() => {
    const pos = Array.isArray(positions) ? tf.tensor2d(positions, undefined, 'float32') : tf.cast(positions, 'float32');
    const [b, t] = pos.shape as [number, number];
    const freq = tf.tensor1d(inverseFrequencies(headDim, spec));
    const angles = tf.mul(tf.reshape(pos, [b, t, 1, 1]), freq) as tf.Tensor4D; // [B, T, 1, dh]
    return {
      cos: tf.cos(angles) as tf.Tensor4D,
      sin: tf.sin(angles) as tf.Tensor4D,
      rot: tf.tensor2d(rotationMatrix(headDim, spec), [headDim, headDim]),
    };
  });
}

/** Rotates x [B, T, H, headDim] (heads not yet moved to axis 1) by the tables' positions. */
export function applyRotary(x: tf.Tensor4D, tables: RotaryTables): tf.Tensor4D {
  const [b, t, h, dh] = x.shape;
  const rotated = tf.reshape(tf.matMul(tf.reshape(x, [b * t * h, dh]) as tf.Tensor2D, tables.rot), [b, t, h, dh]);
  return tf.add(tf.mul(x, tables.cos), tf.mul(rotated, tables.sin)) as tf.Tensor4D;
}
