/** Causal tracing: the wire types (engine/protocol/trace.ts) and the window rules. */
export { TRACE_KINDS } from '../protocol/trace.js';
export type { TraceAnswer, TraceKind, TraceOptions, TraceQuality, TraceResult } from '../protocol/trace.js';

/**
 * Default window of restored MLP/attention layers: the paper restores 10 of GPT-2 XL's 48
 * layers; we keep that fraction of depth, rounded, and at least 2.
 */
export function windowForDepth(nLayer: number): number {
  return Math.max(2, Math.round((10 * nLayer) / 48));
}

/** Layers restored around centre l: [max(0, l − ⌊w/2⌋), min(L, l − ⌊w/2⌋ + w)) (reference code). */
export function windowLayers(l: number, window: number, nLayer: number): [number, number] {
  const lo = Math.max(0, l - Math.floor(window / 2));
  const hi = Math.min(nLayer, l - Math.floor(window / 2) + window);
  return [lo, hi];
}
