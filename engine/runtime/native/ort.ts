/**
 * onnxruntime-node's CPU kernels (MLAS), reached through its native binding directly: the
 * binding's `InferenceSession.run` is synchronous (the package's public API only wraps it in a
 * Promise), which a tfjs kernel needs, and it reads input views of the WASM heap in place and
 * writes into preallocated output views. Graphs are the few-node ONNX models of onnx-graph.ts,
 * one session per graph and thread count, built on first use and kept.
 *
 * The package is loaded with a guarded require: where it is missing or its library does not
 * load (platforms without a prebuilt binary, such as mac x64) the engine runs on plain WASM.
 */
import { createRequire } from 'node:module';
import { onnxModel, type GraphNode, type Initializer, type ValueInfo } from './onnx-graph.js';

/** The version pinned in package.json; onnxruntime's kernels and binding ABI change between releases. */
export const ORT_VERSION = '1.30.0';

type OrtTensorCtor = new (type: string, data: ArrayBufferView, dims: readonly number[]) => OrtTensor;
export interface OrtTensor {
  readonly data: ArrayBufferView;
  readonly dims: readonly number[];
  readonly type: string;
}
interface BindingSession {
  loadModel(buffer: ArrayBuffer, byteOffset: number, byteLength: number, options: object): void;
  endProfiling(): string;
  run(feeds: Record<string, OrtTensor>, fetches: Record<string, OrtTensor | null>, options: object): Record<string, OrtTensor>;
  dispose(): void;
}
interface Binding {
  InferenceSession: new () => BindingSession;
}

interface Loaded {
  binding: Binding;
  Tensor: OrtTensorCtor;
  version: string;
}

const requireHere = createRequire(__filename);
let loaded: Loaded | null = null;
let loadError: string | null = null;

