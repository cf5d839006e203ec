/**
 * Second-moment statistics C = E[k kᵀ] of the MLP key k (site `blocks.{l}.mlp.hook_post`, the
 * input of the edited matrix) over every non-pad token of a text corpus (rome-spec §2.5).
 *
 * Corpus: a `.txt` file (one document per non-empty line) or `.jsonl` (one JSON object per
 * line with a string `text`). Documents are tokenized without special tokens and truncated
 * to the model's context. When fewer documents are asked for than the corpus holds, a seeded
 * shuffle (seed 1, as the reference's `random.Random(1)`) picks them; by default all
 * documents are used, capped at 100,000 (the reference's `mom2_n_samples`).
 *
 * Batching: documents sorted by length (longest first) are packed into right-padded batches
 * of at most `batchTokens` padded tokens (rows × width; default max(3·n_ctx, 2048)); the
 * forward stops after layer l. The unedited weights are used (the reference computes C once
 * on the unedited model).
 *
 * Precision: each batch's Σ kkᵀ is one float32 matmul Kᵀ·K on the backend over that batch's
 * real tokens (at most `batchTokens` terms per entry, so float32 rounding stays ~1e-6
 * relative); the per-batch sums are accumulated on the host in float64. Summing millions of
 * tokens in float32 (as the reference does) would lose digits on long corpora; a full float64
 * product on the host would be ~50× slower. Kᵀ is an explicit transpose (a transposed matmul
 * is a scalar loop on WASM, see docs/tfjs-backends.md).
 *
 * Cache: `<cache root>/stats/<model hash>/L<layer>-<corpus hash>-n<documents>.mom2`, a small
 * JSON header followed by the f×f float64 sum; written atomically and reused by every command.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { forward } from '../runtime/forward.js';
import { padBatch } from '../runtime/batch.js';
import { interventionHook } from '../runtime/interventions.js';
import { site } from '../runtime/sites.js';
import { Job, type JobControl } from '../util/jobs.js';
import { Rng } from '../util/rng.js';
import { cacheRoot, cleanStaleTemps, damagedCache, fileHash, modelContentHash, shortHash, writeAtomic } from './hash.js';
import { baseModel } from './state.js';
import { readNpz } from './npz.js';
import { cholesky, type Cholesky } from './linalg.js';
import { readRegularText, jsonErrorMessage } from '../util/files.js';
import type { LayerStatsSummary } from '../protocol/edit.js';

export const MAX_STATS_SAMPLES = 100_000;
const FORMAT = 'factlens-mom2-v1';
const MAGIC = Buffer.from('FLMOM2\u0000\u0001', 'latin1');

export interface StatsOptions {
  /** Corpus file (.txt or .jsonl); default: `corpus.txt` in the model folder. */
  corpus?: string;
  /** Number of documents (default: all, capped at 100,000). */
  samples?: number;
  /**
   * Stop at the first documents of the seeded shuffle that reach this many tokens (when fewer
   * than `samples`): the estimate of C needs a number of keys proportional to its dimension,
   * not the whole corpus (hparams.ts, mom2TokensPerDim).
   */
  minTokens?: number;
  /** Padded tokens per batch (default max(3·n_ctx, 2048)). */
  batchTokens?: number;
  /** Read and write the disk cache (default true). */
  cache?: boolean;
  /** Import the reference's .npz (`mom2.mom2`, `mom2.count`) instead of computing. */
  npz?: string;
}

/** The statistics of one layer: the summary the protocol carries plus the sum itself. */
export interface LayerStats extends LayerStatsSummary {
  /** Un-normalised Σ kkᵀ, row-major f×f, float64. */
  sum: Float64Array;
}

/** C = Σ kkᵀ / N (float64). */
export function secondMoment(s: LayerStats): Float64Array {
  const c = new Float64Array(s.sum.length);
  for (let i = 0; i < c.length; i++) c[i] = s.sum[i] / s.count;
  return c;
}

export function defaultCorpus(model: LoadedModel): string {
  return path.join(model.dir, 'corpus.txt');
}

