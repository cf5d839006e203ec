/**
 * Opens a Hugging Face checkpoint folder: config.json plus either `model.safetensors` or the
 * shards listed by `model.safetensors.index.json`. Every safetensors header is parsed and
 * validated here, so a broken folder fails at open with the file (and tensor) named; tensor
 * data is only read when asked for.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FactLensError } from '../errors.js';
import type { Checkpoint, HostTensor, TensorInfo } from './types.js';
import {
  elementCount,
  readSafetensorsHeader,
  readTensor,
  unsupportedDtypeError,
  type SafetensorsHeader,
  type UnsupportedTensorInfo,
} from './safetensors.js';
import { readRegularText, jsonErrorMessage } from '../util/files.js';

const SINGLE_FILE = 'model.safetensors';
const INDEX_FILE = 'model.safetensors.index.json';
const PICKLE_EXTENSIONS = ['.bin', '.pt', '.pth'];

export function openCheckpoint(dirIn: string): Checkpoint {
  const dir = path.resolve(dirIn);
  let stat: fs.Stats | undefined;
  try {
    stat = fs.statSync(dir);
  } catch {
    stat = undefined;
  }
  if (!stat?.isDirectory()) {
    throw new FactLensError(
      'MODEL_NOT_FOUND',
      stat ? `${dir} is not a folder; pass the checkpoint folder` : `Model folder not found: ${dir}`,
      { file: dir },
    );
  }
  const config = readConfig(dir);
  const entries = fs.readdirSync(dir);
  const { files, tensors, unsupported } = entries.includes(INDEX_FILE)
    ? openSharded(dir)
    : openSingle(dir, entries);
  return makeCheckpoint(dir, config, files, tensors, unsupported);
}

/** Bytes the checkpoint takes once every tensor is upcast to float32. */
export function checkpointBytesAsFloat32(ckpt: Checkpoint): number {
  return ckpt.parameterCount() * 4;
}

function readConfig(dir: string): Record<string, unknown> {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    text = readRegularText(file);
  } catch (e) {
    if (fs.existsSync(file)) throw e; // there, but a FIFO, a folder, unreadable: say which
    throw new FactLensError('FILE_MISSING', `${file} is missing: a checkpoint folder needs its config.json`, { file });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new FactLensError('BAD_CONFIG', `${file} is not valid JSON: ${jsonErrorMessage(e)}`, { file });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new FactLensError('BAD_CONFIG', `${file} must contain a JSON object`, { file });
  }
  return json as Record<string, unknown>;
}

interface Opened {
  files: string[];
  tensors: Map<string, TensorInfo>;
  unsupported: Map<string, UnsupportedTensorInfo>;
}

function openSingle(dir: string, entries: string[]): Opened {
  let name: string | undefined = entries.includes(SINGLE_FILE) ? SINGLE_FILE : undefined;
  if (!name) {
    const safetensors = entries.filter((e) => e.endsWith('.safetensors'));
    // A lone differently-named file is unambiguous; several without an index are not (they may
    // be shards, or fp16/fp32 variants of the same model), so refuse rather than guess.
    if (safetensors.length === 1) name = safetensors[0];
    else if (safetensors.length > 1) {
      const index = path.join(dir, INDEX_FILE);
      throw new FactLensError(
        'FILE_MISSING',
        `${index} is missing: ${dir} has ${safetensors.length} .safetensors files (${safetensors.join(', ')}) ` +
          `and no ${SINGLE_FILE}, so it is unclear which to load`,
        { file: index },
      );
    }
  }
  if (!name) throw noWeights(dir, entries);
  const header = readSafetensorsHeader(path.join(dir, name));
  return { files: [header.file], tensors: header.tensors, unsupported: header.unsupported };
}

