/**
 * ROME (rome-spec §2): a rank-one update W_l += u ⊗ v_r of the MLP output matrix of one
 * layer, so that the subject's key maps to a value v* that makes the model say the target.
 *
 *  - k̄: the MLP key (site `blocks.{l}.mlp.hook_post`) at the subject's last token, averaged
 *    over the 21 context templates (§2.6); the bare prompt's key k_bare and value m_bare come
 *    from the same batch (its row 0 is the "{}" template).
 *  - u = normalize(C⁻¹k̄), C the second moment of keys (stats.ts), by a float64 Cholesky solve.
 *  - v* = target_init + δ, δ optimised with Adam (§2.7): δ is added to the MLP output
 *    (`blocks.{l}.hook_mlp_out`) at each row's subject-last index; loss = NLL of the target
 *    tokens over the 21 rewriting prompts + kl_factor·KL(p‖p_init) at the subject-last token of
 *    "{} is a" + v_weight_decay·‖δ‖/‖target_init‖²; radius clamp; early stop at 5e-2; no
 *    step on the last iteration; right padding.
 *  - v_r: 'consistent' (v* − (k̄·W + b)) / (k̄·u), so the layer maps k̄ to v* (the default for
 *    the reference models); 'reference' (v* − m_bare) / (k_bare·u) (the original code), so it
 *    maps k_bare to v*; 'keys' / 'subject-keys' (multiKeyUpdate, updateKeys: the default for
 *    other models) v_r = δ with u such that every rewriting key (and, for 'subject-keys', the
 *    subject's own key) moves by exactly δ.
 *
 * Speed (measured in bench/edit.ts; CPU per v* step on tinyworld ≈ 0.5 s vs 2.0 s for the plain
 * full forward with the stock gradient):
 *  - position p of row r depends on δ only if p ≥ s_r (the subject-last index), and only from
 *    block l's output on: one δ-free forward caches every layer's keys/values and block l's
 *    output; each step then runs blocks l+1… on positions s_r… only, attending to the cached
 *    keys/values of the earlier positions ('suffix' mode; 'blocks' and 'full' are kept for
 *    comparison and give the same loss to float32 rounding);
 *  - only the target positions (and the KL position) are unembedded;
 *  - gradients go through fastgrad.ts: frozen-weight products with cached Wᵀ (no weight copies
 *    on the tape) and a BatchMatMul gradient without transposed matmuls;
 *  - the weight-decay term and its gradient are computed on the host (‖δ‖ has no gradient at 0).
 */
import * as crypto from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { attentionBias, block, finalNorm, selectRows, unembed, type KV } from '../runtime/decoder-forward.js';
import { unembedOf } from '../model/unembedding.js';
import { forward } from '../runtime/forward.js';
import { padBatch, type PaddedBatch } from '../runtime/batch.js';
import { interventionHook } from '../runtime/interventions.js';
import { site, type Hook } from '../runtime/sites.js';
import { subjectLastIndexInTemplate } from '../tokenizer/index.js';
import { Job, subControl, type JobControl } from '../util/jobs.js';
import { disposeAll, scoped } from '../util/scope.js';
import { modelContentHash } from './hash.js';
import { statsTokens, checkLayer, romeHparams, type RomeHparams } from './hparams.js';
import { cholesky, choleskySolve, dot, norm, vecMat } from './linalg.js';
import { FrozenWeights, withFastGradients } from './fastgrad.js';
import { vocabLoss, type VocabLossParts } from './vocab-loss.js';
import { layerStats, statsFactor, type LayerStats } from './stats.js';
import { contextTemplates } from './templates.js';
import { nullSpace, project, type NullSpace } from './nullspace.js';
import { ROME_FORMULAS, type EditRecord, type EditRequest, type RankOneDelta, type RomeFormula } from './types.js';
import { fillTemplate } from '../../formats/template.js';

export interface RomeOptions {
  /** Hyperparameter overrides (layer, steps, lr, ...). */
  hparams?: Partial<RomeHparams>;
  /** Context templates to use instead of the model's generated ones. */
  templates?: string[];
  templateSeed?: number;
  /** Documents for the statistics (default: all of the corpus, capped at 100,000). */
  statsSamples?: number;
  /** Reference .npz statistics to import instead of computing them. */
  statsNpz?: string;
  /** Facts file for the layer choice by causal tracing (default: the model's facts.jsonl). */
  facts?: string;
  /**
   * What each v* step recomputes: 'suffix' (default) blocks l+1… on the positions from each
   * row's subject on, with cached keys/values of the earlier positions; 'blocks' blocks l… on
   * all positions; 'full' the whole forward (the plain reference computation). Same loss up
   * to float32 rounding; kept selectable for measurement.
   */
  vForward?: 'suffix' | 'blocks' | 'full';
  /** Transposed-matmul-free gradient (default true). */
  fastGrad?: boolean;
  /**
   * The v* loss's vocabulary end as one fused op (vocab-loss.ts; default where reads are
   * synchronous and the mode is not 'full'); false keeps the op-by-op form.
   */
  fusedVocab?: boolean;
  /** Called after every v* loss evaluation. */
  onStep?: (s: VStep) => void;
  /**
   * Where δ is added: the MLP output of the layer (ROME) or the block's output, the residual
   * stream (MEMIT's z, rome-spec §5.3). At the subject-last position the two differ only in
   * the reference vector (target_init) that sets the clamp radius and the weight decay: the
   * MLP output enters the residual stream additively, so the forward from there is the same.
   */
  at?: 'mlp' | 'resid';
  /**
   * AlphaEdit's null-space projection (nullspace.ts): true, or the eigenvalue threshold relative
   * to the mean eigenvalue (default 0.25). The request's `nullSpace` also turns it on.
   */
  nullSpace?: boolean | number;
}

