/**
 * The tokenizer library's lookup tables, kept on disk between processes.
 *
 * Building `@huggingface/tokenizers`' BPE model for GPT-2 took 150–220 ms of every CLI run
 * (a third of a `factlens trace`): JSON.parse of the 3.5 MB tokenizer.json, a Map of its
 * 50k-key vocabulary object, the id → token array, and a Map of 50k merge ranks keyed by
 * `JSON.stringify([a, b])`. These tables depend only on the file's bytes and the library's
 * version (Tokenizer.fingerprint), so after a full load they are written out as they are in
 * the library (a snapshot, not a re-derivation: whatever the library made of the file is what
 * comes back) and later loads build the library's Tokenizer from the small rest of the file and
 * put the tables back in place: ~30 ms.
 *
 * The format is binary: a JSON header (the file minus model.vocab / model.merges, counts),
 * Int32 arrays of ids and ranks, UTF-16 end offsets, and the strings as one UTF-16LE blob
 * (UTF-16 keeps any JS string exactly, lone surrogates included, and decodes with a copy).
 * A SHA-256 of everything after it follows the magic line; an entry that fails it, or does not
 * fit, is named in a warning and rebuilt (edit/hash.ts: damagedCache).
 *
 * The fields put back (BPE's tokens_to_ids, vocab, bpe_ranks, unk_token_id) are the library's
 * internals: TOKENIZER_LIBRARY pins the version inside every fingerprint, the fields' types are
 * checked before use (else the full load runs), and test/tokenizer-snapshot.test.ts compares a
 * snapshot load with a full one token for token.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { cacheRoot, damagedCache, writeAtomic } from '../edit/hash.js';
import { TOKENIZER_LIBRARY, type TokenizerJson } from './hf.js';

const MAGIC = Buffer.from('factlens-tokenizer-snapshot 1\n', 'latin1');
const SHA_BYTES = 32;

/** The BPE model fields of `@huggingface/tokenizers` the snapshot holds. */
export interface BpeTables {
  tokens_to_ids: Map<string, number>;
  vocab: Array<string | undefined>;
  bpe_ranks: Map<string, number>;
  unk_token_id: number | undefined;
}

export interface Snapshot {
  /** The tokenizer.json object the library was given, with an empty model.vocab and model.merges. */
  rest: TokenizerJson;
  maxVocabId: number;
  tables: BpeTables;
}

interface Header {
  fingerprint: string;
  library: string;
  endianness: string;
  maxVocabId: number;
  unkTokenId: number | null;
  /** Entries of tokens_to_ids, defined entries of vocab, entries of bpe_ranks; vocab's length. */
  counts: { map: number; vocab: number; ranks: number; vocabLength: number };
  rest: TokenizerJson;
}

/** The library's tables, when the model has the fields a snapshot holds (else null: no snapshot). */
export function bpeTables(model: unknown): BpeTables | null {
  const m = model as Partial<BpeTables> | null;
  if (!m || !(m.tokens_to_ids instanceof Map) || !Array.isArray(m.vocab) || !(m.bpe_ranks instanceof Map)) return null;
  if (m.unk_token_id !== undefined && typeof m.unk_token_id !== 'number') return null;
  return m as BpeTables;
}

/** The tokenizer.json object without its vocabulary and merges: what the library is built from. */
export function withoutTables(json: TokenizerJson): TokenizerJson {
  return { ...json, model: { ...json.model, vocab: {}, merges: [] } };
}

export function snapshotFile(fingerprint: string): string {
  return join(cacheRoot(), 'tokenizers', `${fingerprint.slice(0, 32)}.bin`);
}

