import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  SUPPORTED_DTYPES,
  bf16ToF32,
  f16ToF32,
  f32ToF16,
  readSafetensorsHeader,
  readTensor,
  writeSafetensors,
} from '../engine/model/safetensors.js';
import { assertFails } from './helpers/errors.js';
import { ARCHS, TINYWORLD as TINYWORLD_DIR } from './helpers/golden.js';

const GPT2 = path.join(ARCHS, 'gpt2', 'model.safetensors');
const TINYWORLD = path.join(TINYWORLD_DIR, 'model', 'model.safetensors');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-st-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = (label: string) => path.join(tmp, `${fileNo++}-${label}.safetensors`);

const hasNumpy = spawnSync('python3', ['-c', 'import numpy'], { stdio: 'ignore' }).status === 0;
const numpySkip = hasNumpy ? false : 'python3 with numpy is not available';

/** Builds a safetensors file byte by byte, so tests can write anything, including nonsense. */
function rawSafetensors(label: string, header: unknown, body: Uint8Array = new Uint8Array(0), headerLen?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLen ?? BigInt(json.length));
  const file = tmpFile(label);
  fs.writeFileSync(file, Buffer.concat([len, json, body]));
  return file;
}

/** Reference half decoding straight from the IEEE 754 definition. */
function halfReference(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

function sha256(data: Float32Array): string {
  return createHash('sha256').update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength)).digest('hex');
}

