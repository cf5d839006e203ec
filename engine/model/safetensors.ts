/**
 * Safetensors reader and writer.
 *
 * Format: 8-byte little-endian u64 header length N, then N bytes of JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {..}}`, then the data
 * region; offsets are relative to the start of the data region (8 + N).
 *
 * The header is validated completely when a file is opened, so a truncated or inconsistent
 * file fails up front with the file and tensor named, not later as garbage numbers. Tensor
 * data is read lazily, one byte range at a time, so a multi-GB checkpoint is never held in
 * memory twice. All typed-array views assume a little-endian host (every platform Node and
 * tfjs ship on), which matches the on-disk byte order, so data is read straight into the
 * destination array without a byte swap.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FactLensError } from '../errors.js';
import type { HostTensor, SafetensorsDtype, TensorInfo } from './types.js';
import { openRegular, jsonErrorMessage } from '../util/files.js';
import { decodeHalfInto } from './half-simd.js';

export const SUPPORTED_DTYPES: readonly SafetensorsDtype[] = ['F32', 'F16', 'BF16'];

/**
 * Element sizes of every dtype the safetensors spec defines, so offsets can be checked even for
 * tensors we cannot decode. Sub-byte types (F4, F6_*) are absent: their size is not whole bytes.
 */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

/** The reference implementation refuses headers over 100 MB; anything larger is not a header. */
const MAX_HEADER_BYTES = 100_000_000;

/** Elements converted per chunk when upcasting 16-bit data: bounds scratch memory at 2 MB. */
const CHUNK_ELEMENTS = 1 << 20;

/** readSync takes an int32 length; stay well below it. */
const MAX_READ_BYTES = 1 << 30;

/** A tensor whose dtype we cannot decode. Kept (not rejected at open) because real checkpoints
 * carry such buffers, e.g. BOOL causal masks in GPT-J / Pythia files, that the model never needs. */
export interface UnsupportedTensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  file: string;
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** Absolute path. */
  file: string;
  fileSize: number;
  /** Absolute byte offset of the data region (8 + header length). */
  dataStart: number;
  /** Decodable tensors in header order. */
  tensors: Map<string, TensorInfo>;
  unsupported: Map<string, UnsupportedTensorInfo>;
  /** `__metadata__` string map, if any (e.g. {format: 'pt'}); informational only. */
  metadata: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// 16-bit float conversion

let halfTable: Uint32Array | undefined;

/** float32 bit pattern of every half value. 256 KB, built once; a lookup per element is the
 * fastest exact conversion in JS (no float<->double traffic, NaN payloads kept bit-exact). */
function halfToFloatTable(): Uint32Array {
  if (halfTable) return halfTable;
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0) {
      if (mant === 0) {
        t[h] = sign; // +-0
      } else {
        // Subnormal half = mant * 2^-24: normal in float32. Shift the leading 1 up to the
        // implicit-bit position, lowering the exponent once per shift.
        let e = 113; // 127 - 15 + 1
        while ((mant & 0x400) === 0) {
          mant <<= 1;
          e--;
        }
        t[h] = (sign | (e << 23) | ((mant & 0x3ff) << 13)) >>> 0;
      }
    } else if (exp === 0x1f) {
      t[h] = (sign | 0x7f800000 | (mant << 13)) >>> 0; // inf, or NaN with its payload
    } else {
      t[h] = (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0; // rebias 15 -> 127
    }
  }
  halfTable = t;
  return t;
}

/** Decodes IEEE half bit patterns into `dst` starting at `dstOffset`. Exact for every input. */
export function f16ToF32(src: Uint16Array, dst: Float32Array, dstOffset = 0): void {
  const table = halfToFloatTable();
  const out = new Uint32Array(dst.buffer, dst.byteOffset + dstOffset * 4, src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
}

/** Decodes bfloat16 bit patterns (the top half of a float32) into `dst`. Exact. */
export function bf16ToF32(src: Uint16Array, dst: Float32Array, dstOffset = 0): void {
  const out = new Uint32Array(dst.buffer, dst.byteOffset + dstOffset * 4, src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
}

/** Encodes float32 values as IEEE half, round-to-nearest-even; overflow -> inf, NaN stays NaN. */
export function f32ToF16(src: Float32Array, dst: Uint16Array, dstOffset = 0): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) dst[dstOffset + i] = floatBitsToHalf(bits[i]);
}