export interface VStep {
  step: number;
  loss: number;
  nll: number;
  kl: number;
  weightDecay: number;
  /** Mean probability of the target tokens over the rewriting prompts. */
  targetProb: number;
  deltaNorm: number;
}

export interface RomeKeys {
  /** k̄: the key averaged over the templates [f]. */
  kBar: Float64Array;
  /** Every template's key [f] (row 0: the bare prompt), in template order. */
  all: Float64Array[];
  /** The bare prompt's key [f] and MLP output (value incl. bias) [d]. */
  kBare: Float64Array;
  mBare: Float64Array;
  /** Sentences and subject-last indices per template. */
  rows: Array<{ ids: number[]; index: number }>;
}

export interface VResult {
  vStar: Float64Array;
  targetInit: Float64Array;
  delta: Float64Array;
  steps: VStep[];
  seconds: number;
}

/** Normalised request: target with its leading space and token ids. */
export interface PreparedRequest {
  prompt: string;
  subject: string;
  target: string;
  targetIds: number[];
}

export function prepareRequest(model: LoadedModel, req: EditRequest): PreparedRequest {
  if (!req || typeof req !== 'object') throw new FactLensError('INVALID_ARGUMENT', 'the edit request is missing', { field: 'request' });
  const subject = typeof req.subject === 'string' ? req.subject.trim() : '';
  if (!subject) throw new FactLensError('INVALID_ARGUMENT', 'the subject is empty', { field: 'subject' });
  if (typeof req.prompt !== 'string' || req.prompt.trim().length === 0) {
    throw new FactLensError('INVALID_ARGUMENT', 'the prompt is empty', { field: 'prompt' });
  }
  let prompt = req.prompt;
  const holes = prompt.split('{}').length - 1;
  if (holes > 1) {
    throw new FactLensError('INVALID_ARGUMENT', `the prompt must contain "{}" once, where the subject goes (found ${holes}): ${JSON.stringify(prompt)}`, {
      field: 'prompt',
    });
  }
  if (holes === 0) {
    // A full sentence: the subject's first occurrence becomes the "{}".
    const at = prompt.indexOf(subject);
    if (at < 0) {
      throw new FactLensError(
        'SUBJECT_NOT_FOUND',
        `the prompt ${JSON.stringify(prompt)} has no "{}" and does not contain the subject ${JSON.stringify(subject)}`,
        { field: 'subject', subject, prompt },
      );
    }
    prompt = prompt.slice(0, at) + '{}' + prompt.slice(at + subject.length);
  }
  const at = prompt.indexOf('{}');
  if (at > 0 && !prompt.slice(0, at).endsWith(' ')) {
    throw new FactLensError('INVALID_ARGUMENT', `the text before the subject must end with a space: ${JSON.stringify(prompt)}`, {
      field: 'prompt',
    });
  }
  if (typeof req.target !== 'string' || req.target.trim().length === 0) {
    throw new FactLensError('INVALID_ARGUMENT', 'the target is empty', { field: 'target' });
  }
  const target = req.target.startsWith(' ') ? req.target : ` ${req.target}`;
  const targetIds = model.tokenizer.encode(target);
  if (targetIds.length === 0) throw new FactLensError('INVALID_ARGUMENT', 'the target has no tokens', { field: 'target' });
  return { prompt, subject, target, targetIds };
}

/** The template sentence (with the prompt) tokenized per §2.4, with the subject-last index. */
export function templateRow(model: LoadedModel, template: string, req: PreparedRequest): { ids: number[]; index: number } {
  const r = subjectLastIndexInTemplate(model.tokenizer, fillTemplate(template, req.prompt), req.subject);
  return { ids: r.ids, index: r.lastSubjectIndex };
}

/** PROMPT_TOO_LONG when a row is longer than the model's context. */
export function checkLength(model: LoadedModel, rows: number[][]): void {
  const n = Math.max(...rows.map((r) => r.length));
  if (n > model.config.nCtx) {
    throw new FactLensError('PROMPT_TOO_LONG', `an edit prompt is ${n} tokens; ${model.name} reads at most ${model.config.nCtx}`, {
      field: 'prompt',
      tokens: n,
      limit: model.config.nCtx,
    });
  }
}

