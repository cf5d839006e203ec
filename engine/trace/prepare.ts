/**
 * What every trace needs before restorations: tokens, the subject range, the answer, the
 * noise, and the restoration list. Shared by the fast and the naive method.
 */
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { encodePrompt } from '../predict.js';
import { subjectTokenRange } from '../tokenizer/index.js';
import { noiseValues, threeSigma } from './noise.js';
import { targetLogprobs, targetLogprobsAsync } from '../runtime/vocab.js';
import { TRACE_KINDS, windowForDepth, windowLayers, type TraceKind, type TraceOptions } from './types.js';

export interface Prepared {
  model: LoadedModel;
  prompt: string;
  subject: string;
  ids: number[];
  range: [number, number];
  samples: number;
  window: number;
  kinds: TraceKind[];
  sever: Array<'mlp' | 'attn'>;
  scale: number;
  scaleSource: string;
  /** Standard-normal noise × scale, flattened [samples][b − a][d]. */
  noise: Float32Array;
  /** The traced answer id: the expected answer's first token, or null for the greedy prediction. */
  expectedId: number | null;
}

export type ModSite = 'resid_pre' | 'attn_out' | 'mlp_out';

/** One change to a corrupted run: overwrite `site` of block `layer` at the restored token. */
export interface Mod {
  /** For resid_pre, `layer` may equal nLayer: the final residual stream before ln_f. */
  layer: number;
  site: ModSite;
  /** Clean value from the clean run, or the corrupted run's own value (severed paths). */
  source: 'clean' | 'corrupted';
}

export interface Restoration {
  /** Which score this restoration fills. */
  target: { kind: TraceKind | 'sever-mlp' | 'sever-attn'; token: number; layer: number };
  token: number;
  mods: Mod[];
}

export function prepare(model: LoadedModel, prompt: string, opts: TraceOptions): Prepared {
  const ids = encodePrompt(model, prompt);
  const L = model.config.nLayer;
  let range: [number, number];
  let subject: string;
  if (opts.subjectRange) {
    const [a, b] = opts.subjectRange;
    if (!Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b > ids.length || a >= b) {
      throw new FactLensError('INVALID_ARGUMENT', `subject range [${a}, ${b}) is not within the prompt's ${ids.length} tokens`, {
        field: 'subjectRange',
      });
    }
    range = [a, b];
    subject = model.tokenizer.decode(ids.slice(a, b));
  } else {
    subject = opts.subject ?? '';
    if (!subject.trim()) {
      throw new FactLensError('INVALID_ARGUMENT', 'no subject given: pass the subject text or mark it in the prompt as [subject]', {
        field: 'subject',
      });
    }
    const r = subjectTokenRange(model.tokenizer, ids, subject);
    if (!r) {
      throw new FactLensError('SUBJECT_NOT_FOUND', `the subject "${subject}" does not occur in the prompt "${prompt}"`, {
        field: 'subject',
        subject,
        prompt,
      });
    }
    range = r;
  }
  const samples = opts.samples ?? 10;
  if (!Number.isInteger(samples) || samples < 1 || samples > 1000) {
    throw new FactLensError('INVALID_ARGUMENT', `samples must be an integer from 1 to 1000, got ${samples}`, { field: 'samples' });
  }
  const window = opts.window ?? windowForDepth(L);
  if (!Number.isInteger(window) || window < 1) {
    throw new FactLensError('INVALID_ARGUMENT', `window must be a positive integer, got ${window}`, { field: 'window' });
  }
  const kinds = opts.kinds ?? [...TRACE_KINDS];
  for (const k of kinds) {
    if (!TRACE_KINDS.includes(k)) {
      throw new FactLensError('INVALID_ARGUMENT', `unknown trace kind '${k}'; kinds are ${TRACE_KINDS.join(', ')}`, { field: 'kinds' });
    }
  }
  let scale: number;
  let scaleSource: string;
  if (opts.noise === undefined || opts.noise === '3sigma') {
    ({ scale, source: scaleSource } = threeSigma(model, opts.noiseSubjects));
  } else if (typeof opts.noise === 'number' && Number.isFinite(opts.noise) && opts.noise >= 0) {
    scale = opts.noise;
    scaleSource = 'given';
  } else {
    throw new FactLensError('INVALID_ARGUMENT', `noise must be '3sigma' or a non-negative number, got ${String(opts.noise)}`, {
      field: 'noise',
    });
  }
  const d = model.config.dModel;
  const noise = noiseValues(samples, range[1] - range[0], d, opts.noiseValues, opts.seed ?? 1);
  for (let i = 0; i < noise.length; i++) noise[i] *= scale;

  let expectedId: number | null = null;
  if (opts.expect !== undefined) {
    const text = opts.expect.startsWith(' ') ? opts.expect : ` ${opts.expect}`;
    const toks = model.tokenizer.encode(text);
    if (!opts.expect.trim() || toks.length === 0) {
      throw new FactLensError('INVALID_ARGUMENT', 'the expected answer is empty', { field: 'expect' });
    }
    expectedId = toks[0];
  }
  return {
    model,
    prompt,
    subject,
    ids,
    range,
    samples,
    window,
    kinds,
    sever: opts.sever ?? [],
    scale,
    scaleSource,
    noise,
    expectedId,
  };
}

