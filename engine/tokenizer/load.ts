/**
 * Loads a GPT-2 style byte-level BPE tokenizer from a model folder: `tokenizer.json`
 * (Hugging Face tokenizers format) if present, else `vocab.json` + `merges.txt`.
 * Optional `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json`
 * supply the EOS token and (for the vocab.json path) the special tokens.
 *
 * Every problem with these files is a FactLensError('BAD_TOKENIZER') whose data names
 * the file, and the line (vocab.json / merges.txt / JSON syntax errors) or field
 * (tokenizer.json) where possible.
 */
import * as crypto from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { FactLensError } from '../errors.js';
import { createTokenizer, tokenizerFromSnapshot, TOKENIZER_LIBRARY, type AddedTokenJson, type TokenizerJson } from './hf.js';
import type { Tokenizer } from './types.js';
import { readRegularFile, jsonErrorMessage } from '../util/files.js';
import { readSnapshot, writeSnapshot, type Lookup } from './snapshot.js';

type JsonObject = Record<string, unknown>;

const DEFAULT_SPECIAL = '<|endoftext|>';
const NAMED_SPECIAL_KEYS = ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token'];

function bad(message: string, data: { file: string; [key: string]: unknown }): FactLensError {
  return new FactLensError('BAD_TOKENIZER', message, data);
}

function isRecord(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** 1-based line and column of a UTF-16 offset in `text`. */
function lineColAt(text: string, pos: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  const end = Math.min(pos, text.length);
  for (let i = 0; i < end; i++) {
    if (text.charCodeAt(i) === 10) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: end - lineStart + 1 };
}

function readBytes(file: string): Buffer {
  try {
    return readRegularFile(file);
  } catch (e) {
    throw bad(`Cannot read tokenizer file ${file}: ${e instanceof Error ? e.message : String(e)}`, { file });
  }
}

function textOf(bytes: Buffer): string {
  const text = bytes.toString('utf8');
  return text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
}

function readText(file: string): string {
  return textOf(readBytes(file));
}

function parseJsonText(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    const msg = jsonErrorMessage(e);
    const m = /at position (\d+)/.exec(msg);
    const pos = m ? Number(m[1]) : /end of JSON input/i.test(msg) ? text.length : undefined;
    if (pos === undefined) throw bad(`${file} is not valid JSON: ${msg}`, { file });
    const { line, column } = lineColAt(text, pos);
    throw bad(`${file} is not valid JSON (line ${line}, column ${column}): ${msg}`, { file, line, column });
  }
}

function readJsonObject(file: string, bytes?: Buffer): { text: string; value: JsonObject } {
  const text = bytes ? textOf(bytes) : readText(file);
  const value = parseJsonText(text, file);
  if (!isRecord(value)) throw bad(`${file} must contain a JSON object`, { file });
  return { text, value };
}

function readOptionalJsonObject(file: string): JsonObject | undefined {
  return isFile(file) ? readJsonObject(file).value : undefined;
}

/** Best-effort 1-based line of a vocab key in the JSON text (undefined if not found). */
function lineOfKey(text: string | undefined, key: string): number | undefined {
  if (text === undefined) return undefined;
  const pos = text.indexOf(`${JSON.stringify(key)}:`);
  const pos2 = pos >= 0 ? pos : text.indexOf(JSON.stringify(key));
  return pos2 >= 0 ? lineColAt(text, pos2).line : undefined;
}

/** The vocabulary, checked, and its largest id (found in the same pass: the tokenizer's size needs it). */
function validateVocab(vocab: unknown, file: string, field: string | undefined, text?: string): { vocab: Record<string, number>; maxId: number } {
  if (!isRecord(vocab)) {
    throw bad(`${field ? `${field} in ` : ''}${file} must be an object mapping token strings to ids`, { file, ...(field ? { field } : {}) });
  }
  // for…in over the parsed object: Object.entries would build 50k [key, value] arrays first.
  let maxId = -1;
  for (const token in vocab) {
    const id = vocab[token];
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      const line = lineOfKey(text, token);
      const where = field ? `${field}[${JSON.stringify(token)}]` : `entry ${JSON.stringify(token)}`;
      throw bad(`${file}: ${where} has id ${JSON.stringify(id)}; expected a non-negative integer${line ? ` (line ${line})` : ''}`, {
        file,
        token,
        ...(field ? { field: `${field}[${JSON.stringify(token)}]` } : {}),
        ...(line ? { line } : {}),
      });
    }
    if (id > maxId) maxId = id;
  }
  return { vocab: vocab as Record<string, number>, maxId };
}