/** Reads a corpus into documents. Errors name the file (and line for bad JSON lines). */
export function readCorpus(file: string): string[] {
  const abs = path.resolve(file);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch {
    throw new FactLensError('FILE_MISSING', `corpus file ${abs} does not exist`, { file: abs, field: 'corpus' });
  }
  if (!st.isFile()) throw new FactLensError('FILE_MISSING', `corpus ${abs} is not a file`, { file: abs, field: 'corpus' });
  const text = readRegularText(abs, 'corpus');
  const docs: string[] = [];
  const jsonl = /\.jsonl$/i.test(abs);
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (!line.trim()) return;
    if (!jsonl) {
      docs.push(line);
      return;
    }
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      throw new FactLensError('INVALID_ARGUMENT', `${abs}:${i + 1}: not valid JSON (${jsonErrorMessage(e)})`, {
        file: abs,
        line: i + 1,
        field: 'corpus',
      });
    }
    const t = (obj as Record<string, unknown> | null)?.['text'];
    if (typeof t !== 'string') {
      throw new FactLensError('INVALID_ARGUMENT', `${abs}:${i + 1}: a .jsonl corpus needs a string "text" field on every line`, {
        file: abs,
        line: i + 1,
        field: 'corpus',
      });
    }
    if (t.trim()) docs.push(t);
  });
  if (docs.length === 0) {
    throw new FactLensError('INVALID_ARGUMENT', `corpus ${abs} is empty: it has no non-empty document`, { file: abs, field: 'corpus' });
  }
  return docs;
}

/** The seeded shuffle (seed 1) of document indices that every sample is a prefix of. */
function shuffledOrder(n: number): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  const rng = new Rng(1);
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx;
}

/** The documents used for `samples` (all, in file order, or a seeded shuffle's first n). */
export function sampleDocuments(docs: string[], samples: number): string[] {
  if (samples >= docs.length) return docs;
  return shuffledOrder(docs.length)
    .slice(0, samples)
    .sort((a, b) => a - b)
    .map((i) => docs[i]);
}

/**
 * documentsForTokens' answers for this process, by tokenizer, corpus content, context and token
 * budget. The document count is part of the statistics' cache key, so every edit used to
 * tokenize ~50·f tokens of the corpus before it could even look its statistics up: ~0.2 s of a
 * warm 2.5 s tinyworld edit in the extension's engine.
 */
const documentCounts = new Map<string, number>();

/** documentsForTokens, memoised by what decides it (a tokenizer without a fingerprint is never memoised). */
function documentsForTokensOf(model: LoadedModel, docs: string[], tokens: number, corpusHash: string): number {
  const fp = model.tokenizer.fingerprint;
  if (!fp) return documentsForTokens(model, docs, tokens);
  const key = [fp, corpusHash, model.config.nCtx, tokens].join('\u0000');
  let n = documentCounts.get(key);
  if (n === undefined) {
    n = documentsForTokens(model, docs, tokens);
    documentCounts.set(key, n);
  }
  return n;
}

/** How many documents of the seeded shuffle it takes to reach `tokens` tokens (each truncated to the context). */
export function documentsForTokens(model: LoadedModel, docs: string[], tokens: number): number {
  let sum = 0;
  const order = shuffledOrder(docs.length);
  for (let k = 0; k < order.length; k++) {
    sum += Math.min(model.config.nCtx, model.tokenizer.encode(docs[order[k]]).length);
    if (sum >= tokens) return k + 1;
  }
  return docs.length;
}

interface Header {
  format: string;
  model: string;
  layer: number;
  corpus: string;
  corpusFile: string;
  documents: number;
  f: number;
  count: number;
  createdAt: string;
}

function statsFile(modelHash: string, layer: number, corpusHash: string, documents: number): string {
  return path.join(cacheRoot(), 'stats', shortHash(modelHash), `L${layer}-${shortHash(corpusHash)}-n${documents}.mom2`);
}

/**
 * Cache files are `magic | u32 header length | JSON header (space-padded to 8 bytes) | float64
 * body`: the header says what the numbers are (and carries the body's SHA-256), so a stale,
 * foreign or damaged file is recognised and recomputed instead of trusted.
 */
export function writeFloat64File(file: string, magic: Buffer, header: object, body: Float64Array): void {
  const bytes = new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
  const json = Buffer.from(JSON.stringify({ ...header, sha256 }), 'utf8');
  const pad = (8 - ((magic.length + 4 + json.length) % 8)) % 8;
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length + pad);
  writeAtomic(file, [magic, len, Buffer.concat([json, Buffer.alloc(pad, 0x20)]), bytes]);
}