/** Every restoration a trace runs (rome-spec §1.6, §1.10). */
export function restorations(p: Prepared): Restoration[] {
  const L = p.model.config.nLayer;
  const T = p.ids.length;
  const out: Restoration[] = [];
  for (let t = 0; t < T; t++) {
    for (let l = 0; l < L; l++) {
      for (const kind of p.kinds) {
        if (kind === 'hidden') {
          // Restoring block l's output is restoring block l+1's input.
          out.push({ target: { kind, token: t, layer: l }, token: t, mods: [{ layer: l + 1, site: 'resid_pre', source: 'clean' }] });
        } else {
          const [lo, hi] = windowLayers(l, p.window, L);
          const site: ModSite = kind === 'mlp' ? 'mlp_out' : 'attn_out';
          const mods: Mod[] = [];
          for (let j = lo; j < hi; j++) mods.push({ layer: j, site, source: 'clean' });
          out.push({ target: { kind, token: t, layer: l }, token: t, mods });
        }
      }
      for (const frozen of p.sever) {
        // Restore h at (t, l) while the frozen module keeps its corrupted output at t above l.
        const site: ModSite = frozen === 'mlp' ? 'mlp_out' : 'attn_out';
        const mods: Mod[] = [{ layer: l + 1, site: 'resid_pre', source: 'clean' }];
        for (let j = l + 1; j < L; j++) mods.push({ layer: j, site, source: 'corrupted' });
        out.push({ target: { kind: frozen === 'mlp' ? 'sever-mlp' : 'sever-attn', token: t, layer: l }, token: t, mods });
      }
    }
  }
  return out;
}

/** The noise as a [samples·(b − a), d] tensor, in the row-major (sample, token) order of interventions. */
export function noiseTensor(p: Prepared): tf.Tensor2D {
  return tf.tensor2d(p.noise, [p.samples * (p.range[1] - p.range[0]), p.model.config.dModel]);
}

/**
 * softmax(logits)[answer] for each row of final-normalised hidden states [R, d], the quantity
 * every trace score averages (rome-spec §1.7): exp(z_answer − logsumexp(z)), fused with the
 * vocabulary projection (runtime/vocab.ts); the rows × V probabilities are never made.
 */
export function answerProbs(model: LoadedModel, rows: tf.Tensor2D, answer: number): Float32Array {
  const logprob = targetLogprobs(model, rows, new Int32Array(rows.shape[0]).fill(answer));
  return logprob.map(Math.exp);
}

/** answerProbs with asynchronous reads (the trace's form; WebGPU reads only asynchronously). */
export async function answerProbsAsync(model: LoadedModel, rows: tf.Tensor2D, answer: number): Promise<Float32Array> {
  const logprob = await targetLogprobsAsync(model, rows, new Int32Array(rows.shape[0]).fill(answer));
  return logprob.map(Math.exp);
}
