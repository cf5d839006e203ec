/**
 * Content hashes that key every editing cache (statistics, context templates, layer choice):
 * the model's hash is SHA-256 over the bytes of its safetensors files (in checkpoint order),
 * a corpus's hash is SHA-256 over the file. Hashing a multi-GB checkpoint takes seconds, so
 * each file's digest is memoised in memory and on disk (`<cache>/hashes.json`), keyed by
 * absolute path, size and modification time; a changed file gets a new entry.
 *
 * The cache root is `$FACTLENS_CACHE_DIR`, else `$XDG_CACHE_HOME/factlens`, else
 * `~/.cache/factlens`. All writes are atomic (temporary file + rename), so concurrent processes
 * and interrupted runs never leave a half-written entry behind; the temporary files of a
 * process that died mid-write are removed by the next write into that folder. Every cache file
 * carries a SHA-256 of its contents, checked on every read: a damaged file is named in a
 * warning and recomputed, never trusted.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FactLensError } from '../errors.js';
import { openCheckpoint } from '../model/checkpoint.js';
import type { LoadedModel } from '../model/load.js';
import { warn } from '../util/warn.js';

export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FACTLENS_CACHE_DIR) return path.resolve(env.FACTLENS_CACHE_DIR);
  if (env.XDG_CACHE_HOME) return path.join(path.resolve(env.XDG_CACHE_HOME), 'factlens');
  return path.join(os.homedir(), '.cache', 'factlens');
}


/** Temporary files of writeAtomic: `<name>.tmp-<pid>-<random>`. */
const TEMP_FILE = /\.tmp-(\d+)-[0-9a-f]{8}$/;
/** A temporary file this old is stale even if its pid is alive again (pids are reused). */
const STALE_TEMP_MS = 24 * 3600_000;

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the temporary files left in `dir` by writers that died (kill -9) mid-write. */
export function cleanStaleTemps(dir: string): number {
  let removed = 0;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  const now = Date.now();
  for (const name of names) {
    const m = TEMP_FILE.exec(name);
    if (!m) continue;
    const file = path.join(dir, name);
    try {
      const st = fs.lstatSync(file);
      if (!st.isFile()) continue;
      if (!processAlive(Number(m[1])) || now - st.mtimeMs > STALE_TEMP_MS) {
        fs.rmSync(file, { force: true });
        removed++;
      }
    } catch {
      /* raced with another cleaner */
    }
  }
  return removed;
}

/** Writes a file atomically: a unique temporary file beside it, then rename. */
export function writeAtomic(file: string, data: string | Uint8Array | Array<Uint8Array>): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  cleanStaleTemps(path.dirname(file));
  const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      for (const part of Array.isArray(data) ? data : [data]) {
        const bytes = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
        for (let done = 0; done < bytes.byteLength; ) done += fs.writeSync(fd, bytes, done, bytes.byteLength - done);
      }
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** A damaged cache file: named in a warning, removed (so it is rewritten), and reported as a miss. */
export function damagedCache(file: string, why: string): null {
  warn(`cache file ${file} is damaged (${why}); recomputing it`);
  try {
    fs.rmSync(file, { force: true });
  } catch {
    /* read-only cache: recomputed each time */
  }
  return null;
}

const JSON_CACHE_HEAD = 'factlens-cache sha256=';

/** Writes a JSON cache entry: a first line with the SHA-256 of the JSON text below it. */
export function writeJsonCache(file: string, value: unknown): void {
  const text = JSON.stringify(value, null, 1);
  writeAtomic(file, `${JSON_CACHE_HEAD}${crypto.createHash('sha256').update(text, 'utf8').digest('hex')}\n${text}`);
}

/**
 * Reads a JSON cache entry written by writeJsonCache; null when absent. A file whose checksum
 * does not match is warned about and recomputed; one from before checksums is
 * recomputed quietly.
 */
export function readJsonCache<T>(file: string): T | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const nl = text.indexOf('\n');
  // An entry from before checksums: recomputed (and rewritten with one), quietly.
  if (text.startsWith('{')) return null;
  if (!text.startsWith(JSON_CACHE_HEAD) || nl < 0) return damagedCache(file, 'no checksum line');
  const want = text.slice(JSON_CACHE_HEAD.length, nl);
  const body = text.slice(nl + 1);
  if (crypto.createHash('sha256').update(body, 'utf8').digest('hex') !== want) return damagedCache(file, 'checksum mismatch');
  try {
    return JSON.parse(body) as T;
  } catch (e) {
    return damagedCache(file, `not JSON: ${(e as Error).message}`);
  }
}

const fileMemo = new Map<string, string>();
const HASH_MEMO = 'hashes.json';

function memoKey(file: string, st: fs.Stats): string {
  return `${file}\u0000${st.size}\u0000${st.mtimeMs}`;
}

/** SHA-256 (hex) of a file's bytes, memoised by path, size and mtime (memory and disk). */
export function fileHash(fileIn: string, field = 'file'): string {
  const file = path.resolve(fileIn);
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new FactLensError('FILE_MISSING', `${file} does not exist`, { file, field });
  }
  if (!st.isFile()) throw new FactLensError('FILE_MISSING', `${file} is not a file`, { file, field });
  const key = memoKey(file, st);
  const hit = fileMemo.get(key);
  if (hit) return hit;
  const memoFile = path.join(cacheRoot(), HASH_MEMO);
  const disk = readJsonCache<Record<string, string>>(memoFile) ?? {};
  if (typeof disk[key] === 'string') {
    fileMemo.set(key, disk[key]);
    return disk[key];
  }
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(16 << 20);
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  const digest = h.digest('hex');
  fileMemo.set(key, digest);
  // Only large files are worth a disk entry (small ones hash faster than the JSON round trip).
  if (st.size > 64 << 20) {
    try {
      const fresh = readJsonCache<Record<string, string>>(memoFile) ?? {};
      fresh[key] = digest;
      writeJsonCache(memoFile, fresh);
    } catch {
      /* a read-only cache folder only costs a re-hash next time */
    }
  }
  return digest;
}

const modelMemo = new WeakMap<object, string>();
const dirMemo = new Map<string, string>();

/**
 * The content hash of a model: SHA-256 over the per-file digests of its safetensors files, in
 * checkpoint order (hex, 64 chars). Computed once per model and memoised. Config and tokenizer
 * files are not part of it (they cannot change the weights' statistics, only their reading).
 */
export function modelContentHash(model: LoadedModel | string): string {
  if (typeof model !== 'string') {
    const m = modelMemo.get(model);
    if (m) return m;
  }
  const dir = path.resolve(typeof model === 'string' ? model : model.dir);
  const ckpt = openCheckpoint(dir);
  const digests = ckpt.files.map((f) => fileHash(f, 'model'));
  const key = `${dir}\u0000${digests.join(',')}`;
  let h = dirMemo.get(key);
  if (!h) {
    h = digests.length === 1 ? digests[0] : crypto.createHash('sha256').update(digests.join('\n')).digest('hex');
    dirMemo.set(key, h);
  }
  if (typeof model !== 'string') modelMemo.set(model, h);
  return h;
}

/** The first 16 hex digits, for file names. */
export function shortHash(h: string): string {
  return h.slice(0, 16);
}
