/** Tensor-reading helpers shared by adapters: shape checks with errors naming the tensor. */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../../errors.js';
import type { Checkpoint, HostTensor } from '../types.js';
import { hostWeight } from '../../runtime/native/host-weights.js';

/** Reads `name` (trying each prefix in turn) and checks its shape. */
export function readChecked(ckpt: Checkpoint, name: string, shape: number[]): HostTensor {
  if (!ckpt.has(name)) {
    throw new FactLensError('MISSING_TENSOR', `tensor '${name}' is missing from the checkpoint in ${ckpt.dir}`, {
      file: ckpt.files[0],
      tensor: name,
    });
  }
  const info = ckpt.info(name);
  if (info.shape.length !== shape.length || info.shape.some((s, i) => s !== shape[i])) {
    throw new FactLensError(
      'TENSOR_SHAPE',
      `tensor '${name}' in ${info.file} has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}] from config.json`,
      { file: info.file, tensor: name, shape: info.shape, expected: shape },
    );
  }
  return ckpt.read(name);
}

export function toTensor2D(t: HostTensor): tf.Tensor2D {
  return tf.tensor2d(t.data, [t.shape[0], t.shape[1]]);
}

let hostMatrices = false;

/**
 * Runs fn (an adapter's loadWeights) with its weight matrices kept in host memory, outside the
 * WASM heap (runtime/native/host-weights.ts): the loader does this on the native backend for a
 * model whose weights exceed the heap. Only products may use such a matrix.
 */
export function withHostMatrices<T>(fn: () => T): T {
  hostMatrices = true;
  try {
    return fn();
  } finally {
    hostMatrices = false;
  }
}

/** A weight matrix that only ever enters products: in host memory inside withHostMatrices. */
export function toWeightTensor2D(t: HostTensor): tf.Tensor2D {
  return hostMatrices ? hostWeight(t.data, t.shape[0], t.shape[1]) : toTensor2D(t);
}

export function toTensor1D(t: HostTensor): tf.Tensor1D {
  return tf.tensor1d(t.data);
}

/** Transposes a row-major [r, c] host matrix to [c, r] (used for nn.Linear [out, in] layouts). */
export function transposeHost(t: HostTensor): HostTensor {
  const [r, c] = t.shape;
  const out = new Float32Array(r * c);
  const src = t.data;
  for (let i = 0; i < r; i++) {
    const row = i * c;
    for (let j = 0; j < c; j++) out[j * r + i] = src[row + j];
  }
  return { shape: [c, r], data: out };
}

export async function hostOf(t: tf.Tensor): Promise<Float32Array> {
  return (await t.data()) as Float32Array;
}

/** Reads a required number from config.json, naming the field when it is absent. */
export function configNumber(config: Record<string, unknown>, keys: string[], file: string, fallback?: number): number {
  for (const k of keys) {
    const v = config[k];
    if (typeof v === 'number' && Number.isFinite(v)) return v;
  }
  if (fallback !== undefined) return fallback;
  throw new FactLensError('BAD_CONFIG', `${file}: missing numeric field '${keys[0]}'`, { file, field: keys[0] });
}
