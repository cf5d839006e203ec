/**
 * A minimal reader for numpy `.npz` archives (a ZIP of `.npy` files, stored or deflated,
 * zip64 aware), enough to import the reference implementation's covariance caches
 * (`mom2.mom2`, `mom2.count`; rome-spec §2.5). Only numeric arrays are read; object arrays
 * (pickles) are refused, never unpickled.
 */
import * as fs from 'node:fs';
import * as zlib from 'node:zlib';
import { FactLensError } from '../errors.js';

export interface NpyArray {
  shape: number[];
  dtype: string;
  /** Values upcast to float64, C order. */
  data: Float64Array;
}

function bad(file: string, msg: string): FactLensError {
  return new FactLensError('INVALID_ARGUMENT', `${file}: ${msg}`, { file });
}

function readAt(fd: number, pos: number, len: number): Buffer {
  const buf = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const n = fs.readSync(fd, buf, done, len - done, pos + done);
    if (n === 0) break;
    done += n;
  }
  return buf.subarray(0, done);
}

interface Entry {
  name: string;
  method: number;
  compSize: number;
  size: number;
  localOffset: number;
}

function centralDirectory(fd: number, file: string, fileSize: number): Entry[] {
  const tailLen = Math.min(fileSize, 65557);
  const tail = readAt(fd, fileSize - tailLen, tailLen);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad(file, 'not a zip/npz archive (no end-of-central-directory record)');
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || tail.readUInt32LE(loc) !== 0x07064b50) throw bad(file, 'zip64 archive without a zip64 locator');
    const z64 = Number(tail.readBigUInt64LE(loc + 8));
    const rec = readAt(fd, z64, 56);
    if (rec.readUInt32LE(0) !== 0x06064b50) throw bad(file, 'broken zip64 end-of-central-directory record');
    count = Number(rec.readBigUInt64LE(32));
    cdSize = Number(rec.readBigUInt64LE(40));
    cdOffset = Number(rec.readBigUInt64LE(48));
  }
  const cd = readAt(fd, cdOffset, cdSize);
  const out: Entry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (cd.readUInt32LE(p) !== 0x02014b50) throw bad(file, 'broken central directory');
    const method = cd.readUInt16LE(p + 10);
    let compSize = cd.readUInt32LE(p + 20);
    let size = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localOffset = cd.readUInt32LE(p + 42);
    const name = cd.subarray(p + 46, p + 46 + nameLen).toString('utf8');
    // zip64 extra field: the 64-bit values of whichever fields were saturated, in this order.
    let e = p + 46 + nameLen;
    const end = e + extraLen;
    while (e + 4 <= end) {
      const id = cd.readUInt16LE(e);
      const len = cd.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === 0xffffffff) (size = Number(cd.readBigUInt64LE(q))), (q += 8);
        if (compSize === 0xffffffff) (compSize = Number(cd.readBigUInt64LE(q))), (q += 8);
        if (localOffset === 0xffffffff) localOffset = Number(cd.readBigUInt64LE(q));
      }
      e += 4 + len;
    }
    out.push({ name, method, compSize, size, localOffset });
    p = end + commentLen;
  }
  return out;
}

function entryBytes(fd: number, file: string, e: Entry): Buffer {
  const lh = readAt(fd, e.localOffset, 30);
  if (lh.readUInt32LE(0) !== 0x04034b50) throw bad(file, `broken local header for ${e.name}`);
  const start = e.localOffset + 30 + lh.readUInt16LE(26) + lh.readUInt16LE(28);
  const raw = readAt(fd, start, e.compSize);
  if (e.method === 0) return raw;
  if (e.method === 8) return zlib.inflateRawSync(raw);
  throw bad(file, `${e.name} uses zip compression method ${e.method}; only stored and deflate are supported`);
}

const NPY_TYPES: Record<string, { bytes: number; read: (b: Buffer, o: number) => number }> = {
  f2: { bytes: 2, read: (b, o) => halfToNumber(b.readUInt16LE(o)) },
  f4: { bytes: 4, read: (b, o) => b.readFloatLE(o) },
  f8: { bytes: 8, read: (b, o) => b.readDoubleLE(o) },
  i4: { bytes: 4, read: (b, o) => b.readInt32LE(o) },
  u4: { bytes: 4, read: (b, o) => b.readUInt32LE(o) },
  i8: { bytes: 8, read: (b, o) => Number(b.readBigInt64LE(o)) },
  u8: { bytes: 8, read: (b, o) => Number(b.readBigUInt64LE(o)) },
};

function halfToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Parses one `.npy` payload. */
export function parseNpy(buf: Buffer, what: string): NpyArray {
  if (buf.length < 10 || buf[0] !== 0x93 || buf.subarray(1, 6).toString('latin1') !== 'NUMPY') {
    throw bad(what, 'not a .npy array');
  }
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.subarray(start, start + headerLen).toString('latin1');
  const descr = /'descr':\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1] === 'True';
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (!descr || shapeText === undefined) throw bad(what, `unreadable .npy header ${JSON.stringify(header)}`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const kind = descr.replace(/^[<|=]/, '');
  if (descr.startsWith('>')) throw bad(what, `big-endian .npy arrays (${descr}) are not supported`);
  const t = NPY_TYPES[kind];
  if (!t) throw bad(what, `.npy dtype ${descr} is not supported (numeric arrays only; pickled objects are refused)`);
  const n = shape.reduce((a, b) => a * b, 1);
  const off = start + headerLen;
  if (buf.length < off + n * t.bytes) throw bad(what, 'truncated .npy data');
  const data = new Float64Array(n);
  if (kind === 'f4' && (off & 3) === 0 && ((buf.byteOffset + off) & 3) === 0) {
    const v = new Float32Array(buf.buffer, buf.byteOffset + off, n);
    for (let i = 0; i < n; i++) data[i] = v[i];
  } else {
    for (let i = 0; i < n; i++) data[i] = t.read(buf, off + i * t.bytes);
  }
  if (fortran && shape.length === 2) {
    const [r, c] = shape;
    const cOrder = new Float64Array(n);
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) cOrder[i * c + j] = data[j * r + i];
    return { shape, dtype: kind, data: cOrder };
  }
  return { shape, dtype: kind, data };
}

/** Reads the named arrays (`name` or `name.npy`) of an .npz file. Missing names are absent. */
export function readNpz(file: string, names: string[]): Map<string, NpyArray> {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    throw new FactLensError('FILE_MISSING', `${file} does not exist`, { file });
  }
  try {
    const size = fs.fstatSync(fd).size;
    const entries = centralDirectory(fd, file, size);
    const out = new Map<string, NpyArray>();
    for (const name of names) {
      const e = entries.find((x) => x.name === name || x.name === `${name}.npy`);
      if (e) out.set(name, parseNpy(entryBytes(fd, file, e), `${file}:${e.name}`));
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}