/** k̄ over the templates and the bare prompt's key/value, from one batched forward. */
export function romeKeys(model: LoadedModel, layer: number, req: PreparedRequest, templates: string[]): RomeKeys {
  if (templates[0] !== '{}') throw new Error('the first context template must be "{}" (the bare prompt)');
  const rows = templates.map((t) => templateRow(model, t, req));
  checkLength(model, rows.map((r) => r.ids));
  const batch = padBatch(rows.map((r) => r.ids), 'right');
  const f = model.config.dMlp;
  const d = model.config.dModel;
  const { keys, value } = tf.tidy(() => {
    const reads = new Map<string, tf.Tensor3D>();
    const hook = interventionHook(
      [
        { site: site.mlpPost(layer), op: 'read' },
        { site: site.mlpOut(layer), op: 'read' },
      ],
      reads,
    );
    forward(model, batch, { hook, stopAfterLayer: layer, logitsAt: 'none' });
    const pick = rows.map((r, i) => i * batch.width + r.index);
    const k = selectRows(tf.reshape(reads.get(site.mlpPost(layer))!, [-1, f]) as tf.Tensor2D, pick);
    const m = selectRows(tf.reshape(reads.get(site.mlpOut(layer))!, [-1, d]) as tf.Tensor2D, [pick[0]]);
    return { keys: k, value: m };
  });
  const kd = keys.dataSync() as Float32Array;
  const md = value.dataSync() as Float32Array;
  tf.dispose([keys, value]);
  const kBar = new Float64Array(f);
  for (let i = 0; i < rows.length; i++) for (let j = 0; j < f; j++) kBar[j] += kd[i * f + j];
  for (let j = 0; j < f; j++) kBar[j] /= rows.length;
  const all = rows.map((_, i) => Float64Array.from(kd.subarray(i * f, (i + 1) * f)));
  return { kBar, all, kBare: all[0], mBare: Float64Array.from(md), rows };
}

/** u = normalize(C⁻¹k̄) (or normalize(k̄) without the adjustment). */
export function leftVector(kBar: Float64Array, stats: LayerStats | null): { u: Float64Array; jitter: number } {
  let x: Float64Array;
  let jitter = 0;
  if (stats) {
    // C = Σkkᵀ/N; the scale cancels in the normalisation, so the sum is factored directly.
    const ch = statsFactor(stats);
    jitter = ch.jitter / stats.count;
    x = choleskySolve(ch, kBar);
  } else {
    x = Float64Array.from(kBar);
  }
  const n = norm(x);
  if (!(n > 0)) throw new FactLensError('INVALID_ARGUMENT', 'the subject key is zero; cannot build an update direction', { field: 'subject' });
  for (let i = 0; i < x.length; i++) x[i] /= n;
  return { u: x, jitter };
}

interface VBatch {
  batch: PaddedBatch;
  /** Subject-last index per row (rewriting rows, then the KL row). */
  lookup: number[];
  /** Flat (row·T + position) indices whose logits the loss reads: targets, then the KL row. */
  pick: number[];
  /** [pick.length − 1] target token per target position. */
  targetTok: number[];
  nRewrite: number;
}

function vBatch(model: LoadedModel, req: PreparedRequest, templates: string[]): VBatch {
  const tail = req.targetIds.slice(0, -1);
  const nT = req.targetIds.length;
  const rows: number[][] = [];
  const lookup: number[] = [];
  for (const t of templates) {
    const r = templateRow(model, t, req);
    // prefix + prompt + target tokens but the last, as ids (no re-tokenization at the seam).
    rows.push([...r.ids, ...tail]);
    lookup.push(r.index);
  }
  const kl = subjectLastIndexInTemplate(model.tokenizer, '{} is a', req.subject);
  rows.push(kl.ids);
  lookup.push(kl.lastSubjectIndex);
  checkLength(model, rows);
  const batch = padBatch(rows, 'right');
  const pick: number[] = [];
  const targetTok: number[] = [];
  templates.forEach((_, i) => {
    const len = rows[i].length;
    for (let j = 0; j < nT; j++) {
      pick.push(i * batch.width + len - nT + j);
      targetTok.push(req.targetIds[j]);
    }
  });
  pick.push(templates.length * batch.width + kl.lastSubjectIndex);
  return { batch, lookup, pick, targetTok, nRewrite: templates.length };
}

