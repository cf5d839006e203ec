/**
 * tf.tidy for results that are not plain TensorContainers (objects holding KV pairs, maps of
 * reads, numbers): every tensor reachable from the result survives, everything else created
 * inside is freed. The caller disposes what it keeps.
 */
import * as tf from '@tensorflow/tfjs-core';

function collect(x: unknown, out: Set<tf.Tensor>, seen: Set<unknown>): void {
  if (x === null || typeof x !== 'object' || seen.has(x)) return;
  seen.add(x);
  if (x instanceof tf.Tensor) {
    out.add(x);
    return;
  }
  if (x instanceof Map) {
    for (const v of x.values()) collect(v, out, seen);
    return;
  }
  if (ArrayBuffer.isView(x)) return;
  for (const v of Object.values(x as Record<string, unknown>)) collect(v, out, seen);
}

export function scoped<T>(fn: () => T): T {
  tf.engine().startScope();
  let result: T | undefined;
  try {
    result = fn();
    const keep = new Set<tf.Tensor>();
    collect(result, keep, new Set());
    for (const t of keep) tf.keep(t);
    return result;
  } finally {
    tf.engine().endScope();
  }
}

/** Disposes every tensor reachable from x. */
export function disposeAll(x: unknown): void {
  const s = new Set<tf.Tensor>();
  collect(x, s, new Set());
  for (const t of s) if (!t.isDisposed) t.dispose();
}

/**
 * Runs fn inside a tidy and reads the tensor it returns after the tidy has ended. Never read
 * with dataSync()/arraySync() inside tf.tidy and return the array: tidy walks a returned
 * container with for…in, which visits a typed array (or nested number arrays) element by
 * element; 1.93M floats cost ~3 s in a trace (docs/tfjs-backends.md, issue #12).
 */
export function tidyData(fn: () => tf.Tensor): Float32Array {
  const t = tf.tidy(fn);
  try {
    return t.dataSync() as Float32Array;
  } finally {
    t.dispose();
  }
}

/**
 * Whether tfjs is recording a gradient tape now (inside tf.grad, variableGrads, customGrad):
 * forward-only fast paths (native kernels, heap copies) step aside then, since they have no
 * gradient. tfjs-core exposes this only on its engine's untyped surface.
 */
export function gradientTapeOn(): boolean {
  return (tf.engine() as unknown as { isTapeOn(): boolean }).isTapeOn();
}
