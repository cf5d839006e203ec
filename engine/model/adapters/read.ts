/** Tensor-reading helpers shared by adapters: shape checks with errors naming the tensor. */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../../errors.js';
import type { Checkpoint, HostTensor } from '../types.js';
import { hostWeight } from '../../runtime/native/host-weights.js';
import { heapView, type WasmBackendLike } from '../../runtime/native/matmul-kernel.js';

/** Reads `name` and checks its shape (into `into` when given: see loadChecked). */
export function readChecked(ckpt: Checkpoint, name: string, shape: number[], into?: Float32Array): HostTensor {
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
  return ckpt.read(name, into);
}

/** A WASM-backend tensor's heap block (runtime/native/matmul-kernel.ts: heapView), or null on other backends. */
export function heapData(t: tf.TensorInfo): Float32Array | null {
  return tf.getBackend() === 'wasm' ? heapView(tf.backend() as unknown as WasmBackendLike, t) : null;
}

/**
 * A float32 tensor whose values `fill` writes. On the WASM backends (wasm, native) into the
 * tensor's own heap block, allocated first: loading a model this way makes no host copy of
 * each weight for the backend to copy again (on tinyworld that was 76 MB of fresh pages
 * faulted in twice, a third of the CLI's load time). `fill` must not allocate WASM memory:
 * a heap growth would detach its destination.
 */
export function filledTensor(shape: number[], fill: (dst: Float32Array) => void): tf.Tensor {
  if (tf.getBackend() === 'wasm') {
    const info = (tf.backend() as unknown as WasmBackendLike).makeOutput(shape, 'float32');
    const t = tf.engine().makeTensorFromTensorInfo(info);
    try {
      fill(heapData(info)!);
    } catch (e) {
      t.dispose();
      throw e;
    }
    return t;
  }
  const data = new Float32Array(tf.util.sizeFromShape(shape));
  fill(data);
  return tf.tensor(data, shape, 'float32');
}

/** Reads `name`, checked against `shape`, straight into a new tensor (filledTensor). */
export function loadChecked(ckpt: Checkpoint, name: string, shape: number[]): tf.Tensor {
  return filledTensor(shape, (dst) => void readChecked(ckpt, name, shape, dst));
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

/** loadChecked for a matrix that only ever enters products (host memory inside withHostMatrices). */
export function loadWeight(ckpt: Checkpoint, name: string, shape: [number, number]): tf.Tensor2D {
  return hostMatrices ? toWeightTensor2D(readChecked(ckpt, name, shape)) : (loadChecked(ckpt, name, shape) as tf.Tensor2D);
}

export function toTensor1D(t: HostTensor): tf.Tensor1D {
  return tf.tensor1d(t.data);
}

/** Transposes a row-major [r, c] host matrix to [c, r] (used for nn.Linear [out, in] layouts). */
export function transposeHost(t: HostTensor): HostTensor {
  const [r, c] = t.shape;
  const out = new Float32Array(r * c);
  transposeInto(t.data, r, c, out);
  return { shape: [c, r], data: out };
}

/** Tile edge of transposeInto: a 32 × 32 float tile (4 KB) of source and destination stays in L1. */
const TILE = 32;

/**
 * dst[j·r + i] = src[i·c + j] in square tiles: a row-by-row loop writes dst with a stride of r
 * floats, one cache line per element once r is large (tinyworld's [50,257, 256] embedding took
 * 66 ms that way, ~3× the tiled time).
 */
export function transposeInto(src: Float32Array, r: number, c: number, dst: Float32Array): void {
  for (let i0 = 0; i0 < r; i0 += TILE) {
    const i1 = Math.min(r, i0 + TILE);
    for (let j0 = 0; j0 < c; j0 += TILE) {
      const j1 = Math.min(c, j0 + TILE);
      for (let j = j0; j < j1; j++) {
        const out = j * r;
        for (let i = i0; i < i1; i++) dst[out + i] = src[i * c + j];
      }
    }
  }
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