/**
 * The header and body of such a file; null when missing or not `accept`ed (another layout:
 * `accept` gets the body length in values). A file that is unreadable, truncated or fails its
 * checksum is named in a warning, removed and reported as a miss, so it is recomputed.
 */
export function readFloat64File<H>(file: string, magic: Buffer, accept: (h: H, values: number) => boolean): { header: H; body: Float64Array } | null {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return null;
  }
  let header: H & { sha256?: unknown };
  let off: number;
  try {
    if (!buf.subarray(0, magic.length).equals(magic)) return damagedCache(file, 'wrong magic bytes');
    const hlen = buf.readUInt32LE(magic.length);
    const start = magic.length + 4;
    header = JSON.parse(buf.subarray(start, start + hlen).toString('utf8')) as H & { sha256?: unknown };
    off = start + hlen;
  } catch (e) {
    return damagedCache(file, `unreadable header: ${(e as Error).message}`);
  }
  if ((buf.length - off) % 8 !== 0) return damagedCache(file, `truncated: ${buf.length - off} body bytes`);
  if (typeof header.sha256 !== 'string') return null; // written before checksums: recomputed quietly
  const got = crypto.createHash('sha256').update(buf.subarray(off)).digest('hex');
  if (got !== header.sha256) return damagedCache(file, 'checksum mismatch');
  if (!accept(header, (buf.length - off) / 8)) return null;
  const body = new Float64Array((buf.length - off) / 8);
  new Uint8Array(body.buffer).set(buf.subarray(off));
  return { header, body };
}

function writeStatsFile(file: string, header: Header, sum: Float64Array): void {
  writeFloat64File(file, MAGIC, header, sum);
}

function readStatsFile(file: string, expectF: number): { header: Header; sum: Float64Array } | null {
  const r = readFloat64File<Header>(file, MAGIC, (h, values) => h.format === FORMAT && h.f === expectF && values === expectF * expectF);
  return r && { header: r.header, sum: r.body };
}

/**
 * Σ kkᵀ at `layer` over a corpus, from the disk cache when present. Progress (with ETA) goes
 * through `control`; a cancelled job throws CANCELLED and writes nothing.
 */
