/** Causal tracing (rome-spec §1): `trace()` for one prompt, fast by default, naive on request. */
import type { LoadedModel } from '../model/load.js';
import { Job, type JobControl } from '../util/jobs.js';
import { prepare, restorations } from './prepare.js';
import { traceFast } from './fast.js';
import { traceNaive } from './naive.js';
import { threeSigmaAsync } from './noise.js';
import { traceQuality } from './quality.js';
import type { TraceKind, TraceOptions, TraceResult } from './types.js';
import { FactLensError } from '../errors.js';
import { checkFinite } from '../runtime/finite.js';

export * from './types.js';
export { parseMarkedPrompt } from './marked.js';

/**
 * Engine-internal narrowing of a trace (not part of the wire options): `tokens: 'last-subject'`
 * restores only the subject's last token, every other cell stays NaN. Each token's
 * restorations are computed independently (fast.ts), so the cells that are computed equal
 * those of the full trace; the layer choice (edit/hparams.ts) reads only that row.
 */
export interface TraceScope {
  tokens?: 'last-subject';
}

export async function trace(
  model: LoadedModel,
  prompt: string,
  opts: TraceOptions = {},
  control: JobControl = {},
  scope: TraceScope = {},
): Promise<TraceResult> {
  const started = performance.now();
  // Reads of the trace are asynchronous (the WebGPU backend has no synchronous read in Node).
  if (opts.noise === undefined || opts.noise === '3sigma') await threeSigmaAsync(model, opts.noiseSubjects);
  const p = prepare(model, prompt, opts);
  const all = restorations(p);
  const list = scope.tokens === 'last-subject' ? all.filter((r) => r.target.token === p.range[1] - 1) : all;
  const job = new Job(control, 'trace');
  const method = opts.method ?? 'fast';
  const raw = method === 'naive' ? await traceNaive(p, list, job) : await traceFast(p, list, job);
  checkTraceFinite(model, p.ids, p.scale, raw);
  const T = p.ids.length;
  const L = model.config.nLayer;
  const grid = () => Array.from({ length: T }, () => new Array<number>(L).fill(NaN));
  const scores: Partial<Record<TraceKind, number[][]>> = {};
  const stderr: Partial<Record<TraceKind, number[][]>> = {};
  const severed: Partial<Record<'mlp' | 'attn', number[][]>> = {};
  list.forEach((r, i) => {
    const { kind, token, layer } = r.target;
    if (kind === 'sever-mlp' || kind === 'sever-attn') {
      const k = kind === 'sever-mlp' ? 'mlp' : 'attn';
      (severed[k] ??= grid())[token][layer] = raw.scores[i];
    } else {
      (scores[kind] ??= grid())[token][layer] = raw.scores[i];
      (stderr[kind] ??= grid())[token][layer] = raw.stderr[i];
    }
  });
  const naiveWork = (list.length + 1) * T * L;
  const tokens = p.ids.map((id) => model.tokenizer.tokenToString(id));
  const answer = model.tokenizer.tokenToString(raw.answerId);
  const quality = traceQuality({
    answer,
    clean_prob: raw.cleanProb,
    corrupted_prob: raw.corruptedProb,
    expected: p.expectedId === null ? undefined : { token: answer, predicted: raw.greedyId === p.expectedId, greedy: model.tokenizer.tokenToString(raw.greedyId) },
    samples: p.samples,
    scores,
    stderr,
    tokens,
  });
  return {
    prompt,
    subject: p.subject,
    ids: p.ids,
    tokens,
    subject_range: p.range,
    answer: { id: raw.answerId, token: answer, prob: raw.cleanProb },
    answer_id: raw.answerId,
    clean_prob: raw.cleanProb,
    corrupted_prob: raw.corruptedProb,
    noise_scale: p.scale,
    noise_source: p.scaleSource,
    samples: p.samples,
    window: p.window,
    kinds: p.kinds,
    scores,
    stderr,
    corrupted_stderr: raw.corruptedStderr,
    quality,
    ...(p.sever.length ? { severed } : {}),
    method,
    backend: model.backend,
    elapsed_ms: Math.round(performance.now() - started),
    work: { token_layers: raw.tokenLayers, naive_token_layers: naiveWork },
  };
}

/**
 * NaN probabilities are an error, not a result: a clean run that is not finite points at the
 * model (the first non-finite site is named); corrupted runs that are not finite (while the
 * clean one is) at the noise, e.g. a scale so large that the embeddings overflow float32.
 */
function checkTraceFinite(model: LoadedModel, ids: number[], scale: number, raw: { cleanProb: number; corruptedProb: number; scores: ArrayLike<number> }): void {
  checkFinite(model, [raw.cleanProb], [ids], 'the clean run\'s answer probability');
  const bad = !Number.isFinite(raw.corruptedProb) ? 'the corrupted run' : Array.prototype.some.call(raw.scores, (x: number) => !Number.isFinite(x)) ? 'a restored run' : null;
  if (bad) {
    throw new FactLensError(
      'NON_FINITE',
      `${bad}'s answer probability is not a finite number with noise scale ${scale}: the corrupted embeddings overflow; use a smaller noise scale`,
      { field: 'noise', noise: scale },
    );
  }
}
