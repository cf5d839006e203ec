/**
 * float16 and bfloat16 → float32 with WebAssembly SIMD, for loading 16-bit checkpoints.
 *
 * Why: the JS table lookup (safetensors.ts: f16ToF32) costs ~3.5–4.5 ns per value and
 * onnxruntime's Cast, used before on the native backend, ~3.5 ns on AVX2 machines (it does not
 * use F16C there): 70–120 ms of tinyworld's load and ~6 s of a GPT-2-XL-sized one. Eight values
 * per SIMD step take ~0.75 ns per value, exact for all 65,536 half patterns (NaN payloads and
 * signalling NaNs kept, as the table keeps them), on every backend and platform with WASM SIMD
 * (Node ≥ 16.4, Electron).
 *
 * The module is ~300 bytes assembled here (no toolchain, nothing to ship): one function per
 * format, (src, dst, groups) converting `groups` × 8 values from byte address src to dst.
 * It runs on a WebAssembly.Memory it imports:
 *  - tfjs's WASM heap (registered by backend activation: registerDecodeMemory) when the
 *    destination is a tensor's own heap block (adapters/read.ts loads in place): the file's
 *    bytes are read into the upper half of the destination and widened forward in place, so
 *    there is no scratch buffer and no copy;
 *  - else a scratch memory of its own (one chunk), with one copy out.
 * In place is safe: value i is read from byte 2n + 2i and written to bytes [4i, 4i + 4) of an
 * n-value region, and 4i + 4 ≤ 2n + 2i for every i < n (each 8-value group is loaded before its
 * two stores). Where SIMD is not available (WebAssembly.validate fails) callers use the table.
 */

export type HalfKind = 'f16' | 'bf16';

type Convert = (src: number, dst: number, groups: number) => void;
interface Exports {
  f16: Convert;
  bf16: Convert;
}

// --- a minimal assembler for the one module ---------------------------------------------------

function leb(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
}
const name = (s: string) => [...leb(s.length), ...Array.from(s, (c) => c.charCodeAt(0))];
const section = (id: number, body: number[]) => [id, ...leb(body.length), ...body];
const vector = (items: number[][]) => [...leb(items.length), ...items.flat()];
/** A SIMD instruction (0xfd prefix, LEB128 opcode). */
const simd = (op: number) => [0xfd, ...leb(op)];
const OP = {
  load: 0x00, store: 0x0b, const: 0x0c, ltU: 0x3a, gtU: 0x3c, and: 0x4e, or: 0x50, bitselect: 0x52,
  extendLowU16: 0xa9, extendHighU16: 0xaa, shl: 0xab, add: 0xae, mulF32: 0xe6, convertI32: 0xfa,
} as const;
function v128(bytes: (view: DataView) => void): number[] {
  const b = new DataView(new ArrayBuffer(16));
  bytes(b);
  return [...simd(OP.const), ...new Uint8Array(b.buffer)];
}
const u32x4 = (v: number) => v128((d) => [0, 4, 8, 12].forEach((o) => d.setUint32(o, v >>> 0, true)));
const f32x4 = (v: number) => v128((d) => [0, 4, 8, 12].forEach((o) => d.setFloat32(o, v, true)));
const get = (i: number) => [0x20, i];
const set = (i: number) => [0x21, i];
const i32 = (v: number) => [0x41, ...leb(v)]; // small non-negative constants only
const I32_ADD = 0x6a;
const I32_SUB = 0x6b;

// Parameters 0 src, 1 dst, 2 groups; locals 3 (eight halves) and 4 (scratch), both v128.
const H = 3;
const T = 4;

/**
 * Four halves (u32 lanes, on the stack) → float32 bits: sign | the rebiased exponent and
 * mantissa, with inf/NaN getting the top exponent and zero/subnormals computed as
 * float(m) · 2^-24 (exact: m < 1024).
 */
const halfToFloat = [
  ...set(T),
  ...get(T), ...u32x4(0x8000), ...simd(OP.and), ...i32(16), ...simd(OP.shl), // sign
  ...get(T), ...u32x4(0x7fff), ...simd(OP.and), ...set(T), // |h|
  ...get(T), ...simd(OP.convertI32), ...f32x4(2 ** -24), ...simd(OP.mulF32), // subnormal value
  ...get(T), ...i32(13), ...simd(OP.shl), ...u32x4(0x38000000), ...simd(OP.add), // normal: rebias 15 → 127
  ...get(T), ...u32x4(0x7bff), ...simd(OP.gtU), ...u32x4(0x38000000), ...simd(OP.and), ...simd(OP.add), // inf/NaN: exponent 255
  ...get(T), ...u32x4(0x0400), ...simd(OP.ltU), // zero or subnormal?
  ...simd(OP.bitselect), ...simd(OP.or),
];
/** bfloat16 is the top half of a float32. */
const bf16ToFloat = [...i32(16), ...simd(OP.shl)];