/** The v* optimisation (§2.7) at `layer`. */
export async function computeVStar(
  model: LoadedModel,
  layer: number,
  req: PreparedRequest,
  templates: string[],
  hp: RomeHparams,
  opts: Pick<RomeOptions, 'vForward' | 'fastGrad' | 'fusedVocab' | 'onStep' | 'at'> = {},
  job: Job = new Job(),
): Promise<VResult> {
  const started = performance.now();
  const cfg = model.config;
  const d = cfg.dModel;
  const V = cfg.vocabSize;
  const L = cfg.nLayer;
  const vb = vBatch(model, req, templates);
  const { batch, pick } = vb;
  const B = batch.ids.length;
  const T = batch.width;
  const P = pick.length;
  const nT = req.targetIds.length;
  const mode = opts.vForward ?? 'suffix';
  const mlpSite = opts.at === 'resid' ? site.residPost(layer) : site.mlpOut(layer);

  // Constants: the δ mask, target one-hots, attention bias, and per mode the cached inputs.
  const consts = scoped(() => {
    const oh = new Float32Array((P - 1) * V);
    vb.targetTok.forEach((tok, i) => (oh[i * V + tok] = 1));
    const targetOneHot = tf.tensor2d(oh, [P - 1, V]);
    // One δ-free forward: the block-l input and output, the MLP output at row 0's subject
    // (target_init) and, for 'suffix', every layer's keys/values.
    const reads = new Map<string, tf.Tensor3D>();
    const hook = interventionHook(
      [
        { site: site.residPre(layer), op: 'read' },
        { site: site.residPost(layer), op: 'read' },
        ...(mlpSite === site.residPost(layer) ? [] : [{ site: mlpSite, op: 'read' as const }]),
      ],
      reads,
    );
    const res = forward(model, batch, {
      hook,
      stopAfterLayer: mode === 'suffix' ? L - 1 : layer,
      logitsAt: 'none',
      returnKV: mode === 'suffix',
    });
    const init = tf.reshape(tf.slice(reads.get(mlpSite)!, [0, vb.lookup[0], 0], [1, 1, d]), [d]);
    if (mode !== 'suffix') {
      const maskData = new Float32Array(B * T);
      vb.lookup.forEach((p, r) => (maskData[r * T + p] = 1));
      return {
        targetOneHot,
        init,
        mask: tf.tensor3d(maskData, [B, T, 1]),
        bias: attentionBias(batch.mask, 0, T),
        h0: reads.get(site.residPre(layer))!,
        pick,
        past: [] as Array<KV | undefined>,
      };
    }
    // 'suffix': position p of row r depends on δ only if p ≥ s_r (its subject-last index),
    // and only from block l's output on. So blocks l+1… run on each row's positions s_r…len_r−1
    // (left-aligned, right-padded to Tn), seeing the earlier positions through their cached,
    // δ-free keys/values (past of width Tp = max s_r, masked per row beyond s_r).
    const starts = vb.lookup;
    const Tn = Math.max(...batch.lengths.map((len, r) => len - starts[r]));
    const Tp = Math.max(...starts);
    const src: number[] = [];
    const keyMask: number[][] = [];
    const maskData = new Float32Array(B * Tn);
    for (let r = 0; r < B; r++) {
      const n = batch.lengths[r] - starts[r];
      const row: number[] = [];
      for (let j = 0; j < Tp; j++) row.push(j < starts[r] ? 1 : 0);
      for (let j = 0; j < Tn; j++) {
        src.push(r * T + starts[r] + Math.min(j, n - 1));
        row.push(j < n ? 1 : 0);
      }
      keyMask.push(row);
      maskData[r * Tn] = 1;
    }
    const post = tf.reshape(reads.get(site.residPost(layer))!, [B * T, d]) as tf.Tensor2D;
    const h0 = tf.reshape(selectRows(post, src), [B, Tn, d]) as tf.Tensor3D;
    const past: Array<KV | undefined> = res.kv!.map((kv, l) =>
      l > layer && Tp > 0
        ? {
            k: tf.slice(kv.k, [0, 0, 0, 0], [-1, -1, Tp, -1]) as tf.Tensor4D,
            v: tf.slice(kv.v, [0, 0, 0, 0], [-1, -1, Tp, -1]) as tf.Tensor4D,
          }
        : undefined,
    );
    const pickS = pick.map((i) => {
      const r = Math.floor(i / T);
      return r * Tn + (i % T) - starts[r];
    });
    return {
      targetOneHot,
      init,
      mask: tf.tensor3d(maskData, [B, Tn, 1]),
      bias: attentionBias(keyMask, Tp, Tn),
      h0,
      pick: pickS,
      past,
    };
  });
  const targetInit = Float64Array.from(consts.init.dataSync());
  const initNorm = norm(targetInit);
  const fast = opts.fastGrad !== false;
  const frozen = new FrozenWeights();
  // The unembedding's transpose is the output embedding as stored (tied or not).
  frozen.knownTranspose(unembedOf(model.weights), model.weights.head);
  const run = <R>(fn: () => R): R => (fast ? withFastGradients(frozen, fn) : fn());

  const delta = new Float64Array(d);
  const mAdam = new Float64Array(d);
  const vAdam = new Float64Array(d);
  const beta1 = 0.9;
  const beta2 = 0.999;
  const eps = 1e-8;
  let klInit: tf.Tensor2D | null = null;
  const steps: VStep[] = [];

  // The vocabulary end as one fused op (vocab-loss.ts) where reads are synchronous; the
  // op-by-op form on WebGPU and for the full-forward mode (the reference path it is checked
  // against).
  const fused = opts.fusedVocab ?? (mode !== 'full' && tf.getBackend() !== 'webgpu');
  const unembedT = () => model.weights.head;
  let klInitHost: Float32Array | null = null;
  const parts: VocabLossParts = { nll: 0, kl: 0, targetProb: 0, klRow: null };
  const lossOf = (deltaT: tf.Tensor1D, aux: { nll?: tf.Scalar; kl?: tf.Scalar; klRow?: tf.Tensor2D; tp?: tf.Scalar }): tf.Scalar => {
    const hook: Hook = (s, x) => (s === mlpSite ? (tf.add(x, tf.mul(consts.mask, deltaT)) as tf.Tensor3D) : x);
    let logits: tf.Tensor2D;
    if (mode === 'suffix' || mode === 'blocks') {
      let h: tf.Tensor3D;
      if (mode === 'suffix') {
        h = tf.add(consts.h0, tf.mul(consts.mask, deltaT)) as tf.Tensor3D;
        for (let l = layer + 1; l < L; l++) h = block(model, l, h, consts.bias, consts.past[l]).h;
      } else {
        h = consts.h0;
        for (let l = layer; l < L; l++) h = block(model, l, h, consts.bias, undefined, hook).h;
      }
      const rows = selectRows(tf.reshape(finalNorm(model, h), [-1, d]) as tf.Tensor2D, mode === 'suffix' ? consts.pick : pick);
      if (fused) {
        const spec = { targets: vb.targetTok, nllScale: 1 / (nT * vb.nRewrite), klFactor: hp.klFactor, klInit: klInitHost };
        return vocabLoss(rows, (x) => unembed(model, x), unembedT, spec, parts, { w: unembedOf(model.weights), b: model.weights.unembedBias });
      }
      logits = unembed(model, rows);
    } else {
      const pairs = pick.map((i) => [Math.floor(i / T), i % T] as [number, number]);
      logits = forward(model, batch, { hook, logitsAt: pairs }).logits!;
    }
    const logp = tf.logSoftmax(logits);
    // Log-probabilities of the target tokens [P−1] (one-hot mul-sum: no gather gradient).
    const lpT = tf.sum(tf.mul(tf.slice(logp, [0, 0], [P - 1, V]), consts.targetOneHot), 1);
    const nll = tf.mul(tf.sum(lpT), -1 / (nT * vb.nRewrite)) as tf.Scalar;
    aux.nll = tf.keep(nll.clone());
    aux.tp = tf.keep(tf.mean(tf.exp(lpT)) as tf.Scalar);
    const klRow = tf.slice(logp, [P - 1, 0], [1, V]) as tf.Tensor2D;
    if (!klInit) {
      // Step 0: p = p_init, so KL = 0 with zero gradient; keep p_init for later steps.
      aux.klRow = tf.keep(klRow.clone());
      return nll;
    }
    const kl = tf.mul(tf.sum(tf.mul(tf.exp(klRow), tf.sub(klRow, klInit))), hp.klFactor) as tf.Scalar;
    aux.kl = tf.keep(kl.clone());
    return tf.add(nll, kl) as tf.Scalar;
  };

  try {
    for (let it = 0; it < hp.vNumGradSteps; it++) {
      const last = it === hp.vNumGradSteps - 1;
      const aux: { nll?: tf.Scalar; kl?: tf.Scalar; klRow?: tf.Tensor2D; tp?: tf.Scalar } = {};
      const deltaT = tf.tensor1d(Float32Array.from(delta));
      let grad: Float32Array | null = null;
      let value: number;
      try {
        if (last) {
          // The reference stops before stepping on the last iteration: no gradient needed.
          const lossT = run(() => tf.tidy(() => lossOf(deltaT, aux)));
          value = lossT.dataSync()[0];
          lossT.dispose();
        } else {
          const { value: v, grad: g } = run(() => tf.tidy(() => tf.valueAndGrad((x: tf.Tensor1D) => lossOf(x, aux))(deltaT)));
          value = v.dataSync()[0];
          grad = g.dataSync() as Float32Array;
          tf.dispose([v, g]);
        }
      } finally {
        deltaT.dispose();
      }
      let nll: number, kl: number, tp: number;
      if (fused) {
        ({ nll, kl, targetProb: tp } = parts);
        klInitHost ??= parts.klRow;
      } else {
        nll = aux.nll!.dataSync()[0];
        kl = aux.kl ? aux.kl.dataSync()[0] : 0;
        tp = aux.tp!.dataSync()[0];
        if (aux.klRow) klInit = aux.klRow;
        tf.dispose([aux.nll, aux.kl, aux.tp].filter((x): x is tf.Scalar => !!x));
      }
      const dn = norm(delta);
      const wd = (hp.vWeightDecay * dn) / (initNorm * initNorm);
      const loss = value + wd;
      const step: VStep = { step: it, loss, nll, kl, weightDecay: wd, targetProb: tp, deltaNorm: dn };
      steps.push(step);
      opts.onStep?.(step);
      await job.checkpoint((it + 1) / hp.vNumGradSteps, `v* step ${it + 1}/${hp.vNumGradSteps}: loss ${loss.toFixed(4)}`);
      if (loss < 5e-2 || last || !grad) break;
      // Adam (torch defaults) on the total gradient; the weight-decay term's gradient is
      // added here analytically (‖δ‖ is not differentiable at 0; its subgradient there is 0).
      const t = it + 1;
      const bc1 = 1 - beta1 ** t;
      const bc2 = 1 - beta2 ** t;
      for (let i = 0; i < d; i++) {
        const g = grad[i] + (dn > 0 ? (hp.vWeightDecay * delta[i]) / dn / (initNorm * initNorm) : 0);
        mAdam[i] = beta1 * mAdam[i] + (1 - beta1) * g;
        vAdam[i] = beta2 * vAdam[i] + (1 - beta2) * g * g;
        delta[i] -= (hp.vLr / bc1) * (mAdam[i] / (Math.sqrt(vAdam[i]) / Math.sqrt(bc2) + eps));
      }
      const maxNorm = hp.clampNormFactor * initNorm;
      const nn = norm(delta);
      if (nn > maxNorm) for (let i = 0; i < d; i++) delta[i] *= maxNorm / nn;
    }
  } finally {
    if (klInit) (klInit as tf.Tensor).dispose();
    frozen.release();
    disposeAll(consts);
  }
  const vStar = new Float64Array(d);
  for (let i = 0; i < d; i++) vStar[i] = targetInit[i] + delta[i];
  return { vStar, targetInit, delta, steps, seconds: (performance.now() - started) / 1000 };
}

