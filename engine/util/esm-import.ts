/**
 * import() of an ESM-only package (webgpu, tfjs-backend-webgpu) from the CommonJS bundle.
 *
 * The CLI launcher runs the bundle from a V8 code cache (bin/code-cache.js). On Node 20, code
 * that V8 restored from cached data has lost import()'s loader callback: import() there throws
 * ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING, and the WebGPU backend would silently not start. So
 * the launcher lends an import() of its own under this symbol; it lives beside the bundle in
 * the same package and resolves packages the same way. Without it (the extension's engine,
 * tests run from source), the bundle's own import() is used.
 */
export const ESM_IMPORT_HOOK = Symbol.for('factlens.importEsm');

export function importEsm<T = unknown>(specifier: string): Promise<T> {
  const hook = (globalThis as Record<symbol, unknown>)[ESM_IMPORT_HOOK];
  if (typeof hook === 'function') return (hook as (s: string) => Promise<T>)(specifier);
  return import(specifier) as Promise<T>;
}
