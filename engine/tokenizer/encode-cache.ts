/**
 * Encodings of a list of texts, kept on disk between processes.
 *
 * The causal trace's noise scale tokenizes every subject of the model's fact set (1,815 on
 * tinyworld: ~115 ms of a 1.3 s `factlens trace`, in every process). The ids depend only on the
 * tokenizer (its files and library version: Tokenizer.fingerprint) and the texts, so an entry
 * is keyed by both and read back in about a millisecond. Entries are checksummed JSON
 * (edit/hash.ts: writeJsonCache); one that is damaged, or whose contents do not fit the
 * tokenizer, is recomputed, and a read-only cache folder only costs the tokenization.
 */
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { cacheRoot, readJsonCache, writeJsonCache, damagedCache } from '../edit/hash.js';
import type { Tokenizer } from './types.js';

/** Fewer texts than this are encoded faster than a cache file is read. */
const MIN_TEXTS = 64;

interface Entry {
  fingerprint: string;
  /** ids of text i: ids[offsets[i] .. offsets[i + 1]). */
  offsets: number[];
  ids: number[];
}

const memo = new Map<string, number[][]>();

/** Drops this process's copies, so the next encodeAll reads the disk (tests). */
export function forgetEncodings(): void {
  memo.clear();
}

function keyOf(fingerprint: string, texts: string[]): string {
  const h = crypto.createHash('sha256').update(`${fingerprint}\u0000${texts.length}\u0000`);
  for (const t of texts) h.update(`${t.length}\u0000`).update(t, 'utf8');
  return h.digest('hex');
}

/** The cache file of an encoding key. */
export function encodingCacheFile(key: string): string {
  return path.join(cacheRoot(), 'encodings', `${key.slice(0, 32)}.json`);
}

/** The entry's encodings, or null (with a warning for a damaged file) when it does not fit. */
function fromEntry(e: Entry | null, file: string, fingerprint: string, count: number, vocabSize: number): number[][] | null {
  if (!e) return null;
  const ok =
    e.fingerprint === fingerprint &&
    Array.isArray(e.offsets) &&
    Array.isArray(e.ids) &&
    e.offsets.length === count + 1 &&
    e.offsets[0] === 0 &&
    e.offsets[count] === e.ids.length &&
    e.offsets.every((o, i) => Number.isInteger(o) && (i === 0 || o >= e.offsets[i - 1])) &&
    e.ids.every((id) => Number.isInteger(id) && id >= 0 && id < vocabSize);
  if (!ok) return damagedCache(file, 'its encodings do not fit the tokenizer or the texts');
  return Array.from({ length: count }, (_, i) => e.ids.slice(e.offsets[i], e.offsets[i + 1]));
}

/**
 * tokenizer.encode(text) of every text, from the disk cache when an earlier process made it.
 * Tokenizers without a fingerprint, and short lists, are encoded directly.
 */
export function encodeAll(tokenizer: Tokenizer, texts: string[]): number[][] {
  const fingerprint = tokenizer.fingerprint;
  if (!fingerprint || texts.length < MIN_TEXTS) return texts.map((t) => tokenizer.encode(t));
  const key = keyOf(fingerprint, texts);
  const hit = memo.get(key);
  if (hit) return hit;
  const file = encodingCacheFile(key);
  let out = fromEntry(readJsonCache<Entry>(file), file, fingerprint, texts.length, tokenizer.vocabSize);
  if (!out) {
    out = texts.map((t) => tokenizer.encode(t));
    const offsets = [0];
    for (const ids of out) offsets.push(offsets[offsets.length - 1] + ids.length);
    try {
      writeJsonCache(file, { fingerprint, offsets, ids: out.flat() } satisfies Entry);
    } catch {
      /* a read-only cache folder: encoded again next time */
    }
  }
  memo.set(key, out);
  return out;
}