/** Checks that both halves of a merge and their concatenation are in the vocabulary (as HF does). */
function checkMergeInVocab(
  pair: [string, string],
  vocab: Record<string, number>,
  where: string,
  data: { file: string; [key: string]: unknown },
): void {
  for (const t of [pair[0], pair[1], pair[0] + pair[1]]) {
    if (!Object.hasOwn(vocab, t)) {
      throw bad(`${where}: merge "${pair[0]} ${pair[1]}" uses token ${JSON.stringify(t)}, which is not in the vocabulary`, { ...data, token: t });
    }
  }
}

function parseMergesTxt(text: string, file: string, vocab: Record<string, number>): [string, string][] {
  const merges: [string, string][] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].endsWith('\r') ? lines[i].slice(0, -1) : lines[i];
    if (line.startsWith('#version') || line.trim() === '') continue;
    const parts = line.split(' ');
    if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
      throw bad(`${file} line ${i + 1}: expected two tokens separated by one space, got ${JSON.stringify(line)}`, { file, line: i + 1 });
    }
    const pair: [string, string] = [parts[0], parts[1]];
    checkMergeInVocab(pair, vocab, `${file} line ${i + 1}`, { file, line: i + 1 });
    merges.push(pair);
  }
  return merges;
}

function parseJsonMerges(merges: unknown, file: string, vocab: Record<string, number>): [string, string][] {
  if (!Array.isArray(merges)) throw bad(`${file}: model.merges must be an array`, { file, field: 'model.merges' });
  const out: [string, string][] = new Array(merges.length);
  for (let i = 0; i < merges.length; i++) {
    const m: unknown = merges[i];
    const field = `model.merges[${i}]`;
    let pair: [string, string] | undefined;
    if (typeof m === 'string') {
      const parts = m.split(' ');
      if (parts.length === 2 && parts[0] !== '' && parts[1] !== '') pair = [parts[0], parts[1]];
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string' && m[0] !== '' && m[1] !== '') {
      pair = [m[0], m[1]];
    }
    if (!pair) {
      throw bad(`${file}: ${field} must be "a b" or ["a", "b"], got ${JSON.stringify(m)}`, { file, field });
    }
    checkMergeInVocab(pair, vocab, `${file}: ${field}`, { file, field });
    out[i] = pair;
  }
  return out;
}

function parseAddedTokens(v: unknown, file: string): AddedTokenJson[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw bad(`${file}: added_tokens must be an array`, { file, field: 'added_tokens' });
  return v.map((t: unknown, i): AddedTokenJson => {
    const field = `added_tokens[${i}]`;
    if (!isRecord(t) || typeof t.content !== 'string' || t.content === '' || typeof t.id !== 'number' || !Number.isSafeInteger(t.id) || t.id < 0) {
      throw bad(`${file}: ${field} must have a non-empty string "content" and a non-negative integer "id"`, { file, field });
    }
    const special = t.special === true;
    return {
      id: t.id,
      content: t.content,
      single_word: t.single_word === true,
      lstrip: t.lstrip === true,
      rstrip: t.rstrip === true,
      normalized: typeof t.normalized === 'boolean' ? t.normalized : !special,
      special,
    };
  });
}

/** `"<|endoftext|>"` or `{ "content": "<|endoftext|>", ... }` → the token text. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string' && v !== '') return v;
  if (isRecord(v) && typeof v.content === 'string' && v.content !== '') return v.content;
  return undefined;
}

interface SideConfigs {
  tokenizerConfig?: JsonObject;
  specialTokensMap?: JsonObject;
}

function readSideConfigs(dir: string): SideConfigs {
  return {
    tokenizerConfig: readOptionalJsonObject(join(dir, 'tokenizer_config.json')),
    specialTokensMap: readOptionalJsonObject(join(dir, 'special_tokens_map.json')),
  };
}

/** Token texts the configs declare special (bos/eos/unk/... and additional_special_tokens). */
function namedSpecialTokens(cfg: SideConfigs): string[] {
  const out: string[] = [];
  for (const c of [cfg.tokenizerConfig, cfg.specialTokensMap]) {
    if (!c) continue;
    for (const key of NAMED_SPECIAL_KEYS) {
      const s = tokenContent(c[key]);
      if (s !== undefined) out.push(s);
    }
    const extra = c.additional_special_tokens;
    if (Array.isArray(extra)) {
      for (const e of extra) {
        const s = tokenContent(e);
        if (s !== undefined) out.push(s);
      }
    }
  }
  return out;
}