export interface RomeUpdate {
  u: Float64Array;
  vR: Float64Array;
  /** The denominator used: k̄·u ('consistent') or k_bare·u ('reference'). */
  kDotU: number;
  /** ‖u ⊗ v_r‖_F = ‖u‖·‖v_r‖ = ‖v_r‖. */
  deltaNorm: number;
}

/** v_r for either formula, against the layer's current weights. */
export function rightVector(
  model: LoadedModel,
  layer: number,
  keys: RomeKeys,
  u: Float64Array,
  vStar: Float64Array,
  formula: 'consistent' | 'reference',
): RomeUpdate {
  const { dMlp: f, dModel: d } = model.config;
  let key: Float64Array;
  let current: Float64Array;
  if (formula === 'reference') {
    key = keys.kBare;
    current = keys.mBare;
  } else {
    key = keys.kBar;
    const w = model.weights.blocks[layer].mlpOut;
    current = vecMat(key, w.w.dataSync() as Float32Array, f, d, w.b ? (w.b.dataSync() as Float32Array) : undefined);
  }
  const kDotU = dot(key, u);
  if (!Number.isFinite(kDotU) || kDotU === 0) {
    throw new FactLensError('INVALID_ARGUMENT', `k·u is ${kDotU}: the update is undefined for this key`, { field: 'subject' });
  }
  const vR = new Float64Array(d);
  for (let j = 0; j < d; j++) vR[j] = (vStar[j] - current[j]) / kDotU;
  return { u, vR, kDotU, deltaNorm: norm(u) * norm(vR) };
}

