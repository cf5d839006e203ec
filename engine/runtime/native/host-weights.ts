/**
 * Weight matrices outside the 4 GB WASM heap, for models that do not fit it (GPT-2-XL: 6.2 GB
 * of float32 weights). On the 'native' backend a weight matrix is only ever an operand of a
 * product, which onnxruntime reads from any memory; so such a matrix can be a tfjs tensor whose
 * data stays a JS Float32Array (host memory, limited by RAM), registered with the WASM backend
 * without a heap allocation. The native product kernel feeds that array to onnxruntime;
 * dataSync()/data() return it; every other WASM kernel would read the wrong memory, so:
 *  - only products may take a host weight (the fused q/k/v split is done on the host, see
 *    decoder-forward.ts splitQkv);
 *  - the override cannot be removed while host weights live (selecting 'wasm' is refused);
 *  - editing refuses models with host weights (edits write weights through WASM kernels).
 * Embeddings, norms and biases (under 10% of GPT-2-XL) stay in the heap.
 */
import * as tf from '@tensorflow/tfjs-core';

interface WasmBackendInternals {
  dataIdMap: {
    get(id: object): { memoryOffset: number; refCount?: number } | undefined;
    set(id: object, v: { id: number; memoryOffset: number; shape: number[]; dtype: tf.DataType; refCount: number }): void;
    delete(id: object): void;
  };
  readSync(dataId: object): ArrayBufferView;
  read(dataId: object): Promise<ArrayBufferView>;
  disposeData(dataId: object, force?: boolean): boolean;
}

const host = new WeakMap<object, Float32Array>();
let live = 0;
const patched = new WeakSet<object>();

/** The host array of a host weight's data id, or undefined for an ordinary tensor. */
export function hostData(dataId: object): Float32Array | undefined {
  return host.get(dataId);
}

export function hostWeightsLive(): number {
  return live;
}

/** Reads and disposal of host weights go to the host array, not to the heap. */
function patch(backend: WasmBackendInternals): void {
  if (patched.has(backend)) return;
  patched.add(backend);
  const readSync = backend.readSync.bind(backend);
  const read = backend.read.bind(backend);
  const disposeData = backend.disposeData.bind(backend);
  backend.readSync = (id) => host.get(id) ?? readSync(id);
  backend.read = async (id) => host.get(id) ?? read(id);
  backend.disposeData = (id, force) => {
    if (!host.has(id)) return disposeData(id, force);
    // Reshapes share the data id (the WASM backend counts them); free on the last one.
    const entry = backend.dataIdMap.get(id) as { refCount: number } | undefined;
    if (entry && --entry.refCount > 0 && !force) return false;
    host.delete(id);
    backend.dataIdMap.delete(id);
    live--;
    return true;
  };
}

/** A [rows, cols] tensor on the WASM backend whose data is `data` itself (not copied into the heap). */
export function hostWeight(data: Float32Array, rows: number, cols: number): tf.Tensor2D {
  if (tf.getBackend() !== 'wasm') throw new Error('host weights need the native backend');
  if (data.length !== rows * cols) throw new Error(`host weight: ${data.length} values for [${rows}, ${cols}]`);
  const backend = tf.backend() as unknown as WasmBackendInternals;
  patch(backend);
  const dataId = {};
  // id −1: never registered with the WASM module, whose kernels therefore never see it.
  backend.dataIdMap.set(dataId, { id: -1, memoryOffset: 0, shape: [rows, cols], dtype: 'float32', refCount: 1 });
  host.set(dataId, data);
  live++;
  return tf.engine().makeTensorFromDataId(dataId, [rows, cols], 'float32', tf.backend()) as tf.Tensor2D;
}

/** Whether t's data is a host array (a host weight). */
export function isHostWeight(t: tf.Tensor): boolean {
  return host.has(t.dataId);
}
