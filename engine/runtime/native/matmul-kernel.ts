/**
 * The 'native' backend: tfjs's WASM backend with its BatchMatMul kernel replaced by
 * onnxruntime's (MLAS) through a kernel override. Why an override and not a backend of our own:
 *  - every tensor stays a WASM tensor, so the ~170 other kernels, tf.grad/customGrad (ROME's
 *    v*, FT) and all engine code run unchanged, and the products read their inputs and write
 *    their outputs in the WASM heap in place (no copy in or out);
 *  - gradients of products are products too (tfjs's BatchMatMul gradient is two matMuls), so
 *    backward passes get the native kernel without any gradient code;
 *  - switching between 'native' and 'wasm' is re-registering one kernel, so tests and benchmarks
 *    compare both in one process.
 * A backend of our own would have to implement (or delegate tensor by tensor) every op the
 * engine uses and own memory management, for no gain in the products themselves.
 *
 * Tiny products stay on the WASM kernel: below ~0.25 MFLOP the call overhead (~10–20 µs)
 * exceeds the work.
 */
import * as tf from '@tensorflow/tfjs-core';
import { NativeGraph, ortTensor, threadsForFlops } from './ort.js';
import { hostData, hostWeightsLive } from './host-weights.js';

/** The parts of tfjs-backend-wasm's BackendWasm this kernel uses. */
export interface WasmBackendLike {
  wasm: { HEAPU8: Uint8Array };
  dataIdMap: { get(id: object): { memoryOffset: number } | undefined };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

const MIN_FLOPS = 1 << 18;

const graphs = new Map<string, NativeGraph>();

function dims(prefix: string, rank: number): string[] {
  return Array.from({ length: rank }, (_, i) => `${prefix}${i}`);
}

/** y = op(a)·op(b) with numpy batch broadcasting (as tfjs's BatchMatMul), any ranks ≥ 2. */
function productGraph(rankA: number, rankB: number, ta: boolean, tb: boolean): NativeGraph {
  const key = `${rankA}:${rankB}:${+ta}:${+tb}`;
  let g = graphs.get(key);
  if (!g) {
    const plain = !ta && !tb;
    g = new NativeGraph(
      [
        plain
          ? { op: 'MatMul', inputs: ['a', 'b'], outputs: ['y'] }
          : { op: 'FusedMatMul', domain: 'com.microsoft', inputs: ['a', 'b'], outputs: ['y'], attrs: { transA: +ta, transB: +tb, alpha: { float: 1 } } },
      ],
      [
        { name: 'a', type: 'float32', shape: dims('a', rankA) },
        { name: 'b', type: 'float32', shape: dims('b', rankB) },
      ],
      [{ name: 'y', type: 'float32', shape: dims('y', Math.max(rankA, rankB)) }],
    );
    graphs.set(key, g);
  }
  return g;
}

/**
 * A Float32Array view of a WASM tensor's data (valid until the heap next grows), or a host
 * weight's own array (host-weights.ts).
 */
export function heapView(backend: WasmBackendLike, t: tf.TensorInfo): Float32Array {
  const hosted = hostData(t.dataId);
  if (hosted) return hosted;
  const entry = backend.dataIdMap.get(t.dataId);
  if (!entry) throw new Error('native kernel: tensor data is not in the WASM heap');
  const heap = backend.wasm.HEAPU8;
  return new Float32Array(heap.buffer, heap.byteOffset + entry.memoryOffset, tf.util.sizeFromShape(t.shape));
}

/** Counters for tests and the benchmark's profile. */
export const nativeStats = { calls: 0, fallbacks: 0, flops: 0 };

let original: tf.KernelConfig | null = null;

function nativeBatchMatMul(args: { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap }): tf.TensorInfo {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const { transposeA, transposeB } = (args.attrs ?? {}) as { transposeA: boolean; transposeB: boolean };
  const backend = args.backend as WasmBackendLike;
  const ra = a.shape.length;
  const rb = b.shape.length;
  const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const k2 = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  const batchShape = tf.backend_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batch = tf.util.sizeFromShape(batchShape);
  const flops = 2 * batch * m * k * n;
  // A host weight has no heap data: its products always run here.
  const hosted = !!(hostData(a.dataId) || hostData(b.dataId));
  if (!hosted && (a.dtype !== 'float32' || b.dtype !== 'float32' || k !== k2 || flops < MIN_FLOPS)) {
    nativeStats.fallbacks++;
    return original!.kernelFunc(args as Parameters<tf.KernelFunc>[0]) as tf.TensorInfo;
  }
  const outShape = [...batchShape, m, n];
  const out = backend.makeOutput(outShape, 'float32');
  // Views after the output's allocation: a heap growth would have detached earlier ones.
  const y = heapView(backend, out);
  productGraph(ra, rb, transposeA, transposeB).runInPlace(
    { a: ortTensor('float32', heapView(backend, a), a.shape), b: ortTensor('float32', heapView(backend, b), b.shape) },
    { y: ortTensor('float32', y, outShape) },
    threadsForFlops(flops),
  );
  nativeStats.calls++;
  nativeStats.flops += flops;
  return out;
}

/** Routes the WASM backend's BatchMatMul through onnxruntime (idempotent). */
export function installNativeMatMul(): void {
  const current = tf.getKernel(tf.BatchMatMul, 'wasm');
  if (!current) throw new Error('the WASM backend registered no BatchMatMul kernel');
  if (current.kernelFunc === nativeBatchMatMul) return;
  original = current;
  tf.unregisterKernel(tf.BatchMatMul, 'wasm');
  tf.registerKernel({ ...current, kernelFunc: nativeBatchMatMul as unknown as tf.KernelFunc });
}

/** Restores the WASM backend's own BatchMatMul (idempotent). */
export function removeNativeMatMul(): void {
  if (hostWeightsLive() > 0) {
    throw new Error(`${hostWeightsLive()} weight matrices live outside the WASM heap; only the native backend can run them (dispose that model first)`);
  }
  const current = tf.getKernel(tf.BatchMatMul, 'wasm');
  if (!original || !current || current.kernelFunc !== (nativeBatchMatMul as unknown)) return;
  tf.unregisterKernel(tf.BatchMatMul, 'wasm');
  tf.registerKernel(original);
}

export function nativeMatMulInstalled(): boolean {
  return tf.getKernel(tf.BatchMatMul, 'wasm')?.kernelFunc === (nativeBatchMatMul as unknown);
}
