/**
 * Host-side helpers the torch-layout adapters (GPT-J, GPT-NeoX, Llama, Qwen2) share: rotary
 * and activation settings from config.json, [out, in] weights to the canonical [in, out],
 * row stacking/splitting for fused projections, the checkpoint key prefix, and export.
 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../../errors.js';
import type { Checkpoint, HostTensor } from '../types.js';
import type { Activation, LinearWeights } from '../decoder.js';
import { readChecked, toTensor1D, toTensor2D, transposeHost } from './read.js';


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


/** Shape-checked readers of one checkpoint, for an adapter's loadWeights. */
export function torchReaders(ckpt: Checkpoint) {
  const hostMat = (name: string, r: number, c: number) => readChecked(ckpt, name, [r, c]);
  const hostVec = (name: string, n: number) => readChecked(ckpt, name, [n]);
  const optVec = (name: string, n: number) => (ckpt.has(name) ? hostVec(name, n) : undefined);
  const vec = (name: string, n: number) => toTensor1D(hostVec(name, n));
  /** A torch Linear (`name.weight` [out, in], optional `name.bias`) as canonical weights. */
  const torchLinear = (name: string, out: number, inp: number) => linearFromTorch(hostMat(`${name}.weight`, out, inp), optVec(`${name}.bias`, out));
  return { hostMat, hostVec, optVec, vec, torchLinear };
}
