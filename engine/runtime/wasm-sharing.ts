/**
 * Identity and same-dtype Cast on the WASM backend without copying the data.
 *
 * tfjs's WASM backend implements both as a copy into a new heap block, while its Reshape (and
 * the CPU backend's Identity) share the input's data by reference count. Every tensor the
 * gradient tape saves for the backward pass goes through Identity (engine.clone), so a v*
 * step copied every activation it differentiates through: ~6,800 copies per warm ROME edit on
 * tinyworld, plus ~1,400 no-op casts from gradient functions. tfjs tensors are immutable and
 * no kernel writes into its inputs, so sharing is what the other backends already do. It also
 * keeps clones of host-resident weights (native/host-weights.ts) valid: their data is not in
 * the heap a copy would read from.
 */
import * as tf from '@tensorflow/tfjs-core';

interface SharingBackend {
  incRef(dataId: tf.DataId): void;
}

type KernelArgs = { inputs: { x: tf.TensorInfo }; backend: unknown; attrs?: { dtype?: tf.DataType } };

function share(x: tf.TensorInfo, backend: SharingBackend): tf.TensorInfo {
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

let originalIdentity: tf.KernelConfig | undefined;
let originalCast: tf.KernelConfig | undefined;

function sharedIdentity(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs;
  if (x.dtype === 'string') return (originalIdentity!.kernelFunc as unknown as (a: KernelArgs) => tf.TensorInfo)(args);
  return share(x, args.backend as SharingBackend);
}

function sharedCast(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs;
  if (x.dtype !== 'string' && args.attrs?.dtype === x.dtype) return share(x, args.backend as SharingBackend);
  return (originalCast!.kernelFunc as unknown as (a: KernelArgs) => tf.TensorInfo)(args);
}

function swap(name: string, fn: (a: KernelArgs) => tf.TensorInfo): tf.KernelConfig | undefined {
  const current = tf.getKernel(name, 'wasm');
  if (!current) return undefined;
  if (current.kernelFunc === (fn as unknown)) return undefined;
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({ ...current, kernelFunc: fn as unknown as tf.KernelFunc });
  return current;
}

/** Installs the sharing Identity and Cast for the WASM backend (idempotent). */
export function installWasmSharing(): void {
  originalIdentity = swap(tf.Identity, sharedIdentity) ?? originalIdentity;
  originalCast = swap(tf.Cast, sharedCast) ?? originalCast;
}

export function wasmSharingInstalled(): boolean {
  return tf.getKernel(tf.Identity, 'wasm')?.kernelFunc === (sharedIdentity as unknown);
}