function noWeights(dir: string, entries: string[]): FactLensError {
  const pickles = entries.filter((e) => PICKLE_EXTENSIONS.some((x) => e.endsWith(x))).sort();
  if (pickles.length > 0) {
    const file = path.join(dir, pickles[0]);
    return new FactLensError(
      'PICKLE_CHECKPOINT',
      `${dir} has only PyTorch pickle weights (${pickles.join(', ')}) and no ${SINGLE_FILE}. ` +
        `Loading a pickle can execute arbitrary code, so Fact Lens refuses it. Convert the checkpoint ` +
        `to safetensors once, in Python: from transformers import AutoModelForCausalLM; ` +
        `AutoModelForCausalLM.from_pretrained(${JSON.stringify(dir)}).save_pretrained(${JSON.stringify(dir)}, ` +
        `safe_serialization=True)`,
      { file, files: pickles.map((p) => path.join(dir, p)) },
    );
  }
  const file = path.join(dir, SINGLE_FILE);
  return new FactLensError('FILE_MISSING', `${dir} has no weights: expected ${SINGLE_FILE} or ${INDEX_FILE}`, { file });
}

function openSharded(dir: string): Opened {
  const index = path.join(dir, INDEX_FILE);
  const bad = (msg: string, extra: Record<string, unknown> = {}) =>
    new FactLensError('CORRUPT_SAFETENSORS', `${index}: ${msg}`, { file: index, ...extra });
  const text = readRegularText(index);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw bad(`not valid JSON (${jsonErrorMessage(e)})`);
  }
  const weightMap = (json as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw bad('has no "weight_map" object');
  }

  const headers = new Map<string, SafetensorsHeader>(); // shard file name -> parsed header
  const tensors = new Map<string, TensorInfo>();
  const unsupported = new Map<string, UnsupportedTensorInfo>();
  for (const [tensor, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string') throw bad(`weight_map entry for "${tensor}" is not a file name`, { tensor });
    let header = headers.get(shard);
    if (!header) {
      const shardPath = path.resolve(dir, shard);
      // The index is data from the internet: never let it point outside the model folder.
      const rel = path.relative(dir, shardPath);
      if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
        throw bad(`shard "${shard}" is outside the checkpoint folder`, { tensor });
      }
      if (!fs.existsSync(shardPath)) {
        throw new FactLensError('FILE_MISSING', `${shardPath} is missing: ${index} maps "${tensor}" to it`, {
          file: shardPath,
          index,
          tensor,
        });
      }
      header = readSafetensorsHeader(shardPath);
      headers.set(shard, header);
    }
    const info = header.tensors.get(tensor);
    const odd = header.unsupported.get(tensor);
    if (info) tensors.set(tensor, info);
    else if (odd) unsupported.set(tensor, odd);
    else {
      throw new FactLensError(
        'MISSING_TENSOR',
        `${header.file} has no tensor "${tensor}", though ${index} says it holds it`,
        { file: header.file, index, tensor },
      );
    }
  }
  return { files: [...headers.values()].map((h) => h.file), tensors, unsupported };
}

function makeCheckpoint(
  dir: string,
  config: Record<string, unknown>,
  files: string[],
  tensors: Map<string, TensorInfo>,
  unsupported: Map<string, UnsupportedTensorInfo>,
): Checkpoint {
  // Unsupported-dtype tensors are listed and counted but fail only when read: checkpoints often
  // carry integer/bool buffers (causal masks) that no architecture adapter needs.
  const names = [...tensors.keys(), ...unsupported.keys()];
  let params = 0;
  for (const t of [...tensors.values(), ...unsupported.values()]) params += elementCount(t.shape);

  const info = (name: string): TensorInfo => {
    const t = tensors.get(name);
    if (t) return t;
    const odd = unsupported.get(name);
    if (odd) throw unsupportedDtypeError(odd.file, name, odd.dtype);
    throw missingTensor(dir, files, name, names);
  };
  return {
    dir,
    config,
    files,
    tensorNames: () => [...names],
    has: (name) => tensors.has(name) || unsupported.has(name),
    info,
    read: (name, into): HostTensor => readTensor(info(name), into),
    parameterCount: () => params,
  };
}

function missingTensor(dir: string, files: string[], name: string, names: string[]): FactLensError {
  // The most common cause is the `transformer.` (or similar) prefix present on one side only.
  const near = names.filter((n) => n.endsWith(`.${name}`) || name.endsWith(`.${n}`)).slice(0, 3);
  const hint = near.length > 0 ? ` Similar names: ${near.join(', ')}.` : '';
  return new FactLensError('MISSING_TENSOR', `Tensor "${name}" is not in checkpoint ${dir}.${hint}`, {
    file: files.length === 1 ? files[0] : dir,
    dir,
    tensor: name,
  });
}
