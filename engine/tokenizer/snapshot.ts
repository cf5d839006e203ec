/**
 * The tokenizer library's lookup tables, kept on disk between processes.
 *
 * Building `@huggingface/tokenizers`' BPE model for GPT-2 took 150–220 ms of every CLI run
 * (a third of a `factlens trace`): JSON.parse of the 3.5 MB tokenizer.json, a Map of its
 * 50k-key vocabulary object, the id → token array, and a Map of 50k merge ranks keyed by
 * `JSON.stringify([a, b])`. These tables depend only on the files' bytes (tokenizer.json, or
 * vocab.json + merges.txt with their side files) and the library's version
 * (Tokenizer.fingerprint), so after a full load they are written out as the library
 * built them (a snapshot, not a re-derivation: whatever the library made of the file is what
 * comes back), and later loads build the library's Tokenizer from the small rest of the file and
 * put read-only views of the tables in place of the empty ones.
 *
 * The views read the file as it is: open-addressing hash tables (Int32 slots, FNV-1a over
 * UTF-16 code units) whose keys are compared against one UTF-16 string of all the table's
 * strings, and an id → token array whose entries are cut from it on first use. Rebuilding 100k
 * Map entries and 150k strings instead cost ~35 ms and two young-generation collections that
 * copied them (~13 ms); the views cost a read, a checksum and one string.
 *
 * The format: a magic line, a SHA-256 of the rest, a JSON header (the file minus model.vocab /
 * model.merges, counts, table sizes), Int32 sections and the strings as UTF-16LE (which keeps
 * any JS string exactly, lone surrogates included). An entry that fails the checksum or does not
 * fit is named in a warning and rebuilt (edit/hash.ts: damagedCache).
 *
 * The fields put back (BPE's tokens_to_ids, vocab, bpe_ranks, unk_token_id) are the library's
 * internals, used only through get / has / set and indexing: TOKENIZER_LIBRARY pins the version
 * inside every fingerprint, the fields' types are checked before use (else the full load runs),
 * and test/tokenizer-snapshot.test.ts compares a snapshot load with a full one token for token.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { join } from 'node:path';
import { cacheRoot, damagedCache, writeAtomic } from '../edit/hash.js';
import { TOKENIZER_LIBRARY, type TokenizerJson } from './hf.js';

const MAGIC = Buffer.from('factlens-tokenizer-snapshot 2\n', 'latin1');
const SHA_BYTES = 32;

/** The part of a Map the library calls on its lookup tables. */
export interface Lookup {
  get(key: string): number | undefined;
  has(key: string): boolean;
  set(key: string, value: number): unknown;
}

/** The BPE model fields of `@huggingface/tokenizers` the snapshot holds. */
export interface BpeTables {
  tokens_to_ids: Lookup;
  vocab: Array<string | undefined>;
  bpe_ranks: Lookup;
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
  /** Entries of tokens_to_ids and of bpe_ranks, their hash tables' slot counts, vocab's length. */
  counts: { map: number; ranks: number; mapSlots: number; rankSlots: number; vocabLength: number };
  rest: TokenizerJson;
}

/** The tables as the library builds them: real Maps. */
export type BuiltTables = BpeTables & { tokens_to_ids: Map<string, number>; bpe_ranks: Map<string, number> };

/** The library's freshly built tables, or null when the model lacks them (no snapshot). */
export function bpeTables(model: unknown): BuiltTables | null {
  const m = model as Partial<BpeTables> | null;
  if (!m || !(m.tokens_to_ids instanceof Map) || !Array.isArray(m.vocab) || !(m.bpe_ranks instanceof Map)) return null;
  if (m.unk_token_id !== undefined && typeof m.unk_token_id !== 'number') return null;
  return m as BuiltTables;
}

/** The tokenizer.json object without its vocabulary and merges: what the library is built from. */
function withoutTables(json: TokenizerJson): TokenizerJson {
  return { ...json, model: { ...json.model, vocab: {}, merges: [] } };
}

function snapshotFile(fingerprint: string): string {
  return join(cacheRoot(), 'tokenizers', `${fingerprint.slice(0, 32)}.bin`);
}

