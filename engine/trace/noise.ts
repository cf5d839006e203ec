/**
 * Corruption noise for causal tracing (rome-spec §1.5): the scale ν (3σ of subject token
 * embeddings, or a number) and the standard-normal values, seeded so every run of one trace
 * sees the same noise.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { Rng } from '../util/rng.js';
import { readRegularFile, readRegularText } from '../util/files.js';
import { tidyData } from '../util/scope.js';
import { heapView } from '../runtime/native/matmul-kernel.js';
import { encodeAll } from '../tokenizer/encode-cache.js';
import { cacheRoot, readJsonCache, writeJsonCache } from '../edit/hash.js';

/** The subject-set file a model folder ships: `facts.jsonl` ({subject}) or `subjects.txt` (one a line). */
function subjectFile(dir: string): { file: string; kind: 'facts.jsonl' | 'subjects.txt' } | null {
  for (const kind of ['facts.jsonl', 'subjects.txt'] as const) {
    const file = path.join(dir, kind);
    if (fs.existsSync(file)) return { file, kind };
  }
  return null;
}

/** The subject set a model folder ships: `facts.jsonl` ({subject}) or `subjects.txt` (one a line). */
export function modelSubjects(dir: string, text?: string): { subjects: string[]; source: string } | null {
  const found = subjectFile(dir);
  if (!found) return null;
  const body = text ?? readRegularText(found.file);
  let subjects: string[];
  if (found.kind === 'facts.jsonl') {
    subjects = [];
    body.split('\n').forEach((line) => {
      if (!line.trim()) return;
      const rec = JSON.parse(line) as { subject?: unknown };
      if (typeof rec.subject === 'string') subjects.push(rec.subject);
    });
  } else {
    subjects = body.split('\n').map((s) => s.trim()).filter(Boolean);
  }
  // Each distinct subject once (the reference set is the subjects, not the fact lines).
  return { subjects: [...new Set(subjects)], source: `${found.kind} of ${path.basename(dir)}` };
}

/**
 * The folder's 3σ scale, kept on disk between processes. Working it out took ~25 ms of every CLI
 * trace (parse 5,604 fact lines, their subjects' tokens, two float64 passes over their embedding
 * rows), and it depends only on the subject file's bytes, the tokenizer (its fingerprint) and the
 * token embeddings, which no edit changes (ROME, MEMIT and FT change MLP weights). The embeddings
 * are named by the checkpoint files' identity (size, mtime, ctime, inode: what `make` and git's
 * index trust; the file-hash memo trusts less), not by a hash of 38+ MB. Null where there is no
 * subject file or no fingerprint.
 */
function folderScaleKey(model: LoadedModel): { key: string; text: string } | null {
  const found = subjectFile(model.dir);
  const fingerprint = model.tokenizer.fingerprint;
  if (!found || !fingerprint) return null;
  let bytes: Buffer;
  const files: string[] = [];
  try {
    bytes = readRegularFile(found.file); // never a FIFO (util/files.ts); modelSubjects reports what it is
    for (const name of fs.readdirSync(model.dir).filter((n) => n.endsWith('.safetensors')).sort()) {
      const st = fs.statSync(path.join(model.dir, name));
      files.push(`${name}\u0000${st.size}\u0000${st.mtimeMs}\u0000${st.ctimeMs}\u0000${st.ino}`);
    }
  } catch {
    return null;
  }
  if (files.length === 0) return null;
  const key = crypto
    .createHash('sha256')
    .update(`factlens-3sigma 1\u0000${fingerprint}\u0000${files.join('\u0001')}\u0000`)
    .update(bytes)
    .digest('hex');
  return { key, text: bytes.toString('utf8') };
}

interface ScaleEntry {
  key: string;
  scale: number;
  source: string;
}

const scaleFile = (key: string) => path.join(cacheRoot(), 'noise-scale', `${key.slice(0, 32)}.json`);

function readFolderScale(key: string): { scale: number; source: string } | null {
  const e = readJsonCache<ScaleEntry>(scaleFile(key));
  if (!e || e.key !== key || !(typeof e.scale === 'number' && e.scale > 0 && Number.isFinite(e.scale)) || typeof e.source !== 'string') return null;
  return { scale: e.scale, source: e.source };
}

function writeFolderScale(key: string, v: { scale: number; source: string }): void {
  try {
    writeJsonCache(scaleFile(key), { key, ...v } satisfies ScaleEntry);
  } catch {
    /* a read-only cache folder: worked out again next time */
  }
}

const scaleCache = new WeakMap<LoadedModel, Map<string, { scale: number; source: string }>>();

/**
 * 3 × the standard deviation of all token-embedding values of the subjects (each tokenized
 * alone, no leading space; rome-spec §1.5). Without a subject set: over the whole embedding
 * matrix, which the result then says.
 */
export function threeSigma(model: LoadedModel, subjects?: string[]): { scale: number; source: string } {
  const { key, memo, read, finish, inHeap } = sigmaPlan(model, subjects);
  if (memo.has(key)) return memo.get(key)!;
  return inHeap() ?? finish(tidyData(read));
}

/**
 * threeSigma with an asynchronous read, filling the same memo (trace() calls it first, so the
 * synchronous threeSigma in prepare() finds the value: WebGPU reads only asynchronously).
 */
