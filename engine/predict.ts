/** Next-token prediction for a prompt: the `factlens predict` command and `predict` request. */
import type { LoadedModel } from './model/load.js';
import { forward } from './runtime/forward.js';
import { padBatch } from './runtime/batch.js';
import { FactLensError } from './errors.js';
import { checkFinite } from './runtime/finite.js';
import { logSoftmaxRows } from './runtime/logsumexp.js';
import { tidyData } from './util/scope.js';

import type { Candidate, Prediction } from './protocol/predict.js';

export type { Candidate, Prediction, TokenView } from './protocol/predict.js';

export function encodePrompt(model: LoadedModel, prompt: string, field = 'prompt'): number[] {
  if (typeof prompt !== 'string' || prompt.length === 0) {
    throw new FactLensError('INVALID_ARGUMENT', `${field} is empty`, { field });
  }
  const ids = model.tokenizer.encode(prompt);
  if (ids.length > model.config.nCtx) {
    throw new FactLensError(
      'PROMPT_TOO_LONG',
      `${field} is ${ids.length} tokens; ${model.name} reads at most ${model.config.nCtx}`,
      { field, tokens: ids.length, limit: model.config.nCtx },
    );
  }
  return ids;
}

/** Log-probabilities of the next token after each of several token rows: [rows][V]. */
export function nextTokenLogprobs(model: LoadedModel, rows: number[][]): Float32Array[] {
  const batch = padBatch(rows, 'right');
  const flat = tidyData(() => logSoftmaxRows(forward(model, batch).logits!));
  checkFinite(model, flat, rows, 'the next-token log-probabilities');
  const v = model.config.vocabSize;
  return rows.map((_, r) => flat.slice(r * v, (r + 1) * v));
}

export function topK(logprobs: Float32Array, k: number, model: LoadedModel): Candidate[] {
  const kk = Math.max(1, Math.min(k, logprobs.length));
  // Partial selection: keep a sorted list of the best kk ids.
  const best: number[] = [];
  for (let i = 0; i < logprobs.length; i++) {
    const v = logprobs[i];
    if (best.length < kk || v > logprobs[best[best.length - 1]]) {
      let j = best.length < kk ? best.length : kk - 1;
      if (best.length < kk) best.push(i);
      while (j > 0 && logprobs[best[j - 1]] < v) {
        best[j] = best[j - 1];
        j--;
      }
      best[j] = i;
    }
  }
  return best.map((id) => ({
    id,
    token: model.tokenizer.tokenToString(id),
    prob: Math.exp(logprobs[id]),
    logprob: logprobs[id],
  }));
}

export function predict(model: LoadedModel, prompt: string, k = 10): Prediction {
  const ids = encodePrompt(model, prompt);
  const [lp] = nextTokenLogprobs(model, [ids]);
  return {
    model: model.name,
    backend: model.backend,
    tokens: ids.map((id) => ({ id, text: model.tokenizer.tokenToString(id) })),
    top: topK(lp, k, model),
  };
}