function eosContent(cfg: SideConfigs): string {
  return tokenContent(cfg.tokenizerConfig?.eos_token) ?? tokenContent(cfg.specialTokensMap?.eos_token) ?? DEFAULT_SPECIAL;
}

function lookupId(content: string, added: AddedTokenJson[], vocab: Record<string, number> | Lookup): number | null {
  const a = added.find((t) => t.content === content);
  if (a) return a.id;
  if (typeof vocab.get === 'function' && typeof vocab.has === 'function') return (vocab as Lookup).get(content) ?? null;
  return Object.hasOwn(vocab, content) ? (vocab as Record<string, number>)[content] : null;
}

/**
 * The tokenizer of an earlier full load's snapshot (snapshot.ts), or null: the caller loads in
 * full. Counts the load either way (tokenizerLoadStats).
 */
function fromSnapshot(fingerprint: string, cfg: SideConfigs, source: string): Tokenizer | null {
  const snap = readSnapshot(fingerprint);
  let t: Tokenizer | null = null;
  if (snap) {
    const eosId = lookupId(eosContent(cfg), snap.rest.added_tokens, snap.tables.tokens_to_ids);
    t = tokenizerFromSnapshot(snap, { source, eosId, fingerprint });
  }
  if (t) tokenizerLoadStats.fromSnapshot++;
  else tokenizerLoadStats.full++;
  return t;
}

function loadFromTokenizerJson(dir: string, file: string): Tokenizer {
  const cfg = readSideConfigs(dir); // small files first, so their errors come without parsing megabytes
  const bytes = readBytes(file);
  const fingerprint = fingerprintOf([bytes]);
  // A file loaded before comes back from its snapshot (snapshot.ts): no parse, no checks.
  const saved = fromSnapshot(fingerprint, cfg, file);
  if (saved) return saved;
  const { value: raw } = readJsonObject(file, bytes);
  const model = raw.model;
  if (!isRecord(model)) throw bad(`${file}: missing "model" object`, { file, field: 'model' });
  const type = model.type;
  if (!(type === 'BPE' || (type === undefined && 'merges' in model))) {
    throw bad(`${file}: model.type is ${JSON.stringify(type)}; only byte-level BPE tokenizers are supported`, { file, field: 'model.type' });
  }
  const { vocab, maxId } = validateVocab(model.vocab, file, 'model.vocab');
  const merges = parseJsonMerges(model.merges, file, vocab);
  const addedTokens = parseAddedTokens(raw.added_tokens, file);
  const json: TokenizerJson = {
    ...raw,
    added_tokens: addedTokens,
    normalizer: raw.normalizer ?? null,
    pre_tokenizer: raw.pre_tokenizer ?? null,
    post_processor: raw.post_processor ?? null,
    decoder: raw.decoder ?? null,
    model: { ...model, type: 'BPE', vocab, merges },
  };
  // The side configs decide only the EOS id, never an encoding: the file's bytes are all of it.
  const meta = { source: file, eosId: lookupId(eosContent(cfg), addedTokens, vocab), fingerprint, maxVocabId: maxId };
  return createTokenizer(json, meta, (tables) => writeSnapshot(fingerprint, json, maxId, tables));
}

/** The side files whose contents the vocab.json + merges.txt path reads (added and special tokens, add_prefix_space). */
const SIDE_FILES = ['tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json'];

