/**
 * A private cache folder (FACTLENS_CACHE_DIR) and warning sink for one test file: set before its
 * tests, restored and removed after them, so cache tests never read or write the user's cache
 * and can look at the warnings a damaged entry gives.
 */
import { after, before } from 'node:test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { setWarningSink } from '../../engine/util/warn.js';

export interface TempCache {
  /** The cache folder (valid inside the file's tests). */
  readonly dir: string;
  /** Every warning the engine gave since the file started; tests may clear it. */
  readonly warnings: string[];
}

/** Registers the before/after hooks; call at the top level of a test file. */
export function useTempCache(prefix: string): TempCache {
  let dir = '';
  const warnings: string[] = [];
  let prevCache: string | undefined;
  let prevSink: (m: string) => void;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    prevCache = process.env.FACTLENS_CACHE_DIR;
    process.env.FACTLENS_CACHE_DIR = dir;
    prevSink = setWarningSink((m) => warnings.push(m));
  });
  after(() => {
    if (prevCache === undefined) delete process.env.FACTLENS_CACHE_DIR;
    else process.env.FACTLENS_CACHE_DIR = prevCache;
    setWarningSink(prevSink);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    get dir() {
      return dir;
    },
    warnings,
  };
}
