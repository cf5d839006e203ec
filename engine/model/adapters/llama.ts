/**
 * Llama (LlamaForCausalLM / LlamaModel) and Qwen2 (Qwen2ForCausalLM): RMSNorm, SwiGLU MLP
 * (down(silu(gate(x)) · up(x)): canonical mlpGate = gate_proj, mlpIn = up_proj), rotary
 * positions with rotate_half pairing, grouped-query attention (num_key_value_heads), separate
 * q/k/v projections fused into the canonical qkv. Qwen2 adds q/k/v biases and usually ties
 * the head to the embedding. Keys with or without the `model.` prefix.
 *
 * Also holds the host-side helpers the other rotary adapters (GPT-J, GPT-NeoX) share.
 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../../errors.js';
import type { Checkpoint, HostTensor } from '../types.js';
import type { Activation, BlockWeights, DecoderConfig, DecoderWeights, LinearWeights } from '../decoder.js';
import type { ArchitectureAdapter } from './types.js';
import { configNumber, readChecked, toTensor1D, toTensor2D, transposeHost } from './read.js';

// ---------------------------------------------------------------------------------------------
// Shared helpers (GPT-J, GPT-NeoX, Llama, Qwen2)

export type Exported = Array<{ name: string; shape: number[]; data: Float32Array }>;

/** Rotary settings from config.json, old and new transformers spellings. */
export function ropeConfig(
  config: Record<string, unknown>,
  file: string,
  defaults: { partial?: number } = {},
): { base: number; partial: number } {
  const params = (config['rope_parameters'] ?? config['rope_scaling']) as Record<string, unknown> | null | undefined;
  const p = params && typeof params === 'object' ? params : {};
  const type = p['rope_type'] ?? p['type'] ?? 'default';
  if (type !== 'default') {
    throw new FactLensError(
      'BAD_CONFIG',
      `${file}: rope type '${String(type)}' (scaled rotary positions) is not supported; only the default rotary embedding is`,
      { file, field: config['rope_parameters'] !== undefined ? 'rope_parameters' : 'rope_scaling' },
    );
  }
  const num = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
  const base = num(p['rope_theta']) ?? num(config['rope_theta']) ?? num(config['rotary_emb_base']) ?? 10000;
  const partial =
    num(p['partial_rotary_factor']) ?? num(config['partial_rotary_factor']) ?? num(config['rotary_pct']) ?? defaults.partial ?? 1;
  return { base, partial };
}

/** Checks a rotary width: even and within the head. */
export function checkRotaryDims(dims: number, headDim: number, file: string, field: string): number {
  if (!Number.isInteger(dims) || dims <= 0 || dims > headDim || dims % 2 !== 0) {
    throw new FactLensError('BAD_CONFIG', `${file}: rotary width ${dims} must be an even number in 1..${headDim} (head size)`, {
      file,
      field,
    });
  }
  return dims;
}

export function eosOf(config: Record<string, unknown>): number | null {
  const eos = config['eos_token_id'];
  if (typeof eos === 'number') return eos;
  if (Array.isArray(eos) && typeof eos[0] === 'number') return eos[0];
  return null;
}

export function activationOf(config: Record<string, unknown>, key: string, file: string, modelType: string): Activation {
  const act = config[key];
  switch (act) {
    case 'gelu':
      return 'gelu';
    // Both are the tanh approximation (gelu_fast is the same formula, factored).
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return 'gelu_new';
    case 'relu':
      return 'relu';
    case 'silu':
    case 'swish':
      return 'silu';
    default:
      throw new FactLensError('BAD_CONFIG', `${file}: ${key} '${String(act)}' is not supported for ${modelType}`, { file, field: key });
  }
}

/** Stacks row-major [r_i, c] host matrices vertically. */
export function stackRows(parts: HostTensor[]): HostTensor {
  const c = parts[0].shape[1];
  const rows = parts.reduce((a, p) => a + p.shape[0], 0);
  const data = new Float32Array(rows * c);
  let off = 0;
  for (const p of parts) {
    data.set(p.data, off);
    off += p.data.length;
  }
  return { shape: [rows, c], data };
}

/** Splits a row-major host matrix into consecutive row blocks of the given heights. */
export function splitRows(t: HostTensor, heights: number[]): HostTensor[] {
  const c = t.shape[1];
  const out: HostTensor[] = [];
  let row = 0;
  for (const hgt of heights) {
    out.push({ shape: [hgt, c], data: t.data.slice(row * c, (row + hgt) * c) });
    row += hgt;
  }
  return out;
}