export async function layerStats(
  model: LoadedModel,
  layer: number,
  opts: StatsOptions = {},
  control: JobControl = {},
): Promise<LayerStats> {
  const started = performance.now();
  const { nLayer, dMlp: f, nCtx } = model.config;
  if (!Number.isInteger(layer) || layer < 0 || layer >= nLayer) {
    throw new FactLensError('INVALID_ARGUMENT', `layer ${layer} is outside 0..${nLayer - 1}`, { field: 'layer' });
  }
  if (opts.npz) return importNpzStats(opts.npz, layer, f, started);
  const corpusFile = path.resolve(opts.corpus ?? defaultCorpus(model));
  if (opts.corpus === undefined && !fs.existsSync(corpusFile)) {
    throw new FactLensError(
      'FILE_MISSING',
      `no statistics corpus: ${corpusFile} does not exist; name one (a .txt file with one document per line, ` +
        `or .jsonl with a "text" field; CLI: --corpus FILE), or import reference statistics (--stats-npz FILE)`,
      { file: corpusFile, field: 'corpus' },
    );
  }
  const docs = readCorpus(corpusFile);
  const limit = opts.samples ?? MAX_STATS_SAMPLES;
  if (!Number.isInteger(limit) || limit < 1) {
    throw new FactLensError('INVALID_ARGUMENT', `samples must be a positive integer, not ${opts.samples}`, { field: 'samples' });
  }
  const cHash = fileHash(corpusFile, 'corpus');
  let n = Math.min(limit, MAX_STATS_SAMPLES, docs.length);
  if (opts.minTokens !== undefined) n = Math.min(n, documentsForTokensOf(model, docs, opts.minTokens, cHash));
  const chosen = sampleDocuments(docs, n);
  const useCache = opts.cache !== false;
  const mHash = modelContentHash(model);
  const file = useCache ? statsFile(mHash, layer, cHash, chosen.length) : null;
  if (file) {
    cleanStaleTemps(path.dirname(file));
    const hit = readStatsMemo(file, f);
    if (hit) {
      return {
        layer,
        f,
        sum: hit.sum,
        count: hit.header.count,
        documents: hit.header.documents,
        corpus: corpusFile,
        cached: true,
        file,
        seconds: (performance.now() - started) / 1000,
      };
    }
  }

  const job = new Job(control, 'second-moment statistics');
  await job.checkpoint(0, `layer ${layer} statistics: tokenizing ${chosen.length} documents`);
  const rows = chosen.map((d) => model.tokenizer.encode(d).slice(0, nCtx)).filter((r) => r.length > 0);
  rows.sort((a, b) => b.length - a.length);
  const budget = opts.batchTokens ?? Math.max(3 * nCtx, 2048);
  const batches: number[][][] = [];
  for (let i = 0; i < rows.length; ) {
    const width = rows[i].length;
    const n = Math.max(1, Math.floor(budget / width));
    batches.push(rows.slice(i, i + n));
    i += n;
  }
  const totalTokens = rows.reduce((a, r) => a + r.length, 0);
  const base = baseModel(model);
  const sum = new Float64Array(f * f);
  let count = 0;
  const t0 = performance.now();
  for (const rowsOfBatch of batches) {
    const batch = padBatch(rowsOfBatch, 'right');
    const real: number[] = [];
    batch.mask.forEach((m, r) => m.forEach((x, p) => x && real.push(r * batch.width + p)));
    const kk = tf.tidy(() => {
      const reads = new Map<string, tf.Tensor3D>();
      const hook = interventionHook([{ site: site.mlpPost(layer), op: 'read' }], reads);
      forward(base, batch, { hook, stopAfterLayer: layer, logitsAt: 'none' });
      const k3 = reads.get(site.mlpPost(layer))!;
      const flat = tf.reshape(k3, [-1, f]) as tf.Tensor2D;
      const k = real.length === flat.shape[0] ? flat : tf.gather(flat, tf.tensor1d(real, 'int32'));
      return tf.matMul(tf.transpose(k), k);
    });
    const data = (await kk.data()) as Float32Array;
    kk.dispose();
    for (let i = 0; i < data.length; i++) sum[i] += data[i];
    count += real.length;
    const elapsed = (performance.now() - t0) / 1000;
    const eta = count > 0 ? (elapsed * (totalTokens - count)) / count : 0;
    await job.checkpoint(
      count / totalTokens,
      `layer ${layer} statistics: ${count.toLocaleString('en')}/${totalTokens.toLocaleString('en')} tokens, ETA ${eta.toFixed(0)} s`,
    );
  }
  // Symmetrise exactly (the float32 product is symmetric up to rounding of the summation order).
  for (let i = 0; i < f; i++) {
    for (let j = 0; j < i; j++) {
      const v = 0.5 * (sum[i * f + j] + sum[j * f + i]);
      sum[i * f + j] = v;
      sum[j * f + i] = v;
    }
  }
  if (file) {
    try {
      writeStatsFile(
        file,
        {
          format: FORMAT,
          model: mHash,
          layer,
          corpus: cHash,
          corpusFile,
          documents: chosen.length,
          f,
          count,
          createdAt: new Date().toISOString(),
        },
        sum,
      );
    } catch {
      /* an unwritable cache only costs a recomputation next time */
    }
  }
  return {
    layer,
    f,
    sum,
    count,
    documents: chosen.length,
    corpus: corpusFile,
    cached: false,
    file,
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * Reads the reference implementation's cache file
 * (`transformer.h.{l}.mlp.c_proj_float32_mom2_100000.npz`): `mom2.mom2` is the un-normalised
 * f×f sum and `mom2.count` the token count.
 */
export function importNpzStats(file: string, layer: number, f: number, started = performance.now()): LayerStats {
  const abs = path.resolve(file);
  const arrays = readNpz(abs, ['mom2.mom2', 'mom2.count']);
  const mom2 = arrays.get('mom2.mom2');
  const count = arrays.get('mom2.count');
  if (!mom2 || !count) {
    throw new FactLensError('INVALID_ARGUMENT', `${abs} has no 'mom2.mom2' and 'mom2.count' arrays (not a ROME statistics file)`, {
      file: abs,
      field: 'npz',
    });
  }
  if (mom2.shape.length !== 2 || mom2.shape[0] !== f || mom2.shape[1] !== f) {
    throw new FactLensError('INVALID_ARGUMENT', `${abs}: mom2.mom2 has shape [${mom2.shape}], the model's MLP width needs [${f}, ${f}]`, {
      file: abs,
      field: 'npz',
    });
  }
  return {
    layer,
    f,
    sum: mom2.data,
    count: count.data[0],
    documents: NaN,
    corpus: abs,
    cached: true,
    file: abs,
    seconds: (performance.now() - started) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// The Cholesky factor of Σkkᵀ, memoised in memory and, for statistics in the cache folder, on
// disk beside them (`.chol`: the packed lower triangle in float64). Factoring is O(f³/3) in
// float64 JavaScript: 0.2 s CPU for f = 1024 but ~9 s for GPT-2 small's f = 3072, which every
// new process (each `factlens edit`) would pay again.

/**
 * Statistics read from the disk cache, kept in memory for the later edits of the same process
 * (the extension's engine, an evaluation loop): reading and checksumming the f×f float64 file
 * took 0.3–0.5 s of every warm tinyworld edit. Keyed by path, size and modification time, so a
 * rewritten file is read again; at most STATS_MEMO_BYTES (a GPT-2-XL layer, 6400², is 328 MB
 * and is not kept). The sums are only read by their users.
 */
const STATS_MEMO_BYTES = 256 * 1024 * 1024;
const statsMemo = new Map<string, NonNullable<ReturnType<typeof readStatsFile>>>();

function readStatsMemo(file: string, f: number): ReturnType<typeof readStatsFile> {
  let key: string;
  try {
    const st = fs.statSync(file);
    key = `${file}|${st.size}|${st.mtimeMs}|${f}`;
  } catch {
    return null;
  }
  const kept = statsMemo.get(key);
  if (kept) return kept;
  const hit = readStatsFile(file, f);
  if (hit && hit.sum.byteLength <= STATS_MEMO_BYTES) {
    let bytes = hit.sum.byteLength;
    for (const v of statsMemo.values()) bytes += v.sum.byteLength;
    while (bytes > STATS_MEMO_BYTES && statsMemo.size) {
      const oldest = statsMemo.keys().next().value!;
      bytes -= statsMemo.get(oldest)!.sum.byteLength;
      statsMemo.delete(oldest);
    }
    statsMemo.set(key, hit);
  }
  return hit;
}

const CHOL_MAGIC = Buffer.from('FLCHOL\u0000\u0001', 'latin1');
const factorMemo = new Map<string, Cholesky>();

/** The Cholesky factor of the statistics' sum (the scale of C does not matter for u). */
export function statsFactor(stats: LayerStats): Cholesky {
  const key = stats.file ? `${stats.file}|${stats.count}` : null;
  const hit = key ? factorMemo.get(key) : undefined;
  if (hit) return hit;
  const f = stats.f;
  const disk = stats.file && stats.file.startsWith(cacheRoot()) ? `${stats.file}.chol` : null;
  let ch: Cholesky | null = disk ? readFactor(disk, f, stats.count) : null;
  if (!ch) {
    ch = cholesky(stats.sum, f);
    if (disk) {
      try {
        writeFactor(disk, ch, stats.count);
      } catch {
        /* recomputed next time */
      }
    }
  }
  if (key) {
    if (factorMemo.size >= 4) factorMemo.delete(factorMemo.keys().next().value!);
    factorMemo.set(key, ch);
  }
  return ch;
}

function writeFactor(file: string, ch: Cholesky, count: number): void {
  const n = ch.n;
  const packed = new Float64Array((n * (n + 1)) / 2);
  for (let i = 0, p = 0; i < n; i++) {
    packed.set(ch.l.subarray(i * n, i * n + i + 1), p);
    p += i + 1;
  }
  writeFloat64File(file, CHOL_MAGIC, { format: 'factlens-chol-v1', n, count, jitter: ch.jitter }, packed);
}

function readFactor(file: string, n: number, count: number): Cholesky | null {
  type H = { format: string; n: number; count: number; jitter: number };
  const r = readFloat64File<H>(file, CHOL_MAGIC, (h, values) => h.format === 'factlens-chol-v1' && h.n === n && h.count === count && values === (n * (n + 1)) / 2);
  if (!r) return null;
  const l = new Float64Array(n * n);
  for (let i = 0, p = 0; i < n; i++) {
    l.set(r.body.subarray(p, p + i + 1), i * n);
    p += i + 1;
  }
  return { n, l, jitter: r.header.jitter };
}