/** Loads onnxruntime-node once; returns why it cannot run, or null. */
export function loadOrt(): string | null {
  if (loaded) return null;
  if (loadError) return loadError;
  // onnxruntime 1.30's Linux build records telemetry (session and device events) in
  // ~/.cache/Microsoft/DeveloperTools/.onnxruntime/onnxruntime.db and uploads it to Microsoft's
  // collector: the file grew by ~100 KB per CLI run here (no network to send it), and opening and
  // writing it cost ~25 ms of each 0.8 s run. The engine runs users' models on their machines and
  // says nothing of it, so it is off unless the user has set the variable themselves. It must be
  // set before the library initialises, which happens when the binding is loaded below.
  process.env.ORT_DISABLE_TELEMETRY ??= '1';
  try {
    const pkg = requireHere('onnxruntime-node/package.json') as { version: string };
    // Loading the package itself initialises the binding (log level, Tensor class) the same way
    // its public InferenceSession would.
    const ort = requireHere('onnxruntime-node') as { Tensor: OrtTensorCtor };
    const { binding, initOrt } = requireHere('onnxruntime-node/dist/binding') as { binding: Binding; initOrt: () => void };
    initOrt();
    loaded = { binding, Tensor: ort.Tensor, version: pkg.version };
    return null;
  } catch (e) {
    const first = (e as Error).message.split('\n')[0];
    loadError = (e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && /onnxruntime-node/.test(first)
      ? 'onnxruntime-node is not installed'
      : `onnxruntime-node did not load: ${first}`;
    return loadError;
  }
}

export function ortVersion(): string | null {
  return loaded?.version ?? null;
}

function ort(): Loaded {
  const err = loadOrt();
  if (err) throw new Error(err);
  return loaded!;
}

export function ortTensor(type: 'float32' | 'float16' | 'int64' | 'int32', data: ArrayBufferView, dims: readonly number[]): OrtTensor {
  const t = new (ort().Tensor)(type, data, dims);
  // Where the runtime has Float16Array (Node 24), onnxruntime-common wraps float16 data in one,
  // which this binding does not read (it sees 0 bytes): hand it the Uint16Array view as given.
  if (type === 'float16' && t.data !== data) Object.defineProperty(t, 'data', { value: data, configurable: true });
  return t;
}

/**
 * Threads for large products. Two by default: MLAS splits a GEMM across its intra-op pool, and
 * on this 2-core machine the second thread gives 1.4–2× on the engine's products (bench/RESULTS.md).
 * FACTLENS_NATIVE_THREADS overrides it (1 = no pool).
 */
export function nativeThreads(): number {
  const env = Number(process.env.FACTLENS_NATIVE_THREADS);
  return Number.isInteger(env) && env >= 1 ? env : 2;
}

/**
 * FACTLENS_ORT_PROFILE=<file prefix>: every session writes onnxruntime's per-node profile
 * (chrome-trace JSON) when the process exits, for finding where native time goes.
 */
const profilePrefix = process.env.FACTLENS_ORT_PROFILE || '';
const profiled = new Set<BindingSession>();
if (profilePrefix) process.on('exit', () => profiled.forEach(endProfile));

/**
 * Writes a session's profile (once). A session that is disposed writes its profile first: ending
 * a disposed one throws, which at exit used to stop every later session's profile from being
 * written (the trace's block graphs came out as empty files).
 */
function endProfile(s: BindingSession): void {
  if (!profiled.delete(s)) return;
  try {
    s.endProfiling();
  } catch (e) {
    process.stderr.write(`FACTLENS_ORT_PROFILE: a session's profile was not written: ${(e as Error).message}\n`);
  }
}

/**
 * Threads for a product (or a graph of products) of `flops`: the pool from 4 MFLOP, one thread
 * below, where waking the pool costs more than it saves (matmul-kernel.ts; bench/RESULTS.md).
 */
export function threadsForFlops(flops: number): number {
  return flops >= 1 << 22 ? nativeThreads() : 1;
}

export class NativeGraph {
  private sessions = new Map<number, BindingSession>();
  private bytes: Uint8Array | null;
  /**
   * `fixedThreads`: build the one session now and drop the serialised model (graphs that carry
   * their weights as initializers: the bytes are as large as the weights); every run uses it.
   */
  constructor(nodes: GraphNode[], inputs: ValueInfo[], readonly outputs: ValueInfo[], initializers: Initializer[] = [], private readonly fixedThreads?: number) {
    this.bytes = onnxModel(nodes, inputs, outputs, initializers);
    if (fixedThreads !== undefined) {
      this.session(fixedThreads);
      this.bytes = null;
    }
  }

  private session(threads: number): BindingSession {
    if (this.fixedThreads !== undefined) threads = this.fixedThreads;
    let s = this.sessions.get(threads);
    if (!s) {
      if (!this.bytes) throw new Error('native graph: disposed');
      s = new (ort().binding.InferenceSession)();
      s.loadModel(this.bytes.buffer as ArrayBuffer, this.bytes.byteOffset, this.bytes.byteLength, {
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        // Graphs holding weights: onnxruntime's arena would keep the packed weights in chunks
        // rounded up to powers of two (+716 MB for GPT-2-small's 340 MB of block weights, +546 MB
        // without it) and, measured, the plain malloc is no slower for their activations.
        ...(this.fixedThreads !== undefined ? { enableCpuMemArena: false } : {}),
        graphOptimizationLevel: 'all',
        ...(profilePrefix ? { enableProfiling: true, profileFilePrefix: profilePrefix } : {}),
        // Spin-waiting keeps the pool's threads busy between products, taking the core that
        // the JS thread (the rest of the forward pass) and other processes need.
        extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
      });
      this.sessions.set(threads, s);
      if (profilePrefix) profiled.add(s);
    }
    return s;
  }

  /** Runs synchronously; `into` gives preallocated outputs (views the results are written to). */
  run(feeds: Record<string, OrtTensor>, into: Record<string, OrtTensor | null>, threads = 1): Record<string, OrtTensor> {
    return this.session(threads).run(feeds, into, {});
  }

  /**
   * Runs synchronously, writing every output into the preallocated view `into` gives it.
   * onnxruntime writes such outputs in place; the binding (1.30) then also hands back a copy of
   * each in a fresh ArrayBuffer (test/native.test.ts checks both), which is dropped here unread:
   * copying it back, as this code once did, was a second pass over every output.
   */
  runInPlace(feeds: Record<string, OrtTensor>, into: Record<string, OrtTensor>, threads = 1): void {
    this.session(threads).run(feeds, into, {});
  }

  dispose(): void {
    for (const s of this.sessions.values()) {
      endProfile(s);
      s.dispose();
    }
    this.sessions.clear();
    this.bytes = null;
  }
}
