/**
 * Forward-only native ops: the elementwise and row-wise work around the products, as single
 * onnxruntime ops reading and writing the WASM heap in place (vectorised MLAS code, one thread):
 *  - bias + gelu_new after the MLP's first product (com.microsoft FastGelu: y = 0.5·x'·(1 +
 *    tanh(√(2/π)(x' + 0.044715·x'³))), x' = x + bias);
 *  - x·W + b (MatMul + Add, fused by onnxruntime into one GEMM with the bias);
 *  - LayerNorm (opset 17 LayerNormalization over the last axis).
 *
 * On WASM these are many single-threaded elementwise kernels: in a GPT-2-small trace the GELU
 * alone was 16% of the time, bias adds ~7%, LayerNorm ~5% (CPU profile of the compute section's
 * trace). Only forward passes take this path (traces, predictions, specificity checks): under a
 * gradient tape (v*, FT) the tfjs ops run as before, so autograd needs no gradients for these.
 * One thread: onnxruntime's pool (spin-waiting off) made them slower (FastGelu on 1200 × 3072:
 * 5.0 ms on one thread, 10.4 ms on two; the WASM ops 25 ms). Products keep two (matmul-kernel.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import { heapView, nativeMatMulInstalled, type WasmBackendLike } from './matmul-kernel.js';
import { NativeGraph, ortTensor, threadsForFlops } from './ort.js';
import { gradientTapeOn } from '../../util/scope.js';

type Args = { inputs: tf.NamedTensorInfoMap; backend: unknown; attrs?: tf.NamedAttrMap };

const graphs = new Map<string, NativeGraph>();
function cached(key: string, make: () => NativeGraph): NativeGraph {
  let g = graphs.get(key);
  if (!g) graphs.set(key, (g = make()));
  return g;
}

function float32(what: string, ...ts: tf.TensorInfo[]): void {
  for (const t of ts) if (t.dtype !== 'float32') throw new Error(`${what}: ${t.dtype} input [${t.shape.join(', ')}]; float32 expected`);
}

/** Runs a graph with inputs named as given and one output `y` of `shape`, in place. */
function runInPlace(backend: WasmBackendLike, g: NativeGraph, inputs: Record<string, [tf.TensorInfo, number[]]>, shape: number[], threads = 1): tf.TensorInfo {
  const out = backend.makeOutput(shape, 'float32');
  // Views after the output's allocation: a heap growth detaches earlier ones.
  const y = heapView(backend, out);
  const feeds: Record<string, ReturnType<typeof ortTensor>> = {};
  for (const [name, [t, dims]] of Object.entries(inputs)) feeds[name] = ortTensor('float32', heapView(backend, t), dims);
  g.runInPlace(feeds, { y: ortTensor('float32', y, [tf.util.sizeFromShape(shape) / shape[shape.length - 1], shape[shape.length - 1]]) }, threads);
  return out;
}

const row2 = (name: string) => ({ name, type: 'float32' as const, shape: ['n', 'f'] });
const vec = (name: string) => ({ name, type: 'float32' as const, shape: ['f'] });

function biasGeluKernel({ inputs, backend }: Args): tf.TensorInfo {
  const { x, b } = inputs as { x: tf.TensorInfo; b: tf.TensorInfo };
  float32('bias GELU', x, b);
  const f = x.shape[x.shape.length - 1];
  if (b.shape.length !== 1 || b.shape[0] !== f) throw new Error(`bias GELU: x [${x.shape.join(', ')}] and bias [${b.shape.join(', ')}] do not match`);
  const g = cached('gelu', () => new NativeGraph([{ op: 'FastGelu', domain: 'com.microsoft', inputs: ['x', 'b'], outputs: ['y'] }], [row2('x'), vec('b')], [row2('y')]));
  const n = tf.util.sizeFromShape(x.shape) / f;
  return runInPlace(backend as WasmBackendLike, g, { x: [x, [n, f]], b: [b, [f]] }, x.shape);
}