export async function threeSigmaAsync(model: LoadedModel, subjects?: string[]): Promise<{ scale: number; source: string }> {
  const { key, memo, read, finish, inHeap } = sigmaPlan(model, subjects);
  if (memo.has(key)) return memo.get(key)!;
  const direct = inHeap();
  if (direct) return direct;
  const t = tf.tidy(read);
  try {
    return finish((await t.data()) as Float32Array);
  } finally {
    t.dispose();
  }
}

/** The memo key of the model folder's own subject set (given subjects key on their texts). */
const FOLDER_SET = '\u0001folder';

function sigmaPlan(model: LoadedModel, subjects?: string[]) {
  const memo = scaleCache.get(model) ?? new Map<string, { scale: number; source: string }>();
  scaleCache.set(model, memo);
  // The folder's set: from memory, else from disk (folderScaleKey), else worked out below.
  const folder = subjects || memo.has(FOLDER_SET) ? null : folderScaleKey(model);
  const onDisk = folder && readFolderScale(folder.key);
  if (onDisk) memo.set(FOLDER_SET, onDisk);
  const set = subjects ? { subjects, source: `${subjects.length} given subjects` } : memo.has(FOLDER_SET) ? null : modelSubjects(model.dir, folder?.text);
  const key = subjects ? subjects.join('\u0000') : FOLDER_SET;
  const withSubjects = !!set && set.subjects.length > 0;
  // Each subject alone; from the encoding cache after the first process (encode-cache.ts).
  const subjectIds = (): number[] => encodeAll(model.tokenizer, set!.subjects).flat();
  const read = (): tf.Tensor => {
    if (!withSubjects) return tf.clone(model.weights.wte);
    return tf.gather(model.weights.wte, tf.tensor1d(subjectIds(), 'int32'));
  };
  const done = (scale: number) => {
    const result = withSubjects
      ? { scale, source: `3σ of the token embeddings of ${set!.subjects.length} subjects (${set!.source})` }
      : { scale, source: '3σ of all token embeddings (the model folder has no subject set)' };
    memo.set(key, result);
    if (folder && withSubjects) writeFolderScale(folder.key, result);
    return result;
  };
  const finish = (values: Float32Array) => done(3 * std(values));
  // On the WASM backends the embedding matrix is readable in place: the rows are read there
  // instead of gathered (WASM's Gather kernel walks ~2M floats one index at a time, ~0.1 s on
  // tinyworld) and copied out. Same values, same float64 sums, so the same scale.
  const inHeap = (): { scale: number; source: string } | null => {
    if (tf.getBackend() !== 'wasm') return null;
    const wte = model.weights.wte;
    const view = heapView(tf.backend() as unknown as Parameters<typeof heapView>[0], wte);
    const d = wte.shape[1]!;
    return done(3 * (withSubjects ? rowsStd(view, d, subjectIds()) : std(view)));
  };
  return { key, memo, read, finish, inHeap };
}

/** Population standard deviation in float64 of the rows `ids` (repeats counted) of a [*, d] matrix. */
function rowsStd(m: Float32Array, d: number, ids: number[]): number {
  let mean = 0;
  for (const id of ids) for (let j = id * d, end = j + d; j < end; j++) mean += m[j];
  mean /= ids.length * d;
  let ss = 0;
  for (const id of ids) for (let j = id * d, end = j + d; j < end; j++) ss += (m[j] - mean) ** 2;
  return Math.sqrt(ss / (ids.length * d));
}

/** Population standard deviation in float64 (as numpy's std). */
function std(x: Float32Array): number {
  let mean = 0;
  for (let i = 0; i < x.length; i++) mean += x[i];
  mean /= x.length;
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += (x[i] - mean) ** 2;
  return Math.sqrt(ss / x.length);
}

/** Standard-normal noise [samples][tokens][width], flattened; from the values given or a seed. */
export function noiseValues(
  samples: number,
  tokens: number,
  width: number,
  given: number[][][] | undefined,
  seed: number,
): Float32Array {
  const out = new Float32Array(samples * tokens * width);
  if (!given) {
    const rng = new Rng(seed);
    for (let i = 0; i < out.length; i++) out[i] = rng.normal();
    return out;
  }
  const shapeErr = (what: string) =>
    new FactLensError('INVALID_ARGUMENT', `noise values: ${what}; expected [${samples}][${tokens}][${width}]`, {
      field: 'noise',
    });
  if (!Array.isArray(given) || given.length !== samples) throw shapeErr(`${Array.isArray(given) ? given.length : 'no'} samples`);
  given.forEach((s, i) => {
    if (!Array.isArray(s) || s.length !== tokens) throw shapeErr(`sample ${i} has ${Array.isArray(s) ? s.length : 'no'} tokens`);
    s.forEach((row, j) => {
      if (!Array.isArray(row) || row.length !== width) throw shapeErr(`sample ${i} token ${j} has width ${Array.isArray(row) ? row.length : 'none'}`);
      for (let k = 0; k < width; k++) {
        const v = row[k];
        if (typeof v !== 'number' || !Number.isFinite(v)) throw shapeErr(`sample ${i} token ${j} value ${k} is not a finite number`);
        out[(i * tokens + j) * width + k] = v;
      }
    });
  });
  return out;
}
