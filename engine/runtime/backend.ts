/**
 * Backend selection. Order when nothing is forced: tfjs-node-gpu (CUDA) → tfjs-node → native
 * (WASM with onnxruntime's CPU products, engine/runtime/native) → WASM (SIMD) → plain JS. The native packages are optional dependencies whose install scripts
 * download libtensorflow, which fails on machines without that host; so they are loaded with
 * a guarded require and skipped when absent or broken. The backend in use is always reported.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
// The Node build of tfjs-core registers no gradients (the umbrella @tensorflow/tfjs does);
// editing needs them.
import '@tensorflow/tfjs-core/dist/register_all_gradients';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { FactLensError } from '../errors.js';
import { loadOrt, ortVersion } from './native/ort.js';
import { installNativeMatMul, removeNativeMatMul } from './native/matmul-kernel.js';
import { registerDecodeMemory } from '../model/half-simd.js';
import { installWasmSharing } from './wasm-sharing.js';
import { registerWebgpuBackend, webgpuAdapter, webgpuProbe } from './webgpu.js';

import { BACKEND_NAMES, type BackendName, type BackendStatus } from '../protocol/model.js';

export type { BackendName, BackendStatus };
export const BACKEND_ORDER: readonly BackendName[] = BACKEND_NAMES;

/** The tfjs registry name each of our backends registers under. */
const TFJS_NAME: Record<BackendName, string> = {
  'node-gpu': 'tensorflow',
  node: 'tensorflow',
  webgpu: 'webgpu',
  // The WASM backend with its matrix products swapped for onnxruntime's (a kernel override).
  native: 'wasm',
  wasm: 'wasm',
  cpu: 'cpu',
};

const NATIVE_PACKAGE: Partial<Record<BackendName, string>> = {
  'node-gpu': '@tensorflow/tfjs-node-gpu',
  node: '@tensorflow/tfjs-node',
};

const requireHere = createRequire(__filename);

let active: BackendName | null = null;

/** Where the .wasm binaries are: next to a bundle (dist/) or in node_modules. */
function wasmDir(): string {
  const candidates: string[] = [];
  try {
    candidates.push(path.dirname(requireHere.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm')));
  } catch {
    /* bundled: fall through to the copy beside the bundle */
  }
  candidates.push(path.join(__dirname, 'wasm'), __dirname);
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, 'tfjs-backend-wasm-simd.wasm'))) return dir + path.sep;
  }
  throw new FactLensError('BACKEND_UNAVAILABLE', `WASM binaries not found (looked in ${candidates.join(', ')})`, {
    backend: 'wasm',
  });
}

/**
 * Whether a native package's addon was built: its install script downloads libtensorflow and
 * builds lib/napi-v*\/tfjs_binding.node. Requiring a package without it pulls in a second
 * tfjs copy that re-registers every kernel (hundreds of warnings) before failing, so check first.
 */
function nativeBindingMissing(pkg: string): string | null {
  let dir: string;
  try {
    dir = path.dirname(requireHere.resolve(`${pkg}/package.json`));
  } catch {
    return `${pkg} is not installed`;
  }
  const lib = path.join(dir, 'lib');
  const found =
    fs.existsSync(lib) &&
    fs.readdirSync(lib).some((d) => d.startsWith('napi-v') && fs.existsSync(path.join(lib, d, 'tfjs_binding.node')));
  return found
    ? null
    : `${pkg} is installed but its native addon was not built (its install script downloads libtensorflow; run \`npm rebuild ${pkg}\` where that download works)`;
}

function tryNative(name: BackendName): string | null {
  const pkg = NATIVE_PACKAGE[name];
  if (!pkg) return null;
  const missing = nativeBindingMissing(pkg);
  if (missing) return missing;
  try {
    // Loading the package registers the 'tensorflow' backend as a side effect.
    requireHere(pkg);
    return null;
  } catch (e) {
    return `${pkg} did not load: ${(e as Error).message.split('\n')[0]}`;
  }
}

/** Probes which backends can run here, without switching to any of them. */
export function probeBackends(): BackendStatus[] {
  return BACKEND_ORDER.map((name): BackendStatus => {
    if (name === 'cpu') return { name, available: true };
    if (name === 'webgpu') return { name, ...webgpuProbe() };
    if (name === 'native') {
      const err = loadOrt();
      if (err) return { name, available: false, reason: `${err}; products run on WASM` };
      try {
        wasmDir();
      } catch (e) {
        return { name, available: false, reason: (e as Error).message };
      }
      return { name, available: true, reason: `onnxruntime-node ${ortVersion()} CPU products in the WASM backend` };
    }
    if (name === 'wasm') {
      try {
        wasmDir();
        return { name, available: true };
      } catch (e) {
        return { name, available: false, reason: (e as Error).message };
      }
    }
    const missing = nativeBindingMissing(NATIVE_PACKAGE[name]!);
    if (missing) return { name, available: false, reason: missing };
    return { name, available: true, reason: 'installed; loads on first use' };
  });
}

/**
 * The Emscripten glue of the WASM backend installs process-wide 'uncaughtException' and
 * 'unhandledRejection' handlers that rethrow, which makes Node print the whole minified glue
 * file with any later error. The engine handles its own errors, so those handlers are removed.
 */