/** FNV-1a over the UTF-16 code units of s. */
function fnv(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** Slots for n keys: a power of two at least twice n (probe chains stay short). */
function slotCount(n: number): number {
  let s = 8;
  while (s < 2 * n) s *= 2;
  return s;
}

/** The open-addressing table of keys[0..n) (slot → 1 + key index, 0 = empty), hashed as lookups hash. */
function hashTable(keys: string[]): Int32Array {
  const slots = new Int32Array(slotCount(keys.length));
  const mask = slots.length - 1;
  keys.forEach((k, i) => {
    let at = fnv(k) & mask;
    while (slots[at] !== 0) at = (at + 1) & mask;
    slots[at] = i + 1;
  });
  return slots;
}

const words = (a: Int32Array | Uint32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Writes the snapshot of a tokenizer built from `json` (a read-only cache folder: skipped). */
export function writeSnapshot(fingerprint: string, json: TokenizerJson, maxVocabId: number, t: BuiltTables): void {
  const mapKeys = [...t.tokens_to_ids.keys()];
  const rankKeys = [...t.bpe_ranks.keys()];
  // Strings: the map's keys, the ranks' keys, then vocab entries that are not a map key.
  const strings = [...mapKeys, ...rankKeys];
  const index = new Map(mapKeys.map((k, i) => [k, i]));
  const vocabStr = new Int32Array(t.vocab.length).fill(-1);
  t.vocab.forEach((s, id) => {
    if (s === undefined) return;
    let at = index.get(s);
    if (at === undefined) {
      at = strings.push(s) - 1;
      index.set(s, at);
    }
    vocabStr[id] = at;
  });
  const ends = new Uint32Array(strings.length);
  let end = 0;
  strings.forEach((s, i) => (ends[i] = end += s.length));
  const mapSlots = hashTable(mapKeys);
  const rankSlots = hashTable(rankKeys);
  const header: Header = {
    fingerprint,
    library: TOKENIZER_LIBRARY,
    endianness: os.endianness(),
    maxVocabId,
    unkTokenId: t.unk_token_id ?? null,
    counts: { map: mapKeys.length, ranks: rankKeys.length, mapSlots: mapSlots.length, rankSlots: rankSlots.length, vocabLength: t.vocab.length },
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
    words(Int32Array.from(mapKeys, (k) => t.tokens_to_ids.get(k)!)),
    words(mapSlots),
    words(Int32Array.from(rankKeys, (k) => t.bpe_ranks.get(k)!)),
    words(rankSlots),
    words(vocabStr),
    words(Uint32Array.from([strings.length])),
    words(ends),
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

/** The snapshot's strings: one UTF-16 string and each string's end in it. */
class Strings {
  constructor(
    private readonly all: string,
    private readonly ends: Uint32Array,
  ) {}
  at(i: number): string {
    return this.all.slice(i === 0 ? 0 : this.ends[i - 1], this.ends[i]);
  }
  /** Whether string i is `key`, without cutting it out. */
  is(i: number, key: string): boolean {
    const from = i === 0 ? 0 : this.ends[i - 1];
    if (this.ends[i] - from !== key.length) return false;
    for (let k = 0; k < key.length; k++) if (this.all.charCodeAt(from + k) !== key.charCodeAt(k)) return false;
    return true;
  }
}

/**
 * A read-only hash table of the snapshot (keys: strings [base, base + n)), plus a Map for keys
 * set later (the library sets none after its constructor; kept so `set` means what it says).
 */
class TableLookup implements Lookup {
  private readonly added = new Map<string, number>();
  constructor(
    private readonly strings: Strings,
    private readonly base: number,
    private readonly slots: Int32Array,
    private readonly values: Int32Array,
  ) {}
  get(key: string): number | undefined {
    const extra = this.added.get(key);
    if (extra !== undefined) return extra;
    const mask = this.slots.length - 1;
    for (let at = fnv(key) & mask; ; at = (at + 1) & mask) {
      const e = this.slots[at];
      if (e === 0) return undefined;
      if (this.strings.is(this.base + e - 1, key)) return this.values[e - 1];
    }
  }
  has(key: string): boolean {
    return this.get(key) !== undefined;
  }
  set(key: string, value: number): this {
    this.added.set(key, value);
    return this;
  }
}

/** id → token, each entry cut from the snapshot's strings when first read. */
function lazyVocab(strings: Strings, vocabStr: Int32Array): Array<string | undefined> {
  const cut: Array<string | undefined> = new Array(vocabStr.length);
  return new Proxy(cut, {
    get(target, prop, receiver) {
      if (typeof prop === 'string') {
        const id = prop.length > 0 && prop.length < 10 && prop.charCodeAt(0) >= 48 && prop.charCodeAt(0) <= 57 ? Number(prop) : NaN;
        if (Number.isInteger(id) && id >= 0 && id < vocabStr.length && String(id) === prop) {
          if (target[id] === undefined && vocabStr[id] >= 0) target[id] = strings.at(vocabStr[id]);
          return target[id];
        }
      }
      return Reflect.get(target, prop, receiver);
    },
  });
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
  if (buf.length < start + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return bad('not a tokenizer snapshot of this version');
  if (!crypto.createHash('sha256').update(buf.subarray(start)).digest().equals(buf.subarray(MAGIC.length, start))) return bad('checksum mismatch');
  const headerLen = buf.readUInt32LE(start);
  let h: Header;
  try {
    h = JSON.parse(buf.toString('utf8', start + 4, start + 4 + headerLen)) as Header;
  } catch (e) {
    return bad(`header is not JSON: ${(e as Error).message}`);
  }
  const c = h.counts;
  const ints = (x: unknown) => Number.isSafeInteger(x) && (x as number) >= 0;
  const pow2 = (x: number) => x >= 8 && (x & (x - 1)) === 0;
  if (
    h.fingerprint !== fingerprint ||
    h.library !== TOKENIZER_LIBRARY ||
    !ints(h.maxVocabId) ||
    !c ||
    ![c.map, c.ranks, c.mapSlots, c.rankSlots, c.vocabLength].every(ints) ||
    !pow2(c.mapSlots) ||
    !pow2(c.rankSlots) ||
    c.mapSlots < 2 * c.map ||
    c.rankSlots < 2 * c.ranks
  ) {
    return bad('its header does not fit the tokenizer');
  }
  // Written on another byte order (a shared cache folder): not damaged, just not readable here.
  if (h.endianness !== os.endianness()) return null;
  let off = start + 4 + headerLen;
  const fixedWords = c.map + c.mapSlots + c.ranks + c.rankSlots + c.vocabLength + 1;
  if (off + 4 * fixedWords > buf.length) return bad('it is shorter than its header says');
  const take = <T extends Int32Array | Uint32Array>(Kind: { new (b: ArrayBufferLike, o: number, n: number): T }, n: number): T => {
    const a = wordsAt(Kind, buf, off, n);
    off += 4 * n;
    return a;
  };
  const mapIds = take(Int32Array, c.map);
  const mapSlots = take(Int32Array, c.mapSlots);
  const rankValues = take(Int32Array, c.ranks);
  const rankSlots = take(Int32Array, c.rankSlots);
  const vocabStr = take(Int32Array, c.vocabLength);
  const nStrings = take(Uint32Array, 1)[0];
  if (nStrings < c.map + c.ranks || off + 4 * nStrings > buf.length) return bad('its string count does not fit');
  const ends = take(Uint32Array, nStrings);
  const chars = (buf.length - off) / 2;
  if (!Number.isInteger(chars) || (nStrings > 0 ? ends[nStrings - 1] : 0) !== chars) return bad('its strings do not fit their offsets');
  for (let k = 1; k < nStrings; k++) if (ends[k] < ends[k - 1]) return bad('its strings do not fit their offsets');
  for (const [slots, n] of [[mapSlots, c.map], [rankSlots, c.ranks]] as const) {
    let used = 0;
    for (let k = 0; k < slots.length; k++) {
      if (slots[k] < 0 || slots[k] > n) return bad('a hash slot is out of range');
      if (slots[k] !== 0) used++;
    }
    // Every key in one slot, and the rest empty: a lookup's probe always ends.
    if (used !== n) return bad('its hash tables do not fit their counts');
  }
  for (let k = 0; k < vocabStr.length; k++) if (vocabStr[k] < -1 || vocabStr[k] >= nStrings) return bad('a vocabulary entry is out of range');
  const strings = new Strings(buf.toString('utf16le', off), ends);
  return {
    rest: h.rest,
    maxVocabId: h.maxVocabId,
    tables: {
      tokens_to_ids: new TableLookup(strings, 0, mapSlots, mapIds),
      vocab: lazyVocab(strings, vocabStr),
      bpe_ranks: new TableLookup(strings, c.map, rankSlots, rankValues),
      unk_token_id: h.unkTokenId ?? undefined,
    },
  };
}