function floatBitsToHalf(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) {
    // Keep the top payload bits; force the quiet bit so a NaN never turns into inf.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7c00 | 0x200 | (mant >>> 13);
  }
  const e = exp - 112; // half biased exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Result is subnormal (or zero): value / 2^-24, rounded. Below 2^-25 everything rounds to 0.
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e; // 14..24
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) !== 0)) h++; // may carry into the min normal: correct
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // carry may reach inf: correct
  return sign | h;
}

// ---------------------------------------------------------------------------------------------
// Header parsing

function corrupt(file: string, message: string, tensor?: string): FactLensError {
  const data = tensor === undefined ? { file } : { file, tensor };
  return new FactLensError('CORRUPT_SAFETENSORS', `${file}: ${message}`, data);
}

export function unsupportedDtypeError(file: string, tensor: string, dtype: string): FactLensError {
  return new FactLensError(
    'UNKNOWN_DTYPE',
    `${file}: tensor "${tensor}" has dtype ${dtype}, which Fact Lens cannot load ` +
      `(supported: ${SUPPORTED_DTYPES.join(', ')}). Re-save the model in float32, float16 or bfloat16.`,
    { file, tensor, dtype, supported: [...SUPPORTED_DTYPES] },
  );
}

/** Turns OS errors into FactLensErrors naming the file. */
function ioError(file: string, e: unknown): FactLensError {
  const err = e as NodeJS.ErrnoException;
  const why = err.code === 'ENOENT' ? 'file not found' : `cannot read file (${err.code ?? err.message})`;
  return new FactLensError('FILE_MISSING', `${file}: ${why}`, { file, errno: err.code });
}

function openRead(file: string): number {
  // Regular files only: a FIFO named model.safetensors would block open and read, freezing
  // the CLI and the engine's request loop.
  return openRegular(file);
}

/** Reads exactly `dst.byteLength` bytes at `position`; a short read means the file shrank. */
function readExactly(fd: number, file: string, dst: Uint8Array, position: number, tensor?: string): void {
  let done = 0;
  while (done < dst.byteLength) {
    const want = Math.min(dst.byteLength - done, MAX_READ_BYTES);
    let n: number;
    try {
      n = fs.readSync(fd, dst, done, want, position + done);
    } catch (e) {
      throw ioError(file, e);
    }
    if (n === 0) throw corrupt(file, `unexpected end of file at byte ${position + done} (file truncated?)`, tensor);
    done += n;
  }
}

function isNonNegInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Parses and validates the header of a safetensors file. Reads only the header bytes. */
export function readSafetensorsHeader(fileIn: string): SafetensorsHeader {
  const file = path.resolve(fileIn);
  const fd = openRead(file);
  try {
    let fileSize: number;
    try {
      fileSize = fs.fstatSync(fd).size;
    } catch (e) {
      throw ioError(file, e);
    }
    if (fileSize < 8) throw corrupt(file, `file is ${fileSize} bytes, too small to be safetensors`);
    const lenBuf = new Uint8Array(8);
    readExactly(fd, file, lenBuf, 0);
    const headerLen = Buffer.from(lenBuf.buffer).readBigUInt64LE(0);
    if (headerLen > BigInt(fileSize - 8)) {
      throw corrupt(
        file,
        `header length field says ${headerLen} bytes but only ${fileSize - 8} bytes follow it ` +
          `(truncated file, or not a safetensors file)`,
      );
    }
    if (headerLen > BigInt(MAX_HEADER_BYTES)) {
      throw corrupt(file, `header length ${headerLen} bytes exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    }
    const n = Number(headerLen);
    const headerBytes = new Uint8Array(n);
    readExactly(fd, file, headerBytes, 8);
    return parseHeader(file, fileSize, 8 + n, Buffer.from(headerBytes.buffer).toString('utf8'));
  } finally {
    fs.closeSync(fd);
  }
}

function parseHeader(file: string, fileSize: number, dataStart: number, text: string): SafetensorsHeader {
  let json: unknown;
  try {
    // Trailing NULs: some writers pad with them instead of spaces.
    json = JSON.parse(text.replace(/\0+$/, ''));
  } catch (e) {
    throw corrupt(file, `header is not valid JSON (${jsonErrorMessage(e)})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw corrupt(file, 'header JSON is not an object');
  }
  const dataSize = fileSize - dataStart;
  const tensors = new Map<string, TensorInfo>();
  const unsupported = new Map<string, UnsupportedTensorInfo>();
  const metadata: Record<string, string> = {};
  const ranges: { name: string; begin: number; end: number }[] = [];

  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry === 'object' && entry !== null) {
        for (const [k, v] of Object.entries(entry)) if (typeof v === 'string') metadata[k] = v;
      }
      continue;
    }
    if (typeof entry !== 'object' || entry === null) throw corrupt(file, `entry for tensor "${name}" is not an object`, name);
    const { dtype, shape, data_offsets: offs } = entry as Record<string, unknown>;
    if (typeof dtype !== 'string') throw corrupt(file, `tensor "${name}" has no dtype string`, name);
    if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
      throw corrupt(file, `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`, name);
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !isNonNegInt(offs[0]) || !isNonNegInt(offs[1]) || offs[0] > offs[1]) {
      throw corrupt(file, `tensor "${name}" has invalid data_offsets ${JSON.stringify(offs)}`, name);
    }
    const [b, e] = offs as [number, number];
    const count = shape.reduce((a: number, d: number) => a * d, 1);
    const elemBytes = Object.hasOwn(DTYPE_BYTES, dtype) ? DTYPE_BYTES[dtype] : undefined;
    if (elemBytes !== undefined && e - b !== count * elemBytes) {
      throw corrupt(
        file,
        `tensor "${name}": data_offsets [${b}, ${e}] span ${e - b} bytes, but shape [${shape.join(', ')}] ` +
          `of ${dtype} needs ${count * elemBytes}`,
        name,
      );
    }
    if (e > dataSize) {
      throw corrupt(
        file,
        `tensor "${name}" ends at data byte ${e} but the data region has only ${dataSize} bytes (file truncated?)`,
        name,
      );
    }
    ranges.push({ name, begin: b, end: e });
    const info = { name, shape: shape as number[], file, begin: dataStart + b, end: dataStart + e };
    if ((SUPPORTED_DTYPES as readonly string[]).includes(dtype)) {
      tensors.set(name, { ...info, dtype: dtype as SafetensorsDtype });
    } else {
      unsupported.set(name, { ...info, dtype });
    }
  }

  // Overlapping ranges would make two tensors alias the same bytes: a sign of a corrupt writer.
  // Empty tensors occupy no bytes and may sit anywhere.
  const nonEmpty = ranges.filter((r) => r.end > r.begin).sort((x, y) => x.begin - y.begin);
  let reach = nonEmpty[0];
  for (const cur of nonEmpty.slice(1)) {
    if (cur.begin < reach.end) {
      throw corrupt(file, `tensors "${reach.name}" and "${cur.name}" have overlapping data_offsets`, cur.name);
    }
    if (cur.end > reach.end) reach = cur;
  }
  return { file, fileSize, dataStart, tensors, unsupported, metadata };
}

// ---------------------------------------------------------------------------------------------
// Tensor reading

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, d) => a * d, 1);
}

/**
 * Reads one tensor's byte range and upcasts it to float32, into `into` when given (e.g. the
 * tensor's own block of the WASM heap: adapters/read.ts), else into a new array.
 */
