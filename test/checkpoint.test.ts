import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkpointBytesAsFloat32, openCheckpoint } from '../engine/model/checkpoint.js';
import { readSafetensorsHeader, writeSafetensors } from '../engine/model/safetensors.js';
import { assertFails } from './helpers/errors.js';
import { ARCHS, TINYWORLD as TINYWORLD_DIR } from './helpers/golden.js';

const GPT2 = path.join(ARCHS, 'gpt2');
const TINYWORLD = path.join(TINYWORLD_DIR, 'model');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-ckpt-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));
let dirNo = 0;

/** A fresh checkpoint folder in tmp, with gpt2's config.json unless `config` says otherwise. */
function makeDir(label: string, config: string | null = fs.readFileSync(path.join(GPT2, 'config.json'), 'utf8')): string {
  const dir = path.join(tmp, `${dirNo++}-${label}`);
  fs.mkdirSync(dir);
  if (config !== null) fs.writeFileSync(path.join(dir, 'config.json'), config);
  return dir;
}

/** Writes a safetensors file byte by byte from a header object and a body. */
function rawSafetensors(file: string, header: unknown, body: Uint8Array = new Uint8Array(0), headerLen?: bigint): void {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLen ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([len, json, body]));
}

/** gpt2's tensors, read through the checkpoint, as writer input. */
function gpt2Tensors() {
  const ckpt = openCheckpoint(GPT2);
  return ckpt.tensorNames().map((name) => ({ name, ...ckpt.read(name) }));
}

// ---------------------------------------------------------------------------------------------
// Good checkpoints

test('archs/gpt2 opens: config, names, shapes, parameter count, values from raw bytes', () => {
  const ckpt = openCheckpoint(GPT2);
  assert.equal(ckpt.dir, GPT2);
  assert.equal(ckpt.config.model_type, 'gpt2');
  assert.equal(ckpt.config.n_embd, 64);
  assert.deepEqual(ckpt.files, [path.join(GPT2, 'model.safetensors')]);
  const names = ckpt.tensorNames();
  assert.equal(names.length, 40);
  assert.ok(names.every((n) => n.startsWith('transformer.')));
  assert.ok(ckpt.has('transformer.wte.weight'));
  assert.ok(!ckpt.has('lm_head.weight')); // tied head: not stored

  // vocab 512, width 64, context 64, 3 layers, MLP 256 (from archs/README.md)
  const perLayer = 2 * 64 + (64 * 192 + 192) + (64 * 64 + 64) + 2 * 64 + (64 * 256 + 256) + (256 * 64 + 64);
  const expected = 512 * 64 + 64 * 64 + 3 * perLayer + 2 * 64;
  assert.equal(ckpt.parameterCount(), expected);
  assert.equal(checkpointBytesAsFloat32(ckpt), expected * 4);

  let sum = 0;
  for (const name of names) {
    const info = ckpt.info(name);
    const t = ckpt.read(name);
    assert.deepEqual(t.shape, info.shape);
    assert.equal(t.data.length, info.shape.reduce((a, d) => a * d, 1));
    sum += t.data.length;
  }
  assert.equal(sum, expected);
  assert.deepEqual(ckpt.info('transformer.wpe.weight').shape, [64, 64]);
  assert.deepEqual(ckpt.info('transformer.h.2.mlp.c_fc.weight').shape, [64, 256]);

  const info = ckpt.info('transformer.ln_f.weight');
  const raw = Buffer.alloc(info.end - info.begin);
  const fd = fs.openSync(info.file, 'r');
  fs.readSync(fd, raw, 0, raw.length, info.begin);
  fs.closeSync(fd);
  const t = ckpt.read('transformer.ln_f.weight');
  for (let i = 0; i < 64; i++) assert.equal(t.data[i], raw.readFloatLE(i * 4));
});

test('archs/gpt2-bare opens with unprefixed names; a prefixed lookup hints at the real name', () => {
  const ckpt = openCheckpoint(path.join(ARCHS, 'gpt2-bare'));
  assert.ok(ckpt.has('wte.weight'));
  assert.ok(ckpt.tensorNames().every((n) => !n.startsWith('transformer.')));
  const e = assertFails(() => ckpt.read('transformer.wte.weight'), 'MISSING_TENSOR', ['"transformer.wte.weight"', ckpt.dir, 'wte.weight'], {
    tensor: 'transformer.wte.weight',
  });
  assert.equal(e.data.dir, ckpt.dir);
});