/** numpy's view of every tensor of a file: shape and sha256 of its float32 upcast. */
function numpyDigest(file: string): Record<string, { shape: number[]; sha: string }> {
  const script = `
import sys, json, struct, hashlib, numpy as np
f = sys.argv[1]
with open(f, 'rb') as fh: b = fh.read()
n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); base = 8 + n
dt = {'F32': '<f4', 'F16': '<f2'}
out = {}
for k, v in h.items():
    if k == '__metadata__': continue
    s, e = v['data_offsets']
    a = np.frombuffer(b[base + s:base + e], dtype=dt[v['dtype']]).astype('<f4')
    out[k] = {'shape': v['shape'], 'sha': hashlib.sha256(a.tobytes()).hexdigest()}
print(json.dumps(out))
`;
  const r = spawnSync('python3', ['-c', script, file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

function assertMatchesNumpy(file: string, expectedCount: number): void {
  const ref = numpyDigest(file);
  const header = readSafetensorsHeader(file);
  assert.equal(header.tensors.size, expectedCount);
  assert.deepEqual([...header.tensors.keys()].sort(), Object.keys(ref).sort());
  for (const info of header.tensors.values()) {
    const t = readTensor(info);
    assert.deepEqual(t.shape, ref[info.name].shape, info.name);
    assert.equal(t.data.length, t.shape.reduce((a, d) => a * d, 1), info.name);
    assert.equal(sha256(t.data), ref[info.name].sha, `${info.name} differs from numpy`);
  }
}

// ---------------------------------------------------------------------------------------------
// Conversions

test('f16ToF32 is exact for all 65536 half values', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const out = new Float32Array(65536);
  f16ToF32(all, out);
  const bits = new Uint32Array(out.buffer);
  for (let h = 0; h < 65536; h++) {
    const want = halfReference(h);
    if (Number.isNaN(want)) {
      assert.ok(Number.isNaN(out[h]), `0x${h.toString(16)} should be NaN`);
      assert.equal((bits[h] >>> 13) & 0x3ff, h & 0x3ff, `NaN payload of 0x${h.toString(16)}`);
      assert.equal(bits[h] >>> 31, h >>> 15, `NaN sign of 0x${h.toString(16)}`);
    } else {
      assert.ok(Object.is(out[h], want), `0x${h.toString(16)}: got ${out[h]}, want ${want}`);
    }
  }
});

test('f16ToF32 writes at an offset into a larger array', () => {
  const out = new Float32Array(5).fill(7);
  f16ToF32(new Uint16Array([0x3c00, 0xc000]), out, 2);
  assert.deepEqual([...out], [7, 7, 1, -2, 7]);
});

test('f32ToF16 round-trips every non-NaN half and keeps NaN as NaN', () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const floats = new Float32Array(65536);
  f16ToF32(all, floats);
  const back = new Uint16Array(65536);
  f32ToF16(floats, back);
  for (let h = 0; h < 65536; h++) {
    const isNaN = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
    if (isNaN) assert.ok((back[h] & 0x7c00) === 0x7c00 && (back[h] & 0x3ff) !== 0, `0x${h.toString(16)} stays NaN`);
    else assert.equal(back[h], h, `0x${h.toString(16)}`);
  }
});

test('f32ToF16 rounds to nearest even, overflows to inf, underflows to zero', () => {
  const cases: [number, number][] = [
    [1 + 2 ** -11, 0x3c00], // halfway between 1 and next: ties to even (1)
    [1 + 3 * 2 ** -11, 0x3c02], // halfway, ties to even (upper)
    [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above halfway
    [65504, 0x7bff],
    [65519.99, 0x7bff], // below the rounding boundary of max half
    [65520, 0x7c00], // rounds up to inf
    [1e10, 0x7c00],
    [-1e10, 0xfc00],
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // halfway to smallest subnormal: ties to even (0)
    [2 ** -25 * 1.5, 0x0001],
    [3 * 2 ** -25, 0x0002], // halfway between 1 and 2 subnormal steps: even (2)
    [2 ** -14 - 2 ** -25, 0x0400], // rounds up from subnormal into the smallest normal
    [1e-30, 0x0000],
    [-0, 0x8000],
    [Infinity, 0x7c00],
  ];
  const src = new Float32Array(cases.map((c) => c[0]));
  const out = new Uint16Array(cases.length);
  f32ToF16(src, out);
  cases.forEach(([v, want], i) => assert.equal(out[i], want, `${v} -> 0x${out[i].toString(16)}, want 0x${want.toString(16)}`));
});

test('bf16ToF32 takes the top half of a float32', () => {
  const out = new Float32Array(4);
  bf16ToF32(new Uint16Array([0x3f80, 0xc020, 0x7f80, 0x0001]), out);
  assert.deepEqual([...out], [1, -2.5, Infinity, 2 ** -133]);
});

// ---------------------------------------------------------------------------------------------
// Reading real checkpoints

test('archs/gpt2: header parses; every tensor matches numpy bit for bit', { skip: numpySkip }, () => {
  assertMatchesNumpy(GPT2, 40);
});

test('tinyworld (float16): every tensor matches numpy bit for bit', { skip: numpySkip }, () => {
  assertMatchesNumpy(TINYWORLD, 100);
});

test('tinyworld: header, and the first values of wte decoded by hand from raw bytes', () => {
  const h = readSafetensorsHeader(TINYWORLD);
  assert.equal(h.file, TINYWORLD);
  assert.equal(h.tensors.size, 100);
  assert.equal(h.unsupported.size, 0);
  assert.deepEqual(h.metadata, { format: 'pt' });
  assert.ok([...h.tensors.values()].every((t) => t.dtype === 'F16'));
  const wte = h.tensors.get('transformer.wte.weight')!;
  assert.deepEqual(wte.shape, [50257, 256]);
  assert.equal(wte.end - wte.begin, 50257 * 256 * 2);

  const fd = fs.openSync(TINYWORLD, 'r');
  const raw = Buffer.alloc(8);
  fs.readSync(fd, raw, 0, 8, wte.begin);
  fs.closeSync(fd);
  const t = readTensor(wte);
  for (let i = 0; i < 4; i++) assert.equal(t.data[i], halfReference(raw.readUInt16LE(i * 2)), `wte[${i}]`);
  assert.equal(t.data[0], -0.040252685546875);
});

test('archs/gpt2: F32 values equal the raw little-endian floats', () => {
  const h = readSafetensorsHeader(GPT2);
  const info = h.tensors.get('transformer.h.0.attn.c_attn.weight')!;
  assert.deepEqual(info.shape, [64, 192]);
  const t = readTensor(info);
  const fd = fs.openSync(GPT2, 'r');
  const raw = Buffer.alloc(info.end - info.begin);
  fs.readSync(fd, raw, 0, raw.length, info.begin);
  fs.closeSync(fd);
  for (const i of [0, 1, 191, 192, 5000, 64 * 192 - 1]) assert.equal(t.data[i], raw.readFloatLE(i * 4), `[${i}]`);
});

test('BF16 file built by hand reads back exactly', () => {
  const bits = [0x3f80, 0xc020, 0x4049, 0x7f80, 0xff80, 0x8000, 0x0001, 0x7fc0];
  const body = Buffer.alloc(bits.length * 2 + 4);
  bits.forEach((b, i) => body.writeUInt16LE(b, i * 2));
  body.writeUInt16LE(0x4000, 16); // second tensor: [2, -0.5]
  body.writeUInt16LE(0xbf00, 18);
  const file = rawSafetensors('bf16', {
    __metadata__: { format: 'pt' },
    a: { dtype: 'BF16', shape: [2, 4], data_offsets: [0, 16] },
    b: { dtype: 'BF16', shape: [2], data_offsets: [16, 20] },
  }, body);
  const h = readSafetensorsHeader(file);
  const a = readTensor(h.tensors.get('a')!);
  assert.deepEqual(a.shape, [2, 4]);
  assert.deepEqual([...a.data].slice(0, 7), [1, -2.5, 3.140625, Infinity, -Infinity, -0, 2 ** -133]);
  assert.ok(Object.is(a.data[5], -0));
  assert.ok(Number.isNaN(a.data[7]));
  assert.deepEqual([...readTensor(h.tensors.get('b')!).data], [2, -0.5]);
});

test('scalars and empty tensors are allowed', () => {
  const body = Buffer.alloc(4);
  body.writeFloatLE(3.5);
  const file = rawSafetensors('scalar', {
    s: { dtype: 'F32', shape: [], data_offsets: [0, 4] },
    e: { dtype: 'F16', shape: [0, 7], data_offsets: [4, 4] },
  }, body);
  const h = readSafetensorsHeader(file);
  assert.deepEqual(readTensor(h.tensors.get('s')!), { shape: [], data: new Float32Array([3.5]) });
  assert.deepEqual(readTensor(h.tensors.get('e')!), { shape: [0, 7], data: new Float32Array(0) });
});

// ---------------------------------------------------------------------------------------------
// Writer

test('writeSafetensors: F32 and F16 round trip, metadata kept, data region 8-byte aligned', () => {
  const file = tmpFile('written');
  const a = new Float32Array([1, -2, 0.1, 65504, 1e-8, 3.14159]);
  const b = new Float32Array(1000).map((_, i) => Math.sin(i) * 10);
  writeSafetensors(file, [
    { name: 'a', shape: [2, 3], data: a },
    { name: 'b', shape: [10, 100], data: b, dtype: 'F16' },
    { name: '__proto__', shape: [1], data: new Float32Array([5]) },
  ], { format: 'pt', note: 'edited' });
  const h = readSafetensorsHeader(file);
  assert.equal(h.dataStart % 8, 0);
  assert.deepEqual(h.metadata, { format: 'pt', note: 'edited' });
  assert.deepEqual([...h.tensors.keys()], ['a', 'b', '__proto__']);
  assert.equal(h.tensors.get('b')!.dtype, 'F16');
  assert.deepEqual(readTensor(h.tensors.get('a')!), { shape: [2, 3], data: a });
  const bBack = readTensor(h.tensors.get('b')!).data;
  const bHalf = new Uint16Array(b.length);
  f32ToF16(b, bHalf);
  const bWant = new Float32Array(b.length);
  f16ToF32(bHalf, bWant);
  assert.deepEqual(bBack, bWant);
  for (let i = 0; i < b.length; i++) assert.ok(Math.abs(bBack[i] - b[i]) <= 2 ** -11 * Math.abs(b[i]) + 1e-7);
  assert.deepEqual([...readTensor(h.tensors.get('__proto__')!).data], [5]);
  assert.deepEqual(fs.readdirSync(tmp).filter((f) => f.includes('.partial-')), [], 'no temp file left');
});

test('writeSafetensors: F16 encoding agrees with numpy astype(float16)', { skip: numpySkip }, () => {
  // Random bit patterns cover every exponent, including subnormal/overflow/NaN, plus rounding ties.
  const n = 200_000;
  const bits = new Uint32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    bits[i] = s;
  }
  for (let i = 0; i < 2000; i++) bits[i] = (bits[i] & 0xffffe000) | 0x1000; // exact ties
  for (let i = 2000; i < 4000; i++) bits[i] = ((100 + (i % 30)) << 23) | (bits[i] & 0x807fffff); // near-subnormal range
  const values = new Float32Array(bits.buffer);
  const f32File = tmpFile('np32');
  const f16File = tmpFile('np16');
  writeSafetensors(f32File, [{ name: 'x', shape: [n], data: values }]);
  writeSafetensors(f16File, [{ name: 'x', shape: [n], data: values, dtype: 'F16' }]);
  const script = `
import sys, json, struct, numpy as np
def load(f, dt):
    b = open(f, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n])
    s, e = h['x']['data_offsets']; return np.frombuffer(b[8 + n + s:8 + n + e], dtype=dt)
x = load(sys.argv[1], '<f4'); ours = load(sys.argv[2], '<u2')
with np.errstate(all='ignore'): ref = x.astype(np.float16).view('<u2')
nan = np.isnan(x)
bad = (ours != ref) & ~nan
bad_nan = nan & ~np.isnan(ours.view(np.float16))
print(json.dumps({'bad': int(bad.sum()), 'bad_nan': int(bad_nan.sum()), 'first': [int(i) for i in np.nonzero(bad)[0][:5]]}))
`;
  const r = spawnSync('python3', ['-c', script, f32File, f16File], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { bad: 0, bad_nan: 0, first: [] });
});

test('writeSafetensors rejects shape/data mismatches, duplicate names and other dtypes', () => {
  const file = tmpFile('bad-write');
  assertFails(() => writeSafetensors(file, [{ name: 'w', shape: [2, 2], data: new Float32Array(3) }]), 'TENSOR_SHAPE', ['"w"'], { tensor: 'w' });
  assertFails(
    () => writeSafetensors(file, [{ name: 'w', shape: [1], data: new Float32Array(1) }, { name: 'w', shape: [1], data: new Float32Array(1) }]),
    'INVALID_ARGUMENT',
    ['"w"'],
  );
  assertFails(
    () => writeSafetensors(file, [{ name: 'w', shape: [1], data: new Float32Array(1), dtype: 'BF16' as 'F16' }]),
    'UNKNOWN_DTYPE',
    ['"w"', 'BF16'],
  );
  assert.equal(fs.existsSync(file), false);
});

// ---------------------------------------------------------------------------------------------
// Corrupt files

test('missing file -> FILE_MISSING', () => {
  const file = path.join(tmp, 'nope.safetensors');
  assertFails(() => readSafetensorsHeader(file), 'FILE_MISSING', [file], { file });
});

test('file shorter than the length prefix -> CORRUPT_SAFETENSORS', () => {
  const file = tmpFile('short');
  fs.writeFileSync(file, Buffer.from([1, 2, 3]));
  assertFails(() => readSafetensorsHeader(file), 'CORRUPT_SAFETENSORS', [file], { file });
});

test('header length larger than the file -> CORRUPT_SAFETENSORS', () => {
  const file = rawSafetensors('biglen', { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4), 10_000n);
  assertFails(() => readSafetensorsHeader(file), 'CORRUPT_SAFETENSORS', [file, '10000'], { file });
});

test('absurd header length (2^63) -> CORRUPT_SAFETENSORS', () => {
  const file = rawSafetensors('hugelen', '{}', new Uint8Array(0), 1n << 63n);
  assertFails(() => readSafetensorsHeader(file), 'CORRUPT_SAFETENSORS', [file, String(1n << 63n)], { file });
});

test('garbage header JSON -> CORRUPT_SAFETENSORS with the parse error', () => {
  const file = rawSafetensors('garbage', '{"a": {"dtype": "F32", ');
  assertFails(() => readSafetensorsHeader(file), 'CORRUPT_SAFETENSORS', [file, 'not valid JSON'], { file });
  const notObject = rawSafetensors('array', '[1, 2]');
  assertFails(() => readSafetensorsHeader(notObject), 'CORRUPT_SAFETENSORS', [notObject, 'not an object']);
});

test('malformed entries -> CORRUPT_SAFETENSORS naming the tensor', () => {
  const cases: [string, unknown][] = [
    ['no dtype', { shape: [1], data_offsets: [0, 4] }],
    ['bad shape', { dtype: 'F32', shape: [-1], data_offsets: [0, 4] }],
    ['bad offsets', { dtype: 'F32', shape: [1], data_offsets: [4, 0] }],
    ['missing offsets', { dtype: 'F32', shape: [1] }],
    ['not an object', 7],
  ];
  for (const [label, entry] of cases) {
    const file = rawSafetensors(label.replace(/ /g, '-'), { 'h.0.w': entry }, new Uint8Array(4));
    assertFails(() => readSafetensorsHeader(file), 'CORRUPT_SAFETENSORS', [file, 'h.0.w'], { file, tensor: 'h.0.w' });
  }
});

test('data_offsets inconsistent with shape x dtype size -> CORRUPT_SAFETENSORS', () => {
  const file = rawSafetensors('inconsistent', { 'h.0.w': { dtype: 'F16', shape: [2, 3], data_offsets: [0, 24] } }, new Uint8Array(24));
  assertFails(() => readSafetensorsHeader(file), 'CORRUPT_SAFETENSORS', [file, 'h.0.w', '24', '12'], { file, tensor: 'h.0.w' });
});

test('truncated file (offsets beyond its end) -> CORRUPT_SAFETENSORS naming the last tensor', () => {
  const bytes = fs.readFileSync(GPT2);
  const file = tmpFile('truncated');
  fs.writeFileSync(file, bytes.subarray(0, bytes.length - 100));
  const last = [...readSafetensorsHeader(GPT2).tensors.values()].sort((a, b) => b.end - a.end)[0].name;
  assertFails(() => readSafetensorsHeader(file), 'CORRUPT_SAFETENSORS', [file, last, 'truncated'], { file, tensor: last });
});

test('overlapping tensors -> CORRUPT_SAFETENSORS', () => {
  const file = rawSafetensors('overlap', {
    a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
    e: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
    b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
  }, new Uint8Array(16));
  assertFails(() => readSafetensorsHeader(file), 'CORRUPT_SAFETENSORS', [file, '"a"', '"b"']);
});

test('unknown dtype: header opens, reading it -> UNKNOWN_DTYPE naming file, tensor and supported dtypes', () => {
  const file = rawSafetensors('dtypes', {
    'q.int8': { dtype: 'I8', shape: [4], data_offsets: [0, 4] },
    'q.f64': { dtype: 'F64', shape: [1], data_offsets: [4, 12] },
    ok: { dtype: 'F32', shape: [1], data_offsets: [12, 16] },
  }, new Uint8Array(16));
  const h = readSafetensorsHeader(file);
  assert.deepEqual([...h.tensors.keys()], ['ok']);
  assert.deepEqual([...h.unsupported.keys()], ['q.int8', 'q.f64']);
  for (const [name, dtype] of [['q.int8', 'I8'], ['q.f64', 'F64']]) {
    const info = { ...h.unsupported.get(name)!, dtype: dtype as 'F32' };
    assertFails(() => readTensor(info), 'UNKNOWN_DTYPE', [file, name, dtype, ...SUPPORTED_DTYPES], { file, tensor: name });
  }
  // Known dtype sizes are still enforced for undecodable tensors.
  const bad = rawSafetensors('i64-size', { ids: { dtype: 'I64', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8));
  assertFails(() => readSafetensorsHeader(bad), 'CORRUPT_SAFETENSORS', [bad, 'ids']);
});

test('file shrinking after the header was read -> CORRUPT_SAFETENSORS at read time', () => {
  const file = tmpFile('shrinks');
  writeSafetensors(file, [{ name: 'w', shape: [100], data: new Float32Array(100) }]);
  const info = readSafetensorsHeader(file).tensors.get('w')!;
  fs.truncateSync(file, info.begin + 10);
  assertFails(() => readTensor(info), 'CORRUPT_SAFETENSORS', [file], { file, tensor: 'w' });
});
