/**
 * The set-up every editing test file shares: a fresh temporary FACTLENS_CACHE_DIR (so caches
 * start cold and nothing leaks between files), the shared model loaded before the tests, and
 * after them every edit reverted and the cache removed. Call it at the top level of the file:
 *
 *   let m: LoadedModel;
 *   const CACHE = editSession('verdict', (x) => (m = x));
 */
import { after, before } from 'node:test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { LoadedModel } from '../../engine/model/load.js';
import { revertAllEdits } from '../../engine/edit/apply.js';
import { model as sharedModel } from './model.js';

export function editSession(name: string, onModel: (m: LoadedModel) => void): string {
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), `factlens-${name}-test-`));
  process.env.FACTLENS_CACHE_DIR = cache;
  let loaded: LoadedModel | undefined;
  before(async () => {
    loaded = await sharedModel();
    onModel(loaded);
  });
  after(() => {
    if (loaded) revertAllEdits(loaded);
    fs.rmSync(cache, { recursive: true, force: true });
  });
  return cache;
}
