/**
 * Non-finite outputs are an error, never a number. NaN weights, an overflowing noise scale
 * or a degenerate normalisation make probabilities NaN (JSON: null) with no other sign; this
 * check turns that into NON_FINITE naming the first activation site (in forward order) whose
 * values stop being finite, found by one diagnostic forward pass that reads every site.
 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { padBatch } from './batch.js';
import { forward } from './forward.js';

function allFinite(values: ArrayLike<number>): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i])) return false;
  return true;
}

/** The first site whose activations are not all finite on these token rows; null if none. */
export function firstNonFiniteSite(model: LoadedModel, rows: number[][]): { site: string; tokens: number[] } | null {
  // Per site, a [B, T] flag of non-finite positions, kept out of the tidy and read after it.
  const flags: Array<{ site: string; bad: tf.Tensor }> = [];
  tf.tidy(() => {
    forward(model, padBatch(rows, 'right'), {
      hook: (site, x) => {
        flags.push({ site, bad: tf.keep(tf.logicalNot(tf.all(tf.isFinite(x), -1))) });
        return x;
      },
    });
  });
  let found: { site: string; tokens: number[] } | null = null;
  for (const { site, bad } of flags) {
    if (!found) {
      const f = bad.dataSync();
      const t = bad.shape[1] ?? 1;
      const tokens = new Set<number>();
      for (let i = 0; i < f.length; i++) if (f[i]) tokens.add(i % t);
      if (tokens.size) found = { site, tokens: [...tokens].sort((a, b) => a - b) };
    }
    bad.dispose();
  }
  return found;
}

/**
 * Throws NON_FINITE when `values` (outputs computed from `rows`) hold a NaN or infinity.
 * `what` says which output ("the next-token probabilities of the prompt").
 */
export function checkFinite(model: LoadedModel, values: ArrayLike<number>, rows: number[][], what: string): void {
  if (allFinite(values)) return;
  const at = firstNonFiniteSite(model, rows);
  const where = at
    ? `the first non-finite values appear at ${at.site} (token position${at.tokens.length === 1 ? '' : 's'} ${at.tokens.slice(0, 8).join(', ')})`
    : 'the activations are finite, so the logits or their normalisation overflowed';
  throw new FactLensError(
    'NON_FINITE',
    `${what} of ${model.name} are not finite numbers: ${where}; check the checkpoint's weights and config.json (${model.dir})`,
    { file: model.dir, ...(at ? { site: at.site } : {}) },
  );
}
