/** Loads models once per test file on the backend chosen by FACTLENS_TEST_BACKEND (default: auto). */
import { loadModel, type LoadedModel, type LoadOptions } from '../../engine/model/load.js';

const cache = new Map<string, Promise<LoadedModel>>();

export const TEST_BACKEND = process.env.FACTLENS_TEST_BACKEND || undefined;

export function model(opts: LoadOptions = {}): Promise<LoadedModel> {
  const key = JSON.stringify(opts);
  if (!cache.has(key)) cache.set(key, loadModel({ backend: TEST_BACKEND, ...opts }));
  return cache.get(key)!;
}