test('every archs/* checkpoint opens and reads', () => {
  for (const arch of fs.readdirSync(ARCHS).filter((d) => fs.statSync(path.join(ARCHS, d)).isDirectory())) {
    const ckpt = openCheckpoint(path.join(ARCHS, arch));
    assert.ok(ckpt.tensorNames().length > 0, arch);
    for (const n of ckpt.tensorNames()) assert.equal(ckpt.read(n).data.length, ckpt.info(n).shape.reduce((a, d) => a * d, 1));
  }
});

test('tinyworld (float16) opens; every tensor reads with its header shape', () => {
  const ckpt = openCheckpoint(TINYWORLD);
  assert.equal(ckpt.tensorNames().length, 100);
  assert.ok(ckpt.tensorNames().every((n) => ckpt.info(n).dtype === 'F16'));
  let params = 0;
  for (const n of ckpt.tensorNames()) {
    const t = ckpt.read(n);
    assert.deepEqual(t.shape, ckpt.info(n).shape);
    params += t.data.length;
  }
  assert.equal(ckpt.parameterCount(), params);
  assert.deepEqual(ckpt.read('transformer.wte.weight').shape, [50257, 256]);
});

test('a relative path is resolved', () => {
  const rel = path.relative(process.cwd(), GPT2);
  assert.equal(openCheckpoint(rel).dir, GPT2);
});

test('sharded checkpoint (2 shards + index) reads back equal to the single file', () => {
  const dir = makeDir('sharded');
  const tensors = gpt2Tensors();
  const half = Math.ceil(tensors.length / 2);
  const shards = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  writeSafetensors(path.join(dir, shards[0]), tensors.slice(0, half), { format: 'pt' });
  writeSafetensors(path.join(dir, shards[1]), tensors.slice(half), { format: 'pt' });
  const weightMap = Object.fromEntries(tensors.map((t, i) => [t.name, shards[i < half ? 0 : 1]]));
  fs.writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ metadata: { total_size: tensors.reduce((a, t) => a + t.data.byteLength, 0) }, weight_map: weightMap }),
  );

  const single = openCheckpoint(GPT2);
  const sharded = openCheckpoint(dir);
  assert.deepEqual(sharded.files, shards.map((s) => path.join(dir, s)));
  assert.deepEqual(sharded.tensorNames().sort(), single.tensorNames().sort());
  assert.equal(sharded.parameterCount(), single.parameterCount());
  for (const name of single.tensorNames()) {
    assert.deepEqual(sharded.read(name), single.read(name), name);
    assert.equal(sharded.info(name).file, path.join(dir, weightMap[name]));
  }
});

test('a folder with one differently named .safetensors file loads it', () => {
  const dir = makeDir('renamed');
  fs.copyFileSync(path.join(GPT2, 'model.safetensors'), path.join(dir, 'weights.safetensors'));
  assert.deepEqual(openCheckpoint(dir).files, [path.join(dir, 'weights.safetensors')]);
});

