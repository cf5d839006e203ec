/**
 * float16 → float32 decoding with onnxruntime's Cast, for loading float16 checkpoints on the
 * native backend (model/safetensors.ts: setHalfDecoder). MLAS converts with the CPU's F16C
 * instructions where it has them: 1.3 ms per million values against 4.3 ms for the JS table
 * lookup (tinyworld's 19.2M float16 weights: ~25 vs ~80 ms of a CLI trace's model load). Same
 * values for every bit pattern but signalling NaNs, which come back as quiet NaNs (weights that
 * hold NaN are unusable either way).
 */
import { f16ToF32, type HalfDecoder } from '../../model/safetensors.js';
import { warn } from '../../util/warn.js';
import { NativeGraph, ortTensor } from './ort.js';

let graph: NativeGraph | null = null;
/** Set when onnxruntime refused a decode: the table does the rest (same values), said once. */
let broken = false;

/** The Cast itself; throws where onnxruntime refuses (tests call it to see the native path work). */
export function decodeHalfNative(src: Uint16Array, dst: Float32Array, dstOffset: number): void {
  graph ??= new NativeGraph(
    [{ op: 'Cast', inputs: ['x'], outputs: ['y'], attrs: { to: 1 } }],
    [{ name: 'x', type: 'float16', shape: ['n'] }],
    [{ name: 'y', type: 'float32', shape: ['n'] }],
  );
  const n = src.length;
  if (n === 0) return;
  const y = dst.subarray(dstOffset, dstOffset + n);
  const out = graph.run({ x: ortTensor('float16', src, [n]) }, { y: ortTensor('float32', y, [n]) });
  // The binding writes into the given view; copy only if a build hands back its own buffer.
  const got = out.y.data as Float32Array;
  if (got.buffer !== y.buffer || got.byteOffset !== y.byteOffset) y.set(got);
}

/** decodeHalfNative, or the JS table from the first refusal on (same values), said once. */
export const nativeHalfDecoder: HalfDecoder = (src, dst, dstOffset) => {
  if (broken) return f16ToF32(src, dst, dstOffset);
  try {
    decodeHalfNative(src, dst, dstOffset);
  } catch (e) {
    // A faster path must never cost a load: e.g. a runtime whose Float16Array the binding
    // could not read (ort.ts: ortTensor) would otherwise fail every float16 checkpoint.
    broken = true;
    warn(`float16 weights decode in JS: onnxruntime's Cast failed (${(e as Error).message})`);
    f16ToF32(src, dst, dstOffset);
  }
};