/** Concatenates host vectors. */
export function concatVec(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** A canonical [in, out] linear from an nn.Linear [out, in] checkpoint weight. */
export function linearFromTorch(w: HostTensor, b?: HostTensor): LinearWeights {
  const lin: LinearWeights = { w: toTensor2D(transposeHost(w)) };
  if (b) lin.b = toTensor1D(b);
  return lin;
}

export function hostOfTensor(t: tf.Tensor): HostTensor {
  return { shape: t.shape.slice(), data: t.dataSync() as Float32Array };
}

/** Collects exported tensors: `add` copies a canonical tensor as is, `addT` writes a canonical [in, out] matrix as nn.Linear [out, in]. */
export function exporter() {
  const out: Exported = [];
  const addHost = (name: string, t: HostTensor) => {
    out.push({ name, shape: t.shape.slice(), data: t.data });
  };
  return {
    out,
    addHost,
    add(name: string, t: tf.Tensor | undefined) {
      if (t) out.push({ name, shape: t.shape.slice(), data: (t.dataSync() as Float32Array).slice() });
    },
    addT(name: string, t: tf.Tensor2D | undefined) {
      if (t) addHost(name, transposeHost(hostOfTensor(t)));
    },
  };
}

/** The prefix under which `probe` is stored, among `prefixes`; an error naming the first otherwise. */
export function prefixOf(ckpt: Checkpoint, probe: string, prefixes: string[], arch: string): string {
  for (const p of prefixes) if (ckpt.has(`${p}${probe}`)) return p;
  throw new FactLensError(
    'MISSING_TENSOR',
    `no ${arch} token embedding (${prefixes.map((p) => `'${p}${probe}'`).join(' or ')}) in ${ckpt.dir}`,
    { file: ckpt.files[0], tensor: `${prefixes[0]}${probe}` },
  );
}

// ---------------------------------------------------------------------------------------------
// Llama / Qwen2

function makeLlamaAdapter(modelType: 'llama' | 'qwen2'): ArchitectureAdapter {
  return {
    modelTypes: [modelType],

    parseConfig(config, file): DecoderConfig {
      const d = configNumber(config, ['hidden_size'], file);
      const nHead = configNumber(config, ['num_attention_heads'], file);
      const nKvHead = configNumber(config, ['num_key_value_heads'], file, nHead);
      if (nKvHead <= 0 || nHead % nKvHead !== 0) {
        throw new FactLensError('BAD_CONFIG', `${file}: num_attention_heads ${nHead} is not a multiple of num_key_value_heads ${nKvHead}`, {
          file,
          field: 'num_key_value_heads',
        });
      }
      const headDimRaw = config['head_dim'];
      const headDim = typeof headDimRaw === 'number' ? headDimRaw : d / nHead;
      if (!Number.isInteger(headDim)) {
        throw new FactLensError('BAD_CONFIG', `${file}: hidden_size ${d} is not divisible by num_attention_heads ${nHead}`, {
          file,
          field: 'num_attention_heads',
        });
      }
      if (config['use_sliding_window'] === true) {
        throw new FactLensError('BAD_CONFIG', `${file}: sliding-window attention (use_sliding_window) is not supported`, {
          file,
          field: 'use_sliding_window',
        });
      }
      const rope = ropeConfig(config, file);
      return {
        modelType,
        nLayer: configNumber(config, ['num_hidden_layers'], file),
        dModel: d,
        nHead,
        nKvHead,
        headDim,
        dMlp: configNumber(config, ['intermediate_size'], file),
        vocabSize: configNumber(config, ['vocab_size'], file),
        nCtx: configNumber(config, ['max_position_embeddings'], file),
        norm: 'rmsnorm',
        normEps: configNumber(config, ['rms_norm_eps'], file, 1e-6),
        act: activationOf(config, 'hidden_act', file, modelType),
        gatedMlp: true,
        parallel: 'none',
        positional: {
          kind: 'rotary',
          dims: checkRotaryDims(Math.floor(headDim * rope.partial), headDim, file, 'partial_rotary_factor'),
          style: 'half',
          base: rope.base,
        },
        eosId: eosOf(config),
      };
    },

    loadWeights(ckpt, cfg): DecoderWeights {
      const p = prefixOf(ckpt, 'embed_tokens.weight', ['model.', ''], modelType);
      const { dModel: d, dMlp: f, nHead: h, nKvHead: hkv, headDim: dh } = cfg;
      const hostMat = (name: string, r: number, c: number) => readChecked(ckpt, name, [r, c]);
      const hostVec = (name: string, n: number) => readChecked(ckpt, name, [n]);
      const optVec = (name: string, n: number) => (ckpt.has(name) ? hostVec(name, n) : undefined);
      const torchLinear = (name: string, out: number, inp: number) =>
        linearFromTorch(hostMat(`${name}.weight`, out, inp), optVec(`${name}.bias`, out));
      const wte = toTensor2D(hostMat(`${p}embed_tokens.weight`, cfg.vocabSize, d));
      const blocks: BlockWeights[] = [];
      for (let l = 0; l < cfg.nLayer; l++) {
        const b = `${p}layers.${l}.`;
        const a = `${b}self_attn.`;
        const qw = hostMat(`${a}q_proj.weight`, h * dh, d);
        const kw = hostMat(`${a}k_proj.weight`, hkv * dh, d);
        const vw = hostMat(`${a}v_proj.weight`, hkv * dh, d);
        const qkv: LinearWeights = { w: toTensor2D(transposeHost(stackRows([qw, kw, vw]))) };
        const names = ['q', 'k', 'v'].map((x) => `${a}${x}_proj.bias`);
        if (names.some((n) => ckpt.has(n))) {
          // Biases come as a set (Qwen2, Llama attention_bias); a missing one is zero.
          const sizes = [h * dh, hkv * dh, hkv * dh];
          qkv.b = tf.tensor1d(concatVec(names.map((n, i) => optVec(n, sizes[i])?.data ?? new Float32Array(sizes[i]))));
        }
        blocks.push({
          ln1: { g: toTensor1D(hostVec(`${b}input_layernorm.weight`, d)) },
          ln2: { g: toTensor1D(hostVec(`${b}post_attention_layernorm.weight`, d)) },
          qkv,
          o: torchLinear(`${a}o_proj`, d, h * dh),
          mlpGate: torchLinear(`${b}mlp.gate_proj`, f, d),
          mlpIn: torchLinear(`${b}mlp.up_proj`, f, d),
          mlpOut: torchLinear(`${b}mlp.down_proj`, d, f),
        });
      }
      // An lm_head in the file wins (untied); without one the head is the embedding.
      const untied = ckpt.has('lm_head.weight');
      const unembed = untied
        ? toTensor2D(transposeHost(hostMat('lm_head.weight', cfg.vocabSize, d)))
        : tf.tidy(() => tf.transpose(wte) as tf.Tensor2D);
      return {
        wte,
        blocks,
        lnF: { g: toTensor1D(hostVec(`${p}norm.weight`, d)) },
        unembed,
        tied: !untied,
      };
    },

    exportTensors(w, cfg) {
      const e = exporter();
      const { nHead: h, nKvHead: hkv, headDim: dh } = cfg;
      e.add('model.embed_tokens.weight', w.wte);
      w.blocks.forEach((blk, l) => {
        const b = `model.layers.${l}.`;
        const a = `${b}self_attn.`;
        e.add(`${b}input_layernorm.weight`, blk.ln1.g);
        e.add(`${b}post_attention_layernorm.weight`, blk.ln2?.g);
        const [q, k, v] = splitRows(transposeHost(hostOfTensor(blk.qkv.w)), [h * dh, hkv * dh, hkv * dh]);
        e.addHost(`${a}q_proj.weight`, q);
        e.addHost(`${a}k_proj.weight`, k);
        e.addHost(`${a}v_proj.weight`, v);
        if (blk.qkv.b) {
          const bias = blk.qkv.b.dataSync() as Float32Array;
          e.addHost(`${a}q_proj.bias`, { shape: [h * dh], data: bias.slice(0, h * dh) });
          e.addHost(`${a}k_proj.bias`, { shape: [hkv * dh], data: bias.slice(h * dh, (h + hkv) * dh) });
          e.addHost(`${a}v_proj.bias`, { shape: [hkv * dh], data: bias.slice((h + hkv) * dh) });
        }
        e.addT(`${a}o_proj.weight`, blk.o.w);
        e.add(`${a}o_proj.bias`, blk.o.b);
        e.addT(`${b}mlp.gate_proj.weight`, blk.mlpGate?.w);
        e.add(`${b}mlp.gate_proj.bias`, blk.mlpGate?.b);
        e.addT(`${b}mlp.up_proj.weight`, blk.mlpIn.w);
        e.add(`${b}mlp.up_proj.bias`, blk.mlpIn.b);
        e.addT(`${b}mlp.down_proj.weight`, blk.mlpOut.w);
        e.add(`${b}mlp.down_proj.bias`, blk.mlpOut.b);
      });
      e.add('model.norm.weight', w.lnF.g);
      if (!w.tied) e.addT('lm_head.weight', w.unembed);
      return e.out;
    },
  };
}

export const llamaAdapter = makeLlamaAdapter('llama');
export const qwen2Adapter = makeLlamaAdapter('qwen2');
