/**
 * GPT-2's bias + gelu_new after the MLP's first product, as one onnxruntime op (com.microsoft
 * FastGelu: y = 0.5·x'·(1 + tanh(√(2/π)(x' + 0.044715·x'³))), x' = x + bias, vectorised MLAS
 * code) reading and writing the WASM heap in place.
 *
 * On WASM the same function is six elementwise kernels over rows × 4d floats plus the bias
 * add, single-threaded: 16% of a GPT-2-small trace's time (bench: the compute section's trace).
 * Only forward passes take this path (traces, predictions, specificity checks): under a
 * gradient tape (v*, FT) the tfjs ops run as before, so autograd needs no gradient for it.
 */
import * as tf from '@tensorflow/tfjs-core';
import { heapView, nativeMatMulInstalled, type WasmBackendLike } from './matmul-kernel.js';
import { NativeGraph, nativeThreads, ortTensor } from './ort.js';

const KERNEL = 'FactLensBiasGeluNew';
/** Elements at least this many use the intra-op pool. */
const POOL_ELEMENTS = 1 << 16;

let graph: NativeGraph | null = null;

function geluGraph(): NativeGraph {
  graph ??= new NativeGraph(
    [{ op: 'FastGelu', domain: 'com.microsoft', inputs: ['x', 'b'], outputs: ['y'] }],
    [
      { name: 'x', type: 'float32', shape: ['n', 'f'] },
      { name: 'b', type: 'float32', shape: ['f'] },
    ],
    [{ name: 'y', type: 'float32', shape: ['n', 'f'] }],
  );
  return graph;
}

function biasGeluKernel(args: { inputs: tf.NamedTensorInfoMap; backend: unknown }): tf.TensorInfo {
  const { x, b } = args.inputs as { x: tf.TensorInfo; b: tf.TensorInfo };
  const backend = args.backend as WasmBackendLike;
  const f = x.shape[x.shape.length - 1];
  if (b.shape.length !== 1 || b.shape[0] !== f || x.dtype !== 'float32' || b.dtype !== 'float32') {
    throw new Error(`bias GELU: x [${x.shape.join(', ')}] ${x.dtype} and bias [${b.shape.join(', ')}] ${b.dtype} do not match`);
  }
  const n = tf.util.sizeFromShape(x.shape) / f;
  const out = backend.makeOutput(x.shape, 'float32');
  const y = heapView(backend, out);
  const res = geluGraph().run(
    { x: ortTensor('float32', heapView(backend, x), [n, f]), b: ortTensor('float32', heapView(backend, b), [f]) },
    { y: ortTensor('float32', y, [n, f]) },
    n * f >= POOL_ELEMENTS ? nativeThreads() : 1,
  );
  const got = res.y.data as Float32Array;
  if (got.buffer !== y.buffer || got.byteOffset !== y.byteOffset) y.set(got);
  return out;
}

/**
 * gelu_new(x + b) through onnxruntime when the native backend is active and no gradient is
 * being recorded; null otherwise (the caller runs the tfjs ops).
 */
export function nativeBiasGeluNew(x: tf.Tensor, b: tf.Tensor1D): tf.Tensor | null {
  if (!nativeMatMulInstalled() || tf.getBackend() !== 'wasm') return null;
  if ((tf.engine() as unknown as { isTapeOn(): boolean }).isTapeOn()) return null;
  if (!tf.getKernel(KERNEL, 'wasm')) {
    tf.registerKernel({ kernelName: KERNEL, backendName: 'wasm', kernelFunc: biasGeluKernel as unknown as tf.KernelFunc });
  }
  return tf.engine().runKernel(KERNEL, { x, b }) as tf.Tensor;
}