function loadFromVocabMerges(dir: string, vocabFile: string, mergesFile: string): Tokenizer {
  const cfg = readSideConfigs(dir);
  const source = `${vocabFile} + ${mergesFile}`;
  const vocabBytes = readBytes(vocabFile);
  const mergesBytes = readBytes(mergesFile);
  // Every file this path reads decides the tokenizer it builds, so all of them key its snapshot
  // (a side file that only moves the EOS id costs a snapshot, never a wrong one).
  const sides = SIDE_FILES.flatMap((name) => {
    const f = join(dir, name);
    return isFile(f) ? [`${name}=`, readBytes(f)] : [`${name}-`];
  });
  const fingerprint = fingerprintOf([vocabBytes, mergesBytes, ...sides]);
  const saved = fromSnapshot(fingerprint, cfg, source);
  if (saved) return saved;
  const { text: vocabText, value: vocabRaw } = readJsonObject(vocabFile, vocabBytes);
  const { vocab, maxId } = validateVocab(vocabRaw, vocabFile, undefined, vocabText);
  const mergesText = textOf(mergesBytes);
  const merges = parseMergesTxt(mergesText, mergesFile, vocab);

  // Added tokens, as transformers' GPT2Tokenizer would register them.
  const added = new Map<string, AddedTokenJson>();
  const addToken = (content: string, id: number, special: boolean, flags?: JsonObject): void => {
    const prev = added.get(content);
    if (prev) {
      prev.special ||= special;
      return;
    }
    added.set(content, {
      id,
      content,
      single_word: flags?.single_word === true,
      lstrip: flags?.lstrip === true,
      rstrip: flags?.rstrip === true,
      normalized: typeof flags?.normalized === 'boolean' ? flags.normalized : !special,
      special,
    });
  };
  const decoderMap = cfg.tokenizerConfig?.added_tokens_decoder;
  if (isRecord(decoderMap)) {
    for (const [idStr, t] of Object.entries(decoderMap)) {
      const id = Number(idStr);
      const content = tokenContent(t);
      if (Number.isSafeInteger(id) && id >= 0 && content !== undefined && isRecord(t)) addToken(content, id, t.special === true, t);
    }
  }
  const addedTokensFile = join(dir, 'added_tokens.json');
  const addedJson = readOptionalJsonObject(addedTokensFile);
  if (addedJson) {
    for (const [content, id] of Object.entries(addedJson)) {
      if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
        throw bad(`${addedTokensFile}: ${JSON.stringify(content)} has id ${JSON.stringify(id)}; expected a non-negative integer`, {
          file: addedTokensFile,
          token: content,
        });
      }
      addToken(content, id, false);
    }
  }
  for (const content of [...namedSpecialTokens(cfg), DEFAULT_SPECIAL]) {
    const id = added.get(content)?.id ?? (Object.hasOwn(vocab, content) ? vocab[content] : undefined);
    if (id !== undefined) addToken(content, id, true);
  }
  const addedTokens = [...added.values()].sort((a, b) => a.id - b.id);

  const addPrefixSpace = cfg.tokenizerConfig?.add_prefix_space === true;
  // The tokenizer.json transformers' GPT2 converter would write for these files.
  const json: TokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const meta = { source, eosId: lookupId(eosContent(cfg), addedTokens, vocab), fingerprint, maxVocabId: maxId };
  return createTokenizer(json, meta, (tables) => writeSnapshot(fingerprint, json, maxId, tables));
}

/** For tests: loads that built the tokenizer in full, and loads that took a snapshot. */
export const tokenizerLoadStats = { full: 0, fromSnapshot: 0 };

/**
 * Tokenizer.fingerprint over the given file bytes or texts, with the library version (a new
 * release may encode differently). Bytes are hashed as read: hashing the 3.5 MB of GPT-2's
 * tokenizer.json as a decoded string cost ~10 ms more.
 */
function fingerprintOf(parts: Array<string | Buffer>): string {
  const h = crypto.createHash('sha256').update(`${TOKENIZER_LIBRARY}\u0000`);
  for (const t of parts) {
    const b = typeof t === 'string' ? Buffer.from(t, 'utf8') : t;
    h.update(`${b.length}\u0000`).update(b);
  }
  return h.digest('hex');
}

/**
 * Loads the tokenizer of the model folder `dir`: tokenizer.json if present, else
 * vocab.json + merges.txt. Throws BAD_TOKENIZER (naming the folder or file) otherwise.
 */
export function loadTokenizer(dir: string): Tokenizer {
  if (!isDir(dir)) {
    throw bad(`Tokenizer folder not found: ${dir}`, { file: dir });
  }
  const tokenizerJson = join(dir, 'tokenizer.json');
  if (isFile(tokenizerJson)) return loadFromTokenizerJson(dir, tokenizerJson);
  const vocabFile = join(dir, 'vocab.json');
  const mergesFile = join(dir, 'merges.txt');
  const hasVocab = isFile(vocabFile);
  const hasMerges = isFile(mergesFile);
  if (hasVocab && hasMerges) return loadFromVocabMerges(dir, vocabFile, mergesFile);
  if (hasVocab !== hasMerges) {
    const missing = hasVocab ? 'merges.txt' : 'vocab.json';
    throw bad(`No tokenizer.json in ${dir}, and ${missing} is missing (vocab.json and merges.txt are needed together)`, {
      file: join(dir, missing),
      dir,
    });
  }
  throw bad(`No tokenizer in ${dir}: expected tokenizer.json, or vocab.json and merges.txt`, { file: dir, dir });
}