function int32Bytes(values: ArrayLike<number>): Buffer {
  const a = Int32Array.from(values as ArrayLike<number>);
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Writes the snapshot of a tokenizer built from `json` (a read-only cache folder: skipped). */
export function writeSnapshot(fingerprint: string, json: TokenizerJson, maxVocabId: number, t: BpeTables): void {
  const strings: string[] = [];
  const mapIds: number[] = [];
  for (const [k, id] of t.tokens_to_ids) {
    strings.push(k);
    mapIds.push(id);
  }
  const vocabIdx: number[] = [];
  for (let i = 0; i < t.vocab.length; i++) {
    const s = t.vocab[i];
    if (s === undefined) continue;
    strings.push(s);
    vocabIdx.push(i);
  }
  const ranks: number[] = [];
  for (const [k, r] of t.bpe_ranks) {
    strings.push(k);
    ranks.push(r);
  }
  const ends = new Uint32Array(strings.length);
  let end = 0;
  strings.forEach((s, i) => (ends[i] = end += s.length));
  const header: Header = {
    fingerprint,
    library: TOKENIZER_LIBRARY,
    endianness: os.endianness(),
    maxVocabId,
    unkTokenId: t.unk_token_id ?? null,
    counts: { map: mapIds.length, vocab: vocabIdx.length, ranks: ranks.length, vocabLength: t.vocab.length },
    rest: withoutTables(json),
  };
  let headerBytes = Buffer.from(JSON.stringify(header), 'utf8');
  // Pad the header so the Int32 sections start 4-byte aligned after the length word.
  headerBytes = Buffer.concat([headerBytes, Buffer.alloc((4 - (headerBytes.length % 4)) % 4, 0x20)]);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(headerBytes.length);
  const body = [
    len,
    headerBytes,
    int32Bytes(mapIds),
    int32Bytes(vocabIdx),
    int32Bytes(ranks),
    Buffer.from(ends.buffer, ends.byteOffset, ends.byteLength),
    Buffer.from(strings.join(''), 'utf16le'),
  ];
  const sha = crypto.createHash('sha256');
  for (const b of body) sha.update(b);
  try {
    writeAtomic(snapshotFile(fingerprint), [MAGIC, sha.digest(), ...body]);
  } catch {
    /* a read-only cache folder: built in full next time */
  }
}

/** n 32-bit words at `offset`: a view where the bytes are aligned (large reads get their own ArrayBuffer), else a copy. */
function wordsAt<T extends Int32Array | Uint32Array>(Kind: { new (b: ArrayBufferLike, o: number, n: number): T }, buf: Buffer, offset: number, n: number): T {
  if ((buf.byteOffset + offset) % 4 === 0) return new Kind(buf.buffer, buf.byteOffset + offset, n);
  return new Kind(Uint8Array.prototype.slice.call(buf, offset, offset + n * 4).buffer, 0, n);
}

/**
 * The snapshot of the tokenizer with this fingerprint, or null: absent (quietly), or damaged or
 * not fitting (with a warning; the file is removed and rewritten by the full load).
 */
export function readSnapshot(fingerprint: string): Snapshot | null {
  const file = snapshotFile(fingerprint);
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return null;
  }
  const bad = (why: string) => damagedCache(file, why);
  const start = MAGIC.length + SHA_BYTES;
  if (buf.length < start + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return bad('not a tokenizer snapshot');
  const want = buf.subarray(MAGIC.length, start);
  if (!crypto.createHash('sha256').update(buf.subarray(start)).digest().equals(want)) return bad('checksum mismatch');
  const headerLen = buf.readUInt32LE(start);
  let h: Header;
  try {
    h = JSON.parse(buf.toString('utf8', start + 4, start + 4 + headerLen)) as Header;
  } catch (e) {
    return bad(`header is not JSON: ${(e as Error).message}`);
  }
  const c = h.counts;
  const ints = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  if (h.fingerprint !== fingerprint || h.library !== TOKENIZER_LIBRARY || !ints(h.maxVocabId) || !c || ![c.map, c.vocab, c.ranks, c.vocabLength].every(ints)) {
    return bad('its header does not fit the tokenizer');
  }
  // Written on another byte order (a shared cache folder): not damaged, just not readable here.
  if (h.endianness !== os.endianness()) return null;
  const nStrings = c.map + c.vocab + c.ranks;
  let off = start + 4 + headerLen;
  if (off + 8 * nStrings > buf.length) return bad('it is shorter than its header says');
  const mapIds = wordsAt(Int32Array, buf, off, c.map);
  const vocabIdx = wordsAt(Int32Array, buf, (off += 4 * c.map), c.vocab);
  const ranks = wordsAt(Int32Array, buf, (off += 4 * c.vocab), c.ranks);
  const ends = wordsAt(Uint32Array, buf, (off += 4 * c.ranks), nStrings);
  off += 4 * nStrings;
  const chars = (buf.length - off) / 2;
  for (let k = 0; k < nStrings; k++) if (ends[k] > chars || (k > 0 && ends[k] < ends[k - 1])) return bad('its strings do not fit their offsets');
  if (!Number.isInteger(chars) || (nStrings > 0 ? ends[nStrings - 1] : 0) !== chars) return bad('its strings do not fit their offsets');
  const blob = buf.toString('utf16le', off);
  let i = 0;
  let pos = 0;
  const next = (): string => {
    const s = blob.slice(pos, ends[i]);
    pos = ends[i++];
    return s;
  };
  const tokensToIds = new Map<string, number>();
  for (let k = 0; k < c.map; k++) tokensToIds.set(next(), mapIds[k]);
  const vocab = new Array<string | undefined>(c.vocabLength);
  for (let k = 0; k < c.vocab; k++) {
    const at = vocabIdx[k];
    if (at < 0 || at >= c.vocabLength) return bad('a vocabulary index is out of range');
    vocab[at] = next();
  }
  const bpeRanks = new Map<string, number>();
  for (let k = 0; k < c.ranks; k++) bpeRanks.set(next(), ranks[k]);
  return {
    rest: h.rest,
    maxVocabId: h.maxVocabId,
    tables: { tokens_to_ids: tokensToIds, vocab, bpe_ranks: bpeRanks, unk_token_id: h.unkTokenId ?? undefined },
  };
}