export function readTensor(info: TensorInfo, into?: Float32Array): HostTensor {
  const count = elementCount(info.shape);
  if (into && into.length !== count) throw new Error(`readTensor: ${info.name} has ${count} elements, destination ${into.length}`);
  const data = into ?? new Float32Array(count);
  const fd = openRead(info.file);
  try {
    if (info.dtype === 'F32') {
      // Read straight into the result's memory: no scratch copy.
      readExactly(fd, info.file, new Uint8Array(data.buffer, data.byteOffset, data.byteLength), info.begin, info.name);
    } else if (info.dtype === 'F16' || info.dtype === 'BF16') {
      const convert = info.dtype === 'F16' ? f16ToF32 : bf16ToF32;
      const readAt = (bytes: Uint8Array, first: number) => readExactly(fd, info.file, bytes, info.begin + first * 2, info.name);
      // WASM SIMD, in place where `data` is a WASM tensor's heap block (half-simd.ts); else the table.
      if (!decodeHalfInto(info.dtype === 'F16' ? 'f16' : 'bf16', count, data, readAt, convert, CHUNK_ELEMENTS)) {
        const scratch = new Uint16Array(Math.min(count, CHUNK_ELEMENTS));
        for (let done = 0; done < count; done += scratch.length) {
          const n = Math.min(scratch.length, count - done);
          const chunk = scratch.subarray(0, n);
          readAt(new Uint8Array(chunk.buffer, 0, n * 2), done);
          convert(chunk, data, done);
        }
      }
    } else {
      throw unsupportedDtypeError(info.file, info.name, info.dtype);
    }
  } finally {
    fs.closeSync(fd);
  }
  return { shape: [...info.shape], data };
}

// ---------------------------------------------------------------------------------------------
// Writing

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
  /** On-disk dtype; default F32. */
  dtype?: 'F32' | 'F16';
}

/**
 * Writes a safetensors file, tensor by tensor (no whole-file buffer). Writes to a temporary
 * file beside the target and renames it, so a crash never leaves a half-written model where
 * a good one was.
 */
export function writeSafetensors(file: string, tensors: TensorToWrite[], metadata?: Record<string, string>): void {
  // Null prototype: a tensor named "__proto__" must become a key, not a prototype.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') {
        throw new FactLensError('INVALID_ARGUMENT', `safetensors metadata value for "${k}" must be a string`, { file, field: k });
      }
    }
    header.__metadata__ = metadata;
  }
  let offset = 0;
  for (const t of tensors) {
    const dtype = t.dtype ?? 'F32';
    if (dtype !== 'F32' && dtype !== 'F16') throw unsupportedDtypeError(file, t.name, dtype);
    if (!t.name || t.name === '__metadata__' || Object.hasOwn(header, t.name)) {
      throw new FactLensError('INVALID_ARGUMENT', `${file}: tensor name "${t.name}" is empty, reserved or duplicated`, {
        file,
        tensor: t.name,
      });
    }
    if (!t.shape.every(isNonNegInt) || elementCount(t.shape) !== t.data.length) {
      throw new FactLensError(
        'TENSOR_SHAPE',
        `${file}: tensor "${t.name}" has shape [${t.shape.join(', ')}] but ${t.data.length} values`,
        { file, tensor: t.name },
      );
    }
    const bytes = t.data.length * (dtype === 'F32' ? 4 : 2);
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  // Pad with spaces so the data region starts 8-byte aligned, as the reference writer does.
  let json = JSON.stringify(header);
  const jsonBytes = Buffer.byteLength(json, 'utf8');
  json += ' '.repeat((8 - (jsonBytes % 8)) % 8);
  const headerBuf = Buffer.from(json, 'utf8');
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(headerBuf.length));

  const target = path.resolve(file);
  const tmp = `${target}.partial-${process.pid}`;
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    fs.writeSync(fd, lenBuf);
    fs.writeSync(fd, headerBuf);
    for (const t of tensors) {
      if ((t.dtype ?? 'F32') === 'F32') {
        writeAll(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      } else {
        const scratch = new Uint16Array(Math.min(t.data.length, CHUNK_ELEMENTS));
        for (let done = 0; done < t.data.length; done += scratch.length) {
          const n = Math.min(scratch.length, t.data.length - done);
          f32ToF16(t.data.subarray(done, done + n), scratch);
          writeAll(fd, new Uint8Array(scratch.buffer, 0, n * 2));
        }
      }
    }
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    if (e instanceof FactLensError) throw e;
    const err = e as NodeJS.ErrnoException;
    throw new FactLensError('INVALID_ARGUMENT', `${target}: cannot write safetensors file (${err.code ?? err.message})`, {
      file: target,
      errno: err.code,
    });
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.byteLength; ) {
    done += fs.writeSync(fd, bytes, done, Math.min(bytes.byteLength - done, MAX_READ_BYTES));
  }
}