/**
 * The 'keys' update: every key the v* optimisation added δ at (the bare prompt and each
 * context template's sentence) gets exactly that δ, with the least disturbance of typical keys.
 * ROME's rank-one form with v_r = δ and u minimising uᵀCu subject to k_i·u = 1 for every
 * key k_i: u = C⁻¹K(KᵀC⁻¹K + μI)⁻¹1, K = [k_1 … k_n]. This is MEMIT's least-squares update
 * (rome-spec §5.4) for one target and n keys, in the limit of a small λ. It reproduces, on
 * every row, the intervention v* was optimised under, so neither the bare-prompt key
 * ('consistent' under-serves it when it differs from k̄) nor k̄ alone ('reference' can blow
 * up when k_bare·u is small) is privileged. μ is a relative ridge on the Gram matrix
 * (μ = ridge·mean diag(KᵀC⁻¹K)): keys that are nearly parallel but of different length would
 * otherwise ask for contradictory scalings.
 */
export function multiKeyUpdate(
  keys: Float64Array[],
  stats: LayerStats | null,
  delta: Float64Array,
  ridge = 1e-3,
  ns: NullSpace | null = null,
): RomeUpdate & { fit: number[] } {
  const n = keys.length;
  const ch = stats && !ns ? statsFactor(stats) : null;
  // C⁻¹k_i, or with the null-space projection P k_i (nullspace.ts: the minimum-norm u in the null space).
  const X = keys.map((k) => (ns ? project(ns, k) : ch ? choleskySolve(ch, k) : Float64Array.from(k)));
  const G = new Float64Array(n * n);
  let tr = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      const g = dot(keys[i], X[j]);
      G[i * n + j] = g;
      G[j * n + i] = g;
    }
    tr += G[i * n + i];
  }
  const mu = (ridge * tr) / n;
  for (let i = 0; i < n; i++) G[i * n + i] += mu;
  const a = choleskySolve(cholesky(G, n), new Float64Array(n).fill(1));
  const f = keys[0].length;
  const u = new Float64Array(f);
  for (let j = 0; j < n; j++) for (let i = 0; i < f; i++) u[i] += a[j] * X[j][i];
  const un = norm(u);
  if (!(un > 0) || !Number.isFinite(un)) {
    throw new FactLensError('INVALID_ARGUMENT', 'the subject keys give no update direction (zero or non-finite)', { field: 'subject' });
  }
  for (let i = 0; i < f; i++) u[i] /= un;
  const vR = Float64Array.from(delta, (x) => x * un);
  const fit = keys.map((k) => dot(k, u) * un);
  return { u, vR, kDotU: dot(keys[0], u), deltaNorm: norm(vR), fit };
}

