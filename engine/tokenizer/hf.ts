/**
 * The `Tokenizer` implementation: a thin wrapper around `@huggingface/tokenizers`
 * (pure JS, no native code), which we checked reproduces the Hugging Face (Rust)
 * GPT-2 byte-level BPE id-for-id. The loader (load.ts) validates the files and hands
 * this module a tokenizer.json-shaped object, built from vocab.json + merges.txt when
 * there is no tokenizer.json.
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { FactLensError } from '../errors.js';
import type { Tokenizer } from './types.js';
import { bpeTables, type BuiltTables, type Snapshot } from './snapshot.js';

/**
 * The library and version package-lock.json installs (its package.json is not importable: the
 * package's exports hide it). Part of every Tokenizer.fingerprint, so cached encodings never
 * outlive an upgrade; test/tokenizer-encode-cache.test.ts fails when this falls behind.
 */
export const TOKENIZER_LIBRARY = '@huggingface/tokenizers@0.2.0';

/** One `added_tokens` entry of a tokenizer.json. */
export interface AddedTokenJson {
  id: number;
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

/** The parts of a Hugging Face tokenizer.json this module relies on (others pass through). */
export interface TokenizerJson {
  added_tokens: AddedTokenJson[];
  normalizer: unknown;
  pre_tokenizer: unknown;
  post_processor: unknown;
  decoder: unknown;
  model: {
    type: 'BPE';
    vocab: Record<string, number>;
    /** Pairs, or the file's own "a b" strings once a cached check found them valid (load.ts). */
    merges: [string, string][] | string[];
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export interface TokenizerMeta {
  /** File(s) the tokenizer came from, for error messages. */
  source: string;
  eosId: number | null;
  /** SHA-256 of what defines the encoding (see Tokenizer.fingerprint). */
  fingerprint: string;
  /**
   * The largest id in model.vocab, from the loader's validation pass (scanning GPT-2's 50k-key
   * vocabulary object again took ~40 ms of a CLI trace's load).
   */
  maxVocabId: number;
}

class HfBackedTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly eosId: number | null;
  readonly specialTokens: Map<string, number>;
  readonly fingerprint: string;
  private readonly hf: HfTokenizer;
  private readonly pieceCache = new Map<number, string>();

  constructor(hf: HfTokenizer, json: TokenizerJson, meta: TokenizerMeta) {
    this.hf = hf;
    this.eosId = meta.eosId;
    this.fingerprint = meta.fingerprint;
    let maxId = meta.maxVocabId;
    this.specialTokens = new Map();
    for (const t of json.added_tokens) {
      if (t.id > maxId) maxId = t.id;
      if (t.special) this.specialTokens.set(t.content, t.id);
    }
    this.vocabSize = maxId + 1;
  }

  encode(text: string): number[] {
    if (typeof text !== 'string') {
      throw new FactLensError('INVALID_ARGUMENT', `encode() expects a string, got ${typeof text}`, { field: 'text' });
    }
    if (text.length === 0) return [];
    return this.hf.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: number[]): string {
    if (!Array.isArray(ids)) {
      throw new FactLensError('INVALID_ARGUMENT', 'decode() expects an array of token ids', { field: 'ids' });
    }
    for (let i = 0; i < ids.length; i++) this.checkId(ids[i], i);
    if (ids.length === 0) return '';
    return this.hf.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  tokenToString(id: number): string {
    const cached = this.pieceCache.get(id);
    if (cached !== undefined) return cached;
    this.checkId(id);
    const s = this.hf.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    this.pieceCache.set(id, s);
    return s;
  }

  private checkId(id: unknown, index?: number): void {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.hf.id_to_token(id) === undefined) {
      const where = index === undefined ? '' : ` at index ${index}`;
      throw new FactLensError('INVALID_ARGUMENT', `Token id ${String(id)}${where} is not in the vocabulary (size ${this.vocabSize})`, {
        field: 'ids',
        id,
        ...(index === undefined ? {} : { index }),
      });
    }
  }
}

function newHf(json: TokenizerJson, source: string): HfTokenizer {
  try {
    // clean_up_tokenization_spaces would default to true in the library; HF (Rust) decode does no clean-up.
    return new HfTokenizer(json, { clean_up_tokenization_spaces: false });
  } catch (e) {
    const msg = e instanceof Error ? e.message : String(e);
    throw new FactLensError('BAD_TOKENIZER', `Unsupported tokenizer in ${source}: ${msg}`, { file: source });
  }
}

/**
 * Wraps a validated tokenizer.json object. Throws BAD_TOKENIZER if the library rejects it.
 * `keep` receives the library's lookup tables as built, for a snapshot (snapshot.ts).
 */
export function createTokenizer(json: TokenizerJson, meta: TokenizerMeta, keep?: (tables: BuiltTables) => void): Tokenizer {
  const hf = newHf(json, meta.source);
  const tables = keep && bpeTables(hf.model);
  if (tables) keep(tables);
  return new HfBackedTokenizer(hf, json, meta);
}

/**
 * The tokenizer of a snapshot: the library builds the small rest of the file (normalizer,
 * pre-tokenizer, decoder, added tokens) and gets its tables back in place of the empty ones.
 * Null when this library's model lacks the fields a snapshot holds: the caller loads in full.
 */
export function tokenizerFromSnapshot(snap: Snapshot, meta: Omit<TokenizerMeta, 'maxVocabId'>): Tokenizer | null {
  const hf = newHf(snap.rest, meta.source);
  if (!bpeTables(hf.model)) return null;
  Object.assign(hf.model as object, snap.tables);
  return new HfBackedTokenizer(hf, snap.rest, { ...meta, maxVocabId: snap.maxVocabId });
}