function body(convert: number[]): number[] {
  const code = [
    0x02, 0x40, 0x03, 0x40, // block, loop
    ...get(2), 0x45, 0x0d, 1, // groups == 0 → done
    ...get(0), ...simd(OP.load), 0, 0, ...set(H),
    ...get(1), ...get(H), ...simd(OP.extendLowU16), ...convert, ...simd(OP.store), 0, 0,
    ...get(1), ...get(H), ...simd(OP.extendHighU16), ...convert, ...simd(OP.store), 0, 16,
    ...get(0), ...i32(16), I32_ADD, ...set(0),
    ...get(1), ...i32(32), I32_ADD, ...set(1),
    ...get(2), ...i32(1), I32_SUB, ...set(2),
    0x0c, 0, 0x0b, 0x0b, 0x0b, // br loop, end loop, end block, end function
  ];
  const fn = [1, 2, 0x7b, ...code]; // one local group: two v128
  return [...leb(fn.length), ...fn];
}

const MODULE_BYTES = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, vector([[0x60, 3, 0x7f, 0x7f, 0x7f, 0]])), // (i32, i32, i32) → ()
  ...section(2, vector([[...name('env'), ...name('memory'), 0x02, 0x00, 0x00]])), // memory, min 0
  ...section(3, vector([[0], [0]])),
  ...section(7, vector([[...name('f16'), 0x00, 0], [...name('bf16'), 0x00, 1]])),
  ...section(10, vector([body(halfToFloat), body(bf16ToFloat)])),
]);

// --- instances --------------------------------------------------------------------------------

let compiled: WebAssembly.Module | null | undefined;
function wasmModule(): WebAssembly.Module | null {
  if (compiled === undefined) compiled = WebAssembly.validate(MODULE_BYTES) ? new WebAssembly.Module(MODULE_BYTES) : null;
  return compiled;
}

const instances = new WeakMap<WebAssembly.Memory, Exports>();
function exportsFor(memory: WebAssembly.Memory): Exports {
  let e = instances.get(memory);
  if (!e) {
    e = new WebAssembly.Instance(wasmModule()!, { env: { memory } }).exports as unknown as Exports;
    instances.set(memory, e);
  }
  return e;
}

/** Memories a destination may live in (tfjs's WASM heap); shared memories are not imported. */
const heaps: WebAssembly.Memory[] = [];

/** Lets decodes into `memory` run in place (backend activation registers tfjs's WASM heap). */
export function registerDecodeMemory(memory: unknown): void {
  if (!(memory instanceof WebAssembly.Memory) || heaps.includes(memory)) return;
  if (typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer) return;
  heaps.push(memory);
}

/** Whether this runtime validates the SIMD module (else callers decode with the table). */
export function halfSimdAvailable(): boolean {
  return wasmModule() !== null;
}

/** Elements per chunk in the scratch path: 1M values, a 4 MB scratch memory. */
const SCRATCH_ELEMENTS = 1 << 20;
let scratch: WebAssembly.Memory | null = null;
function scratchMemory(): WebAssembly.Memory {
  scratch ??= new WebAssembly.Memory({ initial: (SCRATCH_ELEMENTS * 4) / 65536 });
  return scratch;
}

/** Counters for tests: values decoded in place and through the scratch memory. */
export const halfSimdStats = { inPlace: 0, scratch: 0 };

/**
 * Converts n 16-bit values at byte address src to float32 at dst in `memory` (src may be the
 * upper half of the destination region). The last n mod 8 go through `tail` after the groups,
 * from a copy, since their source bytes lie under their destination.
 */
function convertIn(memory: WebAssembly.Memory, kind: HalfKind, src: number, dst: number, n: number, tail: TailDecoder): void {
  const groups = n >>> 3;
  if (groups > 0) exportsFor(memory)[kind](src, dst, groups);
  const rest = n - groups * 8;
  if (rest > 0) {
    const left = new Uint16Array(memory.buffer, src + groups * 16, rest).slice();
    tail(left, new Float32Array(memory.buffer, dst + groups * 32, rest), 0);
  }
}

/** The table decoders of safetensors.ts (same signature), for the last values of a chunk. */
export type TailDecoder = (src: Uint16Array, dst: Float32Array, dstOffset: number) => void;

/**
 * Decodes `count` 16-bit values into `dst`, reading them chunk by chunk through `read(bytes,
 * firstElement)` (which must fill `bytes` with the raw little-endian values of elements
 * firstElement…). Returns false, having read nothing, where SIMD is unavailable.
 */
export function decodeHalfInto(
  kind: HalfKind,
  count: number,
  dst: Float32Array,
  read: (bytes: Uint8Array, firstElement: number) => void,
  tail: TailDecoder,
  chunkElements: number,
): boolean {
  if (!halfSimdAvailable()) return false;
  if (dst.length < count) throw new Error(`decodeHalfInto: ${count} values do not fit a destination of ${dst.length}`);
  const heap = heaps.find((m) => m.buffer === dst.buffer);
  if (heap) {
    for (let done = 0; done < count; done += chunkElements) {
      const n = Math.min(chunkElements, count - done);
      const base = dst.byteOffset + done * 4;
      read(new Uint8Array(heap.buffer, base + n * 2, n * 2), done);
      convertIn(heap, kind, base + n * 2, base, n, tail);
    }
    halfSimdStats.inPlace += count;
    return true;
  }
  const mem = scratchMemory();
  for (let done = 0; done < count; done += SCRATCH_ELEMENTS) {
    const n = Math.min(SCRATCH_ELEMENTS, count - done);
    read(new Uint8Array(mem.buffer, n * 2, n * 2), done);
    convertIn(mem, kind, n * 2, 0, n, tail);
    dst.set(new Float32Array(mem.buffer, 0, n), done);
  }
  halfSimdStats.scratch += count;
  return true;
}
