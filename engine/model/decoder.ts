/**
 * The canonical decoder every architecture adapter maps into. One forward implementation
 * (engine/runtime/decoder-forward.ts) runs all of them; adapters only translate config.json
 * and tensor names/layouts. Matrices are stored input-major ([in, out], GPT-2 Conv1D
 * orientation), so `x · W` is a plain non-transposed matmul (the fast path on WASM) and ROME's
 * rank-one update is always `W_out += u ⊗ v` with u ∈ R^f, v ∈ R^d.
 */
import type * as tf from '@tensorflow/tfjs-core';

export type NormKind = 'layernorm' | 'rmsnorm';
export type Activation = 'gelu_new' | 'gelu' | 'relu' | 'silu';

export type Positional =
  | { kind: 'learned' }
  | { kind: 'rotary'; dims: number; style: 'interleaved' | 'half'; base: number };

export interface DecoderConfig {
  /** config.json model_type, e.g. "gpt2". */
  modelType: string;
  nLayer: number;
  dModel: number;
  nHead: number;
  nKvHead: number;
  headDim: number;
  dMlp: number;
  vocabSize: number;
  nCtx: number;
  norm: NormKind;
  normEps: number;
  act: Activation;
  /** SwiGLU-style MLP: act(x·W_gate) * (x·W_in). */
  gatedMlp: boolean;
  /**
   * 'none': h += attn(ln1 h); h += mlp(ln2 h)  (GPT-2, Llama)
   * 'shared-norm': h += attn(ln1 h) + mlp(ln1 h)  (GPT-J)
   * 'separate-norm': h += attn(ln1 h) + mlp(ln2 h)  (GPT-NeoX)
   */
  parallel: 'none' | 'shared-norm' | 'separate-norm';
  positional: Positional;
  eosId: number | null;
}

export interface LinearWeights {
  /** [in, out] */
  w: tf.Tensor2D;
  b?: tf.Tensor1D;
}

export interface NormWeights {
  g: tf.Tensor1D;
  b?: tf.Tensor1D;
}

export interface BlockWeights {
  ln1: NormWeights;
  /** Absent when the architecture shares ln1 between attention and MLP (GPT-J). */
  ln2?: NormWeights;
  /** Fused [d, (nHead + 2·nKvHead)·headDim]: all q heads, then k heads, then v heads. */
  qkv: LinearWeights;
  /** [nHead·headDim, d] */
  o: LinearWeights;
  /** [d, f] */
  mlpIn: LinearWeights;
  /** [d, f], gated MLPs only. */
  mlpGate?: LinearWeights;
  /** [f, d]: the matrix ROME edits (its input is the key, its output the value). */
  mlpOut: LinearWeights;
}

export interface DecoderWeights {
  /** Token embedding [V, d]. */
  wte: tf.Tensor2D;
  /** Learned position embedding [nCtx, d]. */
  wpe?: tf.Tensor2D;
  blocks: BlockWeights[];
  lnF: NormWeights;
  /**
   * The output embedding [V, d], laid out as checkpoints store it: `wte` itself when tied, else
   * the LM head's weight. Its [d, V] transpose, which WASM's products and the editing code want,
   * is built on first use (model/unembedding.ts: unembedOf): a trace never needs it (its
   * vocabulary queries multiply by the rows directly), which saves tinyworld's CLI trace the
   * transpose and 51 MB of fresh memory, and GPT-2-XL-shaped models 321 MB of WASM heap.
   */
  head: tf.Tensor2D;
  unembedBias?: tf.Tensor1D;
  /** True when the checkpoint ties the LM head to wte (it is then not saved separately). */
  tied: boolean;
}