/**
 * The keys the 'keys' / 'subject-keys' update maps to v*'s change. 'subject-keys' adds, when the
 * prompt has words before the subject ("The mother tongue of {} is"), the subject's key after
 * the same 21 prefixes with nothing of the prompt before it: at the edited layer a subject's key
 * still carries the words that precede it, so a key read only after the relation words misses
 * the prompts that name the subject first ("{}'s native language is"). The fact is keyed by the
 * subject; these keys are the subject's in the other position. For a prompt that starts with
 * the subject the two sets are the same (the key sees only what precedes it).
 */
export function updateKeys(model: LoadedModel, layer: number, req: PreparedRequest, templates: string[], keys: RomeKeys, formula: 'keys' | 'subject-keys'): Float64Array[] {
  if (formula === 'keys' || req.prompt.startsWith('{}')) return keys.all;
  return [...keys.all, ...romeKeys(model, layer, { ...req, prompt: '{}' }, templates).all];
}

/** Everything a ROME edit computed: the record plus its intermediate vectors (for tests and tools). */
export interface RomeParts {
  record: EditRecord;
  hparams: RomeHparams;
  keys: RomeKeys;
  v: VResult;
  update: RomeUpdate;
  stats: LayerStats | null;
  templates: string[];
}

/** Computes a ROME edit against the model's current weights (the model is not modified). */
export async function computeRome(
  model: LoadedModel,
  request: EditRequest,
  control: JobControl = {},
  opts: RomeOptions = {},
): Promise<EditRecord> {
  return (await romeEditParts(model, request, control, opts)).record;
}

