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