test('F16 checkpoint written by writeSafetensors reads back as the rounded values', () => {
  const dir = makeDir('f16');
  const tensors = gpt2Tensors();
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors.map((t) => ({ ...t, dtype: 'F16' as const })));
  const ckpt = openCheckpoint(dir);
  for (const t of tensors) {
    const back = ckpt.read(t.name).data;
    for (let i = 0; i < back.length; i++) {
      assert.ok(Math.abs(back[i] - t.data[i]) <= Math.abs(t.data[i]) * 2 ** -11 + 2 ** -25, `${t.name}[${i}]`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Bad checkpoints

test('missing folder -> MODEL_NOT_FOUND', () => {
  const dir = path.join(tmp, 'does-not-exist');
  assertFails(() => openCheckpoint(dir), 'MODEL_NOT_FOUND', [dir], { file: dir });
});

test('a file instead of a folder -> MODEL_NOT_FOUND', () => {
  const file = path.join(GPT2, 'model.safetensors');
  assertFails(() => openCheckpoint(file), 'MODEL_NOT_FOUND', [file, 'not a folder'], { file });
});

test('missing config.json -> FILE_MISSING', () => {
  const dir = makeDir('no-config', null);
  fs.copyFileSync(path.join(GPT2, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  const file = path.join(dir, 'config.json');
  assertFails(() => openCheckpoint(dir), 'FILE_MISSING', [file], { file });
});

test('corrupt config.json -> BAD_CONFIG with the parse message', () => {
  const dir = makeDir('bad-config', '{"model_type": "gpt2",');
  const file = path.join(dir, 'config.json');
  let parseMessage = '';
  try {
    JSON.parse('{"model_type": "gpt2",');
  } catch (e) {
    parseMessage = (e as Error).message;
  }
  assertFails(() => openCheckpoint(dir), 'BAD_CONFIG', [file, parseMessage], { file });
  const arrayDir = makeDir('array-config', '[1]');
  assertFails(() => openCheckpoint(arrayDir), 'BAD_CONFIG', [path.join(arrayDir, 'config.json')]);
});

test('truncated model.safetensors -> CORRUPT_SAFETENSORS naming file and tensor', () => {
  const dir = makeDir('truncated');
  const bytes = fs.readFileSync(path.join(GPT2, 'model.safetensors'));
  const file = path.join(dir, 'model.safetensors');
  fs.writeFileSync(file, bytes.subarray(0, bytes.length - 1));
  const e = assertFails(() => openCheckpoint(dir), 'CORRUPT_SAFETENSORS', [file, 'truncated'], { file });
  assert.ok(typeof e.data.tensor === 'string' && e.message.includes(e.data.tensor));
});

test('header length larger than the file -> CORRUPT_SAFETENSORS', () => {
  const dir = makeDir('header-len');
  const file = path.join(dir, 'model.safetensors');
  rawSafetensors(file, { w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, new Uint8Array(4), 1_000_000n);
  assertFails(() => openCheckpoint(dir), 'CORRUPT_SAFETENSORS', [file, '1000000'], { file });
});

test('garbage header JSON -> CORRUPT_SAFETENSORS', () => {
  const dir = makeDir('garbage');
  const file = path.join(dir, 'model.safetensors');
  rawSafetensors(file, '\u0001\u0002not json at all');
  assertFails(() => openCheckpoint(dir), 'CORRUPT_SAFETENSORS', [file, 'JSON'], { file });
});

test('unknown dtype -> UNKNOWN_DTYPE on read, naming file, tensor and supported dtypes', () => {
  const dir = makeDir('int8');
  const file = path.join(dir, 'model.safetensors');
  rawSafetensors(file, {
    'transformer.h.0.attn.bias': { dtype: 'BOOL', shape: [1, 1, 2, 2], data_offsets: [0, 4] },
    'transformer.wte.weight': { dtype: 'I8', shape: [2, 2], data_offsets: [4, 8] },
    'transformer.wpe.weight': { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
  }, new Uint8Array(12));
  // Opening succeeds: real checkpoints carry BOOL/int buffers (causal masks) nobody needs.
  const ckpt = openCheckpoint(dir);
  assert.ok(ckpt.has('transformer.wte.weight'));
  assert.equal(ckpt.tensorNames().length, 3);
  assert.equal(ckpt.parameterCount(), 4 + 4 + 1);
  assert.deepEqual([...ckpt.read('transformer.wpe.weight').data], [0]);
  for (const [name, dtype] of [['transformer.wte.weight', 'I8'], ['transformer.h.0.attn.bias', 'BOOL']]) {
    assertFails(() => ckpt.read(name), 'UNKNOWN_DTYPE', [file, name, dtype, 'F32', 'F16', 'BF16'], { file, tensor: name });
    assertFails(() => ckpt.info(name), 'UNKNOWN_DTYPE', [name]);
  }
});

test('data_offsets inconsistent with shape -> CORRUPT_SAFETENSORS naming the tensor', () => {
  const dir = makeDir('offsets');
  const file = path.join(dir, 'model.safetensors');
  rawSafetensors(file, { 'transformer.wte.weight': { dtype: 'F32', shape: [4, 4], data_offsets: [0, 60] } }, new Uint8Array(64));
  assertFails(() => openCheckpoint(dir), 'CORRUPT_SAFETENSORS', [file, 'transformer.wte.weight', '60', '64'], {
    file,
    tensor: 'transformer.wte.weight',
  });
});

test('pickle-only folder -> PICKLE_CHECKPOINT explaining why and how to convert', () => {
  for (const name of ['pytorch_model.bin', 'model.pt', 'weights.pth']) {
    const dir = makeDir('pickle');
    const file = path.join(dir, name);
    fs.writeFileSync(file, 'PK\u0003\u0004 not really a pickle');
    assertFails(() => openCheckpoint(dir), 'PICKLE_CHECKPOINT', [name, 'execute', 'save_pretrained', 'safe_serialization=True', dir], {
      file,
    });
  }
});

test('no weights at all -> FILE_MISSING', () => {
  const dir = makeDir('empty');
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{}');
  assertFails(() => openCheckpoint(dir), 'FILE_MISSING', [dir, 'model.safetensors'], { file: path.join(dir, 'model.safetensors') });
});

test('several .safetensors files without an index -> FILE_MISSING naming the index', () => {
  const dir = makeDir('no-index');
  for (const s of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
    fs.copyFileSync(path.join(GPT2, 'model.safetensors'), path.join(dir, s));
  }
  const index = path.join(dir, 'model.safetensors.index.json');
  assertFails(() => openCheckpoint(dir), 'FILE_MISSING', [index], { file: index });
});

/** A 2-tensor sharded folder whose index can be bent by `mutate`. */
function shardedDir(label: string, mutate: (weightMap: Record<string, string>) => void): { dir: string; index: string } {
  const dir = makeDir(label);
  writeSafetensors(path.join(dir, 'a.safetensors'), [{ name: 'x', shape: [2], data: new Float32Array([1, 2]) }]);
  writeSafetensors(path.join(dir, 'b.safetensors'), [{ name: 'y', shape: [1], data: new Float32Array([3]) }]);
  const weightMap: Record<string, string> = { x: 'a.safetensors', y: 'b.safetensors' };
  mutate(weightMap);
  const index = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(index, JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return { dir, index };
}

test('shard listed in the index but missing -> FILE_MISSING naming shard and index', () => {
  const { dir, index } = shardedDir('shard-missing', (m) => {
    m.z = 'c.safetensors';
  });
  const shard = path.join(dir, 'c.safetensors');
  assertFails(() => openCheckpoint(dir), 'FILE_MISSING', [shard, index, '"z"'], { file: shard, index, tensor: 'z' });
});

test('tensor listed in the index but absent from its shard -> MISSING_TENSOR', () => {
  const { dir, index } = shardedDir('tensor-missing', (m) => {
    m.y = 'a.safetensors';
  });
  const shard = path.join(dir, 'a.safetensors');
  assertFails(() => openCheckpoint(dir), 'MISSING_TENSOR', [shard, '"y"', index], { file: shard, tensor: 'y', index });
});

test('unknown tensor name on read -> MISSING_TENSOR naming tensor and checkpoint dir', () => {
  const ckpt = openCheckpoint(GPT2);
  assertFails(() => ckpt.read('transformer.h.9.attn.c_attn.weight'), 'MISSING_TENSOR', ['"transformer.h.9.attn.c_attn.weight"', GPT2], {
    tensor: 'transformer.h.9.attn.c_attn.weight',
    dir: GPT2,
  });
  assertFails(() => ckpt.info('nope'), 'MISSING_TENSOR', ['"nope"']);
});

test('bad index: invalid JSON, no weight_map, shard outside the folder -> CORRUPT_SAFETENSORS', () => {
  const dir = makeDir('bad-index');
  const index = path.join(dir, 'model.safetensors.index.json');
  fs.writeFileSync(index, '{"weight_map": ');
  assertFails(() => openCheckpoint(dir), 'CORRUPT_SAFETENSORS', [index, 'JSON'], { file: index });
  fs.writeFileSync(index, '{"metadata": {}}');
  assertFails(() => openCheckpoint(dir), 'CORRUPT_SAFETENSORS', [index, 'weight_map'], { file: index });
  const escaped = shardedDir('escape', (m) => {
    m.x = '../../etc/passwd';
  });
  assertFails(() => openCheckpoint(escaped.dir), 'CORRUPT_SAFETENSORS', [escaped.index, 'outside'], { file: escaped.index });
});

test('a corrupt shard is reported with the shard file named', () => {
  const { dir } = shardedDir('corrupt-shard', () => {});
  const shard = path.join(dir, 'b.safetensors');
  const { dataStart } = readSafetensorsHeader(shard);
  fs.truncateSync(shard, dataStart + 2);
  assertFails(() => openCheckpoint(dir), 'CORRUPT_SAFETENSORS', [shard, '"y"'], { file: shard, tensor: 'y' });
});