/** computeRome, returning the intermediate vectors too. */
export async function romeEditParts(
  model: LoadedModel,
  request: EditRequest,
  control: JobControl = {},
  opts: RomeOptions = {},
): Promise<RomeParts> {
  const started = performance.now();
  const req = prepareRequest(model, request);
  const asked = request.formula;
  if (asked !== undefined && !(ROME_FORMULAS as readonly string[]).includes(asked)) {
    throw new FactLensError('INVALID_ARGUMENT', `formula must be one of ${ROME_FORMULAS.join(', ')}, not '${asked}'`, { field: 'formula' });
  }
  if (request.layers && request.layers.length !== 1) {
    throw new FactLensError('INVALID_ARGUMENT', `ROME edits one layer; got layers [${request.layers.join(', ')}]`, { field: 'layers' });
  }
  const layerAsked = request.layers?.[0] ?? opts.hparams?.layer;
  if (layerAsked !== undefined) checkLayer(model.config, layerAsked);
  const job = new Job(control, 'ROME edit');
  const sub = (lo: number, hi: number): JobControl => subControl(control, lo, hi);

  const tLayer = performance.now();
  const base = await romeHparams(model, { layer: layerAsked, facts: opts.facts }, sub(0, 0.05));
  const layerSeconds = (performance.now() - tLayer) / 1000;
  const hp: RomeHparams = { ...base, ...opts.hparams, layer: base.layer, layerSource: base.layerSource };
  const layer = hp.layer;
  const formula: RomeFormula = asked ?? hp.formula;

  const tStats = performance.now();
  let stats: LayerStats | null = null;
  if (hp.mom2Adjustment) {
    stats = await layerStats(
      model,
      layer,
      { corpus: request.corpus, samples: opts.statsSamples ?? hp.mom2NSamples, npz: opts.statsNpz, ...statsTokens(hp, opts.statsSamples, model.config.dMlp) },
      sub(0.05, 0.6),
    );
  }
  const statsSeconds = (performance.now() - tStats) / 1000;

  const tTpl = performance.now();
  const tpl = opts.templates
    ? { templates: opts.templates, cached: true }
    : contextTemplates(model, { seed: opts.templateSeed, lengths: hp.contextTemplateLengths });
  const templateSeconds = (performance.now() - tTpl) / 1000;
  await job.checkpoint(0.62, `layer ${layer}: keys over ${tpl.templates.length} templates`);

  const tKeys = performance.now();
  const keys = romeKeys(model, layer, req, tpl.templates);
  const { u, jitter } = leftVector(keys.kBar, stats);
  const keySeconds = (performance.now() - tKeys) / 1000;

  const retries = hp.clampGrowth || hp.vStepGrowth > 1;
  let v = await computeVStar(model, layer, req, tpl.templates, hp, opts, new Job(sub(0.65, retries ? 0.8 : 1), 'ROME edit'));
  const missed = (x: VResult) => Math.exp(-x.steps[x.steps.length - 1].nll) < 0.5;
  // Step growth (hparams.ts): when v* misses its own target (exp(−NLL) < 0.5) after the
  // reference's steps, once more with more steps. Adam is deterministic, so its first steps
  // repeat the first run's: in effect the optimisation continues.
  let stepsGrown = false;
  if (hp.vStepGrowth > 1 && missed(v)) {
    const steps = Math.round(hp.vStepGrowth * hp.vNumGradSteps);
    v = await computeVStar(model, layer, req, tpl.templates, { ...hp, vNumGradSteps: steps }, opts, new Job(sub(0.8, hp.clampGrowth ? 0.9 : 1), 'ROME edit'));
    stepsGrown = true;
  }
  // Radius growth (hparams.ts): when v* still misses at the radius, once more from scratch at
  // twice the radius.
  let radius = hp.clampNormFactor;
  if (hp.clampGrowth && missed(v)) {
    radius = 2 * hp.clampNormFactor;
    v = await computeVStar(model, layer, req, tpl.templates, { ...hp, clampNormFactor: radius }, opts, new Job(sub(0.9, 1), 'ROME edit'));
  }
  const useNull = request.nullSpace ?? (opts.nullSpace !== undefined && opts.nullSpace !== false);
  let ns: NullSpace | null = null;
  if (useNull) {
    if (!stats) throw new FactLensError('INVALID_ARGUMENT', 'the null-space projection needs the key statistics (mom2Adjustment)', { field: 'nullSpace' });
    ns = nullSpace(stats, typeof opts.nullSpace === 'number' ? opts.nullSpace : undefined);
  }
  let upd: RomeUpdate;
  let fit: number[] | null = null;
  if (formula === 'keys' || formula === 'subject-keys') {
    const multi = multiKeyUpdate(updateKeys(model, layer, req, tpl.templates, keys, formula), stats, Float64Array.from(v.vStar, (x, j) => x - keys.mBare[j]), undefined, ns);
    upd = multi;
    fit = multi.fit;
  } else if (ns) {
    const pu = project(ns, u);
    const pn = norm(pu);
    if (!(pn > 0)) throw new FactLensError('INVALID_ARGUMENT', 'the update direction has no component in the null space', { field: 'nullSpace' });
    upd = rightVector(model, layer, keys, Float64Array.from(pu, (x) => x / pn), v.vStar, formula);
  } else {
    upd = rightVector(model, layer, keys, u, v.vStar, formula);
  }
  const last = v.steps[v.steps.length - 1];
  const delta: RankOneDelta = { kind: 'rank-one', layer, u: Array.from(upd.u), v: Array.from(upd.vR) };
  const info: Record<string, number | string> = {
    layer,
    layer_source: hp.layerSource,
    formula,
    clamp_norm_factor: radius,
    clamp_grown: radius !== hp.clampNormFactor ? 1 : 0,
    v_steps_grown: stepsGrown ? 1 : 0,
    ...(ns ? { null_space_rank: ns.rank, null_space_threshold: ns.threshold, null_space_energy: ns.energy } : {}),
    k_dot_u: upd.kDotU,
    // With the direction the update uses (the multi-key u, or the projected one), not the
    // consistent formula's C⁻¹k̄, so the ratio k_bare·u / k̄·u describes this edit.
    k_bar_dot_u: dot(keys.kBar, upd.u),
    k_bare_dot_u: dot(keys.kBare, upd.u),
    // keys / subject-keys: the share of δ each update key gets (1 = all of it; the ridge keeps it just below).
    ...(fit ? { keys_count: fit.length, key_share_min: Math.min(...fit), key_share_max: Math.max(...fit) } : {}),
    delta_w_norm: upd.deltaNorm,
    v_star_norm: norm(v.vStar),
    target_init_norm: norm(v.targetInit),
    delta_norm: norm(v.delta),
    loss_initial: v.steps[0].loss,
    loss_final: last.loss,
    nll_final: last.nll,
    kl_final: last.kl,
    target_prob_initial: v.steps[0].targetProb,
    target_prob_final: last.targetProb,
    v_steps: v.steps.length,
    loss_trajectory: v.steps.map((s) => s.loss.toPrecision(4)).join(','),
    templates: tpl.templates.length,
    templates_cached: tpl.cached ? 1 : 0,
    stats_cached: stats ? (stats.cached ? 1 : 0) : 'none',
    stats_tokens: stats ? stats.count : 0,
    stats_documents: stats ? stats.documents : 0,
    cholesky_ridge: jitter,
    // The layer choice (causal tracing over the model's facts, cached per model) when no layer was given.
    seconds_layer: layerSeconds,
    seconds_stats: statsSeconds,
    seconds_templates: templateSeconds,
    seconds_keys: keySeconds,
    seconds_v: v.seconds,
    seconds_total: (performance.now() - started) / 1000,
  };
  const record: EditRecord = {
    id: crypto.randomUUID(),
    request: { ...request, method: 'rome', layers: [layer], formula, ...(ns ? { nullSpace: true } : {}) },
    method: 'rome',
    layers: [layer],
    deltas: [delta],
    info,
    modelHash: modelContentHash(model),
    createdAt: new Date().toISOString(),
  };
  return { record, hparams: hp, keys, v, update: upd, stats, templates: tpl.templates };
}