function linearKernel({ inputs, backend }: Args): tf.TensorInfo {
  const { x, w, b } = inputs as { x: tf.TensorInfo; w: tf.TensorInfo; b: tf.TensorInfo };
  float32('linear', x, w, b);
  const [n, k] = x.shape;
  const [k2, f] = w.shape;
  if (x.shape.length !== 2 || w.shape.length !== 2 || k !== k2 || b.shape.length !== 1 || b.shape[0] !== f) {
    throw new Error(`linear: x [${x.shape.join(', ')}], W [${w.shape.join(', ')}], b [${b.shape.join(', ')}] do not match`);
  }
  const g = cached('linear', () =>
    new NativeGraph(
      [
        { op: 'MatMul', inputs: ['x', 'w'], outputs: ['z'] },
        { op: 'Add', inputs: ['z', 'b'], outputs: ['y'] },
      ],
      [{ name: 'x', type: 'float32', shape: ['n', 'k'] }, { name: 'w', type: 'float32', shape: ['k', 'f'] }, vec('b')],
      [row2('y')],
    ),
  );
  // The product's threads as for any product (matmul-kernel.ts: two from 4 MFLOP).
  const threads = threadsForFlops(2 * n * k * f);
  return runInPlace(backend as WasmBackendLike, g, { x: [x, [n, k]], w: [w, [k, f]], b: [b, [f]] }, [n, f], threads);
}

function layerNormKernel({ inputs, backend, attrs }: Args): tf.TensorInfo {
  const { x, g: scale, b } = inputs as { x: tf.TensorInfo; g: tf.TensorInfo; b: tf.TensorInfo };
  float32('LayerNorm', x, scale, b);
  const eps = (attrs as { eps: number }).eps;
  const f = x.shape[x.shape.length - 1];
  if (scale.shape[0] !== f || b.shape[0] !== f) throw new Error(`LayerNorm: x [${x.shape.join(', ')}] and weights [${scale.shape[0]}], [${b.shape[0]}] do not match`);
  const g = cached(`ln:${eps}`, () =>
    new NativeGraph([{ op: 'LayerNormalization', inputs: ['x', 'g', 'b'], outputs: ['y'], attrs: { axis: -1, epsilon: { float: eps } } }], [row2('x'), vec('g'), vec('b')], [row2('y')]),
  );
  const n = tf.util.sizeFromShape(x.shape) / f;
  return runInPlace(backend as WasmBackendLike, g, { x: [x, [n, f]], g: [scale, [f]], b: [b, [f]] }, x.shape);
}

/** FACTLENS_NATIVE_FORWARD_OPS=0 turns these off (the products stay native), for comparisons. */
const forwardOpsEnabled = process.env.FACTLENS_NATIVE_FORWARD_OPS !== '0';

const KERNELS: Record<string, (a: Args) => tf.TensorInfo> = {
  FactLensBiasGeluNew: biasGeluKernel,
  FactLensLinear: linearKernel,
  FactLensLayerNorm: layerNormKernel,
};

/** The kernel's result where the native backend is active and no gradient is recorded; else null. */
function runForwardOnly(name: keyof typeof KERNELS & string, inputs: tf.NamedTensorMap, attrs: tf.NamedAttrMap = {}): tf.Tensor | null {
  if (!nativeMatMulInstalled() || tf.getBackend() !== 'wasm' || !forwardOpsEnabled) return null;
  if (gradientTapeOn()) return null;
  if (!tf.getKernel(name, 'wasm')) tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: KERNELS[name] as unknown as tf.KernelFunc });
  return tf.engine().runKernel(name, inputs, attrs) as tf.Tensor;
}

/** gelu_new(x + b), or null: run the tfjs ops. */
export function nativeBiasGeluNew(x: tf.Tensor, b: tf.Tensor1D): tf.Tensor | null {
  return runForwardOnly('FactLensBiasGeluNew', { x, b });
}

/** x·W + b for x [n, k], W [k, f] (a heap or host weight), or null. */
export function nativeLinear(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D): tf.Tensor2D | null {
  return runForwardOnly('FactLensLinear', { x, w, b }) as tf.Tensor2D | null;
}

/** LayerNorm over the last axis with scale g and shift b, or null. */
export function nativeLayerNorm(x: tf.Tensor, g: tf.Tensor1D, b: tf.Tensor1D, eps: number): tf.Tensor | null {
  return runForwardOnly('FactLensLayerNorm', { x, g, b }, { eps });
}
