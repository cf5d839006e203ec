/** Paths to the shared reference data and small comparison helpers for golden tests. */
import * as fs from 'node:fs';
import * as path from 'node:path';

/**
 * The shared reference data: `FACTLENS_SHARED` when set, otherwise the `shared` folder beside the
 * repository (`../shared` from its root). The one place tests and benchmarks find it.
 */
export const SHARED = process.env.FACTLENS_SHARED
  ? path.resolve(process.env.FACTLENS_SHARED)
  : path.resolve(__dirname, '..', '..', '..', 'shared');
export const TINYWORLD = path.join(SHARED, 'tinyworld');
export const ARCHS = path.join(SHARED, 'archs');
/**
 * Tinyworld's reference outputs, made by transformers in eval mode (golden-eval.json; the older
 * golden.json's forward and trace sections were made with dropout on and it is being removed).
 */
export const TINYWORLD_GOLDEN = path.join(TINYWORLD, 'golden-eval.json');

export function readJson<T = any>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function relDiff(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
}

/** One case of an architecture's (or tinyworld's) golden forward: ids and what transformers computed. */
export interface GoldenForwardCase {
  ids: number[];
  top10_ids: number[];
  top10_logprobs: number[];
  last_logits_first8: number[];
  hidden_last_token_norms: number[];
  hidden_last_token_first8: number[][];
}