function withoutGlueHandlers<T>(fn: () => Promise<T>): Promise<T> {
  const events = ['uncaughtException', 'unhandledRejection'];
  const emitter = process as unknown as NodeJS.EventEmitter;
  const before = new Map(events.map((e) => [e, new Set(emitter.listeners(e))]));
  return fn().finally(() => {
    for (const e of events) {
      for (const l of emitter.listeners(e)) {
        if (!before.get(e)!.has(l)) emitter.removeListener(e, l as (...args: unknown[]) => void);
      }
    }
  });
}

async function activate(name: BackendName): Promise<void> {
  return withoutGlueHandlers(() => activateInner(name));
}

async function activateInner(name: BackendName): Promise<void> {
  if (name === 'webgpu') {
    const found = await webgpuAdapter();
    if ('reason' in found) throw new FactLensError('BACKEND_UNAVAILABLE', found.reason, { backend: name });
    await registerWebgpuBackend();
  } else if (name === 'native') {
    const err = loadOrt();
    if (err) throw new FactLensError('BACKEND_UNAVAILABLE', err, { backend: name });
    setWasmPaths(wasmDir());
  } else if (name === 'wasm') {
    setWasmPaths(wasmDir());
  } else if (name === 'node' || name === 'node-gpu') {
    const err = tryNative(name);
    if (err) throw new FactLensError('BACKEND_UNAVAILABLE', err, { backend: name });
  }
  const ok = await tf.setBackend(TFJS_NAME[name]);
  if (!ok || tf.getBackend() !== TFJS_NAME[name]) {
    throw new FactLensError('BACKEND_UNAVAILABLE', `backend '${name}' failed to initialise`, { backend: name });
  }
  await tf.ready();
  // Both run on tfjs's WASM backend: clones and no-op casts share data (wasm-sharing.ts).
  if (name === 'native' || name === 'wasm') installWasmSharing();
  // 'native' and 'wasm' share tfjs's WASM backend; they differ in the BatchMatMul kernel.
  if (name === 'native') installNativeMatMul();
  else if (name === 'wasm') removeNativeMatMul();
  // 16-bit checkpoints decode in place into tensors of tfjs's WASM heap (model/half-simd.ts).
  if (name === 'native' || name === 'wasm') registerDecodeMemory((tf.backend() as unknown as { wasm?: { asm?: { memory?: unknown } } }).wasm?.asm?.memory);
}

/**
 * Selects a backend: the forced one (an error if it cannot run) or the first of
 * BACKEND_ORDER that initialises. Returns the name in use.
 */
export async function selectBackend(forced?: string): Promise<BackendName> {
  if (forced) {
    if (!(BACKEND_ORDER as readonly string[]).includes(forced)) {
      throw new FactLensError(
        'INVALID_ARGUMENT',
        `unknown backend '${forced}'; choose one of ${BACKEND_ORDER.join(', ')}`,
        { field: 'backend' },
      );
    }
    if (active === forced) return active;
    await activate(forced as BackendName);
    active = forced as BackendName;
    return active;
  }
  if (active) return active;
  const failures: string[] = [];
  for (const name of BACKEND_ORDER) {
    try {
      await activate(name);
      active = name;
      return name;
    } catch (e) {
      failures.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new FactLensError('BACKEND_UNAVAILABLE', `no backend could start:\n${failures.join('\n')}`);
}

export function activeBackend(): BackendName | null {
  return active;
}

/** The WASM heap is capped at 4 GB (tfjs-backend-wasm's getHeapMax). */
export const WASM_HEAP_BYTES = 4 * 1024 ** 3;

/**
 * Bytes a model of `parameters` float32 parameters needs on a backend, roughly: the weights,
 * XNNPACK's packed copy of every matrix on WASM, plus the unembedding's [d, V] transpose (built
 * on first use, model/unembedding.ts: a trace never makes it, an edit does).
 */
export function estimateModelBytes(parameters: number, backend: BackendName, unembedParams: number): number {
  const weights = parameters * 4 + unembedParams * 4;
  // 'native' keeps the weights in the same heap but its products never make XNNPACK's copies.
  return backend === 'wasm' ? weights * 2 : weights;
}

/** Throws MODEL_TOO_LARGE before loading a model that cannot fit the backend. */
export function checkFits(parameters: number, unembedParams: number, backend: BackendName, modelDir: string): void {
  if (backend !== 'wasm' && backend !== 'native') return;
  const need = estimateModelBytes(parameters, backend, unembedParams);
  if (need > WASM_HEAP_BYTES * 0.9) {
    throw new FactLensError(
      'MODEL_TOO_LARGE',
      `the model in ${modelDir} has ${(parameters / 1e6).toFixed(0)}M parameters and needs about ` +
        `${(need / 1024 ** 3).toFixed(1)} GB on the WASM backend, whose heap is capped at 4 GB. ` +
        `Run it on 'node-gpu' or 'node' (install @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node), ` +
        `or on 'cpu' (slow, but limited only by system memory).`,
      { file: modelDir, backend, bytesNeeded: need },
    );
  }
}
