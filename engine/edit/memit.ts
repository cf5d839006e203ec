/**
 * MEMIT (rome-spec §5): many edits at once, spread over a range of layers R.
 *
 *  1. For every request, a target hidden state z_i at the top layer L = max(R): the ROME v*
 *     optimisation with δ added to the block's output (the residual stream) at the subject's
 *     last token, clamp radius 0.75·‖h_init‖ (rome.ts computeVStar with `at: 'resid'`). All z
 *     are computed on the model before any of this batch's weight changes.
 *  2. For each l ∈ R ascending (i = 0, 1, …), on the model with the layers below already
 *     updated: the keys K_l (MLP key at the subject's last token, averaged per template group,
 *     then over the groups: the bare prompt weighs ½, the generated prefixes share ½); the
 *     current top-layer hidden states H of the bare prompts; R = Z − H;
 *     A = (λ·C_l + K Kᵀ)⁻¹ K by a float64 Cholesky solve; ΔW_l = A (R / (|R| − i))ᵀ, applied at
 *     once so the next layers see it.
 *  3. The weights are restored; the result is one EditRecord with a dense delta per layer.
 *
 * With one request this is the least-squares form of ROME's update with the consistent key
 * (rome-spec §5.4), spread over several layers instead of an exact equality at one.
 */
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { selectRows } from '../runtime/decoder-forward.js';
import { forward } from '../runtime/forward.js';
import { padBatch } from '../runtime/batch.js';
import { interventionHook } from '../runtime/interventions.js';
import { site } from '../runtime/sites.js';
import { Job, subControl, type JobControl } from '../util/jobs.js';
import { applyEdit, listEdits, revertEdit } from './apply.js';
import { cacheRoot, modelContentHash, readJsonCache, writeJsonCache } from './hash.js';
import { statsTokens } from './hparams.js';
import { memitHparams, type MemitHparams } from './memit-hparams.js';
import { nullSpace, nullSpaceSolve } from './nullspace.js';
import { cholesky, choleskySolve, dot, norm } from './linalg.js';
import { checkLength, computeVStar, prepareRequest, templateRow, type PreparedRequest, type RomeOptions } from './rome.js';
import { encodeF32 } from './state.js';
import { layerStats, statsFactor, type LayerStats } from './stats.js';
import { contextTemplates } from './templates.js';
import type { DenseDelta, EditRecord, EditRequest } from './types.js';

export interface MemitOptions extends Pick<RomeOptions, 'templateSeed' | 'statsSamples' | 'statsNpz' | 'facts' | 'vForward' | 'fastGrad'> {
  /** Hyperparameter overrides (layers, λ, steps, ...). */
  hparams?: Partial<MemitHparams>;
  /** AlphaEdit's null-space projection (nullspace.ts): true, or the relative eigenvalue threshold. */
  nullSpace?: boolean | number;
  /** Context templates instead of the generated ones ("{}" first: it is the bare prompt). */
  templates?: string[];
  /**
   * Reuse target vectors z from the disk cache (default true). A z depends only on the
   * unedited model, the request, the templates and the v* hyperparameters — not on λ or the
   * lower layers of R — so re-running a batch with other update settings skips step 1, as
   * the reference's per-case z cache does.
   */
  cacheZ?: boolean;
}

/** Rows (template sentences) per key-reading forward: bounds activation memory for big batches. */
const KEY_ROWS_PER_FORWARD = 256;

/** Every (request, template) sentence with its subject-last index. */
interface KeyRow {
  ids: number[];
  index: number;
  request: number;
  template: number;
}

function keyRows(model: LoadedModel, reqs: PreparedRequest[], templates: string[]): KeyRow[] {
  const rows = reqs.flatMap((req, request) => templates.map((t, template) => ({ ...templateRow(model, t, req), request, template })));
  checkLength(model, rows.map((r) => r.ids));
  return rows;
}

/**
 * K_l [n][f] (group-averaged keys at `layer`) and H [n][d] (the bare prompts' block-`top`
 * output at the subject's last token), from forwards over every template sentence.
 */
function keysAndHidden(
  model: LoadedModel,
  layer: number,
  top: number,
  rows: KeyRow[],
  nReq: number,
  groups: number[][],
): { K: Float64Array[]; H: Float64Array[] } {
  const { dMlp: f, dModel: d } = model.config;
  const K = Array.from({ length: nReq }, () => new Float64Array(f));
  const H = Array.from({ length: nReq }, () => new Float64Array(d));
  const groupOf = new Map<number, number>();
  groups.forEach((g, gi) => g.forEach((t) => groupOf.set(t, gi)));
  // Sort by length so each forward pads little.
  const order = rows.map((_, i) => i).sort((a, b) => rows[b].ids.length - rows[a].ids.length);
  for (let s = 0; s < order.length; s += KEY_ROWS_PER_FORWARD) {
    const part = order.slice(s, s + KEY_ROWS_PER_FORWARD).map((i) => rows[i]);
    const batch = padBatch(part.map((r) => r.ids), 'right');
    const bare = part.map((r, i) => (r.template === 0 ? i : -1)).filter((i) => i >= 0);
    const { k, h } = tf.tidy(() => {
      const reads = new Map<string, tf.Tensor3D>();
      const sites = [{ site: site.mlpPost(layer), op: 'read' as const }];
      if (bare.length) sites.push({ site: site.residPost(top), op: 'read' as const });
      forward(model, batch, { hook: interventionHook(sites, reads), stopAfterLayer: bare.length ? top : layer, logitsAt: 'none' });
      const pick = part.map((r, i) => i * batch.width + r.index);
      const kk = selectRows(tf.reshape(reads.get(site.mlpPost(layer))!, [-1, f]) as tf.Tensor2D, pick);
      const hh = bare.length ? selectRows(tf.reshape(reads.get(site.residPost(top))!, [-1, d]) as tf.Tensor2D, bare.map((i) => pick[i])) : undefined;
      return { k: kk, h: hh } as { k: tf.Tensor2D; h?: tf.Tensor2D };
    });
    const kd = k.dataSync() as Float32Array;
    const hd = h ? (h.dataSync() as Float32Array) : null;
    tf.dispose([k, h].filter((x): x is tf.Tensor2D => !!x));
    part.forEach((r, i) => {
      // Mean within the template's group, then mean over groups.
      const g = groups[groupOf.get(r.template)!];
      const w = 1 / (g.length * groups.length);
      const dst = K[r.request];
      for (let j = 0; j < f; j++) dst[j] += w * kd[i * f + j];
    });
    bare.forEach((i, j) => H[part[i].request].set(hd!.subarray(j * d, (j + 1) * d)));
  }
  return { K, H };
}

/**
 * A = (λ·C + K Kᵀ)⁻¹ K for the n keys (columns), in float64; C = Σkkᵀ/N from the statistics
 * (or the identity without the covariance adjustment).
 */
export function adjustedKeys(
  K: Float64Array[],
  stats: LayerStats | null,
  lambda: number,
  f: number,
  method: 'auto' | 'direct' = 'auto',
): { A: Float64Array[]; jitter: number } {
  if (method === 'auto' && stats && 3 * K.length < f) return adjustedKeysWoodbury(K, stats, lambda);
  const m = new Float64Array(f * f);
  if (stats) {
    const s = lambda / stats.count;
    for (let i = 0; i < f * f; i++) m[i] = s * stats.sum[i];
  } else {
    for (let i = 0; i < f; i++) m[i * f + i] = lambda;
  }
  // Lower triangle of K Kᵀ (cholesky reads only that).
  for (const k of K) {
    for (let i = 0; i < f; i++) {
      const ki = k[i];
      if (ki === 0) continue;
      const r = i * f;
      for (let j = 0; j <= i; j++) m[r + j] += ki * k[j];
    }
  }
  const ch = cholesky(m, f);
  return { A: K.map((k) => choleskySolve(ch, k)), jitter: ch.jitter };
}

/**
 * The same A for few keys through the statistics' cached Cholesky factor (stats.ts
 * statsFactor, shared with ROME): with B = (λC)⁻¹K, (λC + KKᵀ)⁻¹K = B (I + KᵀB)⁻¹ (Woodbury),
 * n solves with the factor and an n×n system instead of factorising an f×f matrix per layer and
 * edit (f³/3 multiply-adds: seconds per edit on tinyworld in JS; sequential editing pays it for
 * every edit). Equal to the direct form up to the factor's ridge (checked in test/memit.test.ts).
 */
function adjustedKeysWoodbury(K: Float64Array[], stats: LayerStats, lambda: number): { A: Float64Array[]; jitter: number } {
  const ch = statsFactor(stats);
  // C = S/N, so (λC)⁻¹k = (N/λ)·S⁻¹k.
  const scale = stats.count / lambda;
  const B = K.map((k) => {
    const b = choleskySolve(ch, k);
    for (let i = 0; i < b.length; i++) b[i] *= scale;
    return b;
  });
  const n = K.length;
  const M = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) M[i * n + j] = (i === j ? 1 : 0) + dot(K[i], B[j]);
  const mch = cholesky(M, n);
  const A = K.map(() => new Float64Array(K[0].length));
  for (let r = 0; r < n; r++) {
    const e = new Float64Array(n);
    e[r] = 1;
    const c = choleskySolve(mch, e); // column r of M⁻¹
    for (let s2 = 0; s2 < n; s2++) {
      const w = c[s2];
      const b = B[s2];
      const a = A[r];
      for (let i = 0; i < a.length; i++) a[i] += w * b[i];
    }
  }
  return { A, jitter: ch.jitter / scale };
}

export interface MemitParts {
  record: EditRecord;
  hparams: MemitHparams;
  templates: string[];
  /** z_i, h_init_i per request. */
  z: Float64Array[];
  hInit: Float64Array[];
  /** ‖Z − H‖ per layer, before that layer's update (mean over requests). */
  residualNorms: number[];
  /** Per layer of R: the group-averaged keys K (one per request) and current top-layer states H. */
  layerKeys: Float64Array[][];
  layerHidden: Float64Array[][];
}

/** Computes a MEMIT edit of all `requests` against the model's current weights (left unchanged). */
export async function computeMemit(
  model: LoadedModel,
  requests: EditRequest[],
  control: JobControl = {},
  opts: MemitOptions = {},
): Promise<EditRecord> {
  return (await memitEditParts(model, requests, control, opts)).record;
}

export async function memitEditParts(
  model: LoadedModel,
  requests: EditRequest[],
  control: JobControl = {},
  opts: MemitOptions = {},
): Promise<MemitParts> {
  const started = performance.now();
  if (!Array.isArray(requests) || requests.length === 0) {
    throw new FactLensError('INVALID_ARGUMENT', 'MEMIT needs at least one edit request', { field: 'requests' });
  }
  const reqs = requests.map((r, i) => {
    try {
      return prepareRequest(model, r);
    } catch (e) {
      if (e instanceof FactLensError && requests.length > 1) {
        throw new FactLensError(e.code, `request ${i}: ${e.message}`, { ...e.data, request: i });
      }
      throw e;
    }
  });
  const asked = requests[0].layers;
  if (requests.some((r) => JSON.stringify(r.layers) !== JSON.stringify(asked))) {
    throw new FactLensError('INVALID_ARGUMENT', 'the requests of one MEMIT batch must ask for the same layers', { field: 'layers' });
  }
  const job = new Job(control, 'MEMIT edit');
  const sub = (lo: number, hi: number): JobControl => subControl(control, lo, hi);
  const { dMlp: f, dModel: d } = model.config;

  const base = await memitHparams(model, { layers: asked ?? opts.hparams?.layers, facts: opts.facts }, sub(0, 0.03));
  const hp: MemitHparams = { ...base, ...opts.hparams, layers: base.layers, layersSource: base.layersSource };
  const layers = hp.layers;
  const top = layers[layers.length - 1];

  // Statistics per layer (each cached on disk; computed on the unedited weights).
  const tStats = performance.now();
  const stats = new Map<number, LayerStats | null>();
  for (let i = 0; i < layers.length; i++) {
    const l = layers[i];
    const lo = 0.03 + (0.3 * i) / layers.length;
    stats.set(
      l,
      hp.mom2Adjustment
        ? await layerStats(
            model,
            l,
            { corpus: requests[0].corpus, samples: opts.statsSamples ?? hp.mom2NSamples, npz: opts.statsNpz, ...statsTokens(hp, opts.statsSamples, model.config.dMlp) },
            sub(lo, lo + 0.3 / layers.length),
          )
        : null,
    );
  }
  const statsSeconds = (performance.now() - tStats) / 1000;

  const tpl = opts.templates
    ? { templates: opts.templates, cached: true }
    : contextTemplates(model, { seed: opts.templateSeed, lengths: hp.contextTemplateLengths, starts: hp.contextTemplateStarts });
  const templates = tpl.templates;
  if (templates[0] !== '{}') throw new FactLensError('INVALID_ARGUMENT', 'the first context template must be "{}" (the bare prompt)', { field: 'templates' });
  const groups = [[0], templates.slice(1).map((_, i) => i + 1)].filter((g) => g.length);

  // 1. Target hidden states z_i at the top layer.
  const tZ = performance.now();
  const z: Float64Array[] = [];
  const hInit: Float64Array[] = [];
  const zProb: number[] = [];
  const vHp = { ...hp, layer: top, layerSource: hp.layersSource };
  // What every z of this batch depends on besides its request, serialised once.
  const zContext = JSON.stringify({
    model: modelContentHash(model),
    edited: listEdits(model).map((e) => e.id),
    templates,
    top,
    hp: [hp.vNumGradSteps, hp.vLr, hp.vWeightDecay, hp.clampNormFactor, hp.klFactor],
  });
  const zKey = (r: PreparedRequest) =>
    crypto
      .createHash('sha256')
      .update(zContext)
      .update(JSON.stringify({ prompt: r.prompt, subject: r.subject, target: r.targetIds }))
      .digest('hex')
      .slice(0, 32);
  const useZCache = opts.cacheZ !== false;
  let zCached = 0;
  for (let i = 0; i < reqs.length; i++) {
    const lo = 0.33 + (0.55 * i) / reqs.length;
    const zFile = path.join(cacheRoot(), 'memit-z', `${zKey(reqs[i])}.json`);
    const hit = useZCache ? readJsonCache<{ z: number[]; hInit: number[]; targetProb: number }>(zFile) : null;
    if (hit && hit.z?.length === d && hit.hInit?.length === d) {
      z.push(Float64Array.from(hit.z));
      hInit.push(Float64Array.from(hit.hInit));
      zProb.push(hit.targetProb);
      zCached++;
      continue;
    }
    const v = await computeVStar(
      model,
      top,
      reqs[i],
      templates,
      vHp,
      { at: 'resid', vForward: opts.vForward, fastGrad: opts.fastGrad },
      new Job(sub(lo, lo + 0.55 / reqs.length), 'MEMIT edit'),
    );
    z.push(v.vStar);
    hInit.push(v.targetInit);
    zProb.push(v.steps[v.steps.length - 1].targetProb);
    if (useZCache) {
      try {
        writeJsonCache(zFile, { z: Array.from(v.vStar), hInit: Array.from(v.targetInit), targetProb: zProb[i] });
      } catch {
        /* recomputed next time */
      }
    }
    await job.checkpoint(lo + 0.55 / reqs.length, `z ${i + 1}/${reqs.length} at layer ${top}: target p ${zProb[i].toFixed(3)}`);
  }
  const zSeconds = (performance.now() - tZ) / 1000;

  // 2. Layer by layer, on the model with the lower layers' updates applied (temporarily).
  const tLayers = performance.now();
  const nullOn = requests[0].nullSpace ?? (opts.nullSpace !== undefined && opts.nullSpace !== false);
  const nullRanks: number[] = [];
  const rows = keyRows(model, reqs, templates);
  const deltas: DenseDelta[] = [];
  const deltaNorms: number[] = [];
  const residualNorms: number[] = [];
  const layerKeys: Float64Array[][] = [];
  const layerHidden: Float64Array[][] = [];
  const temp: EditRecord[] = [];
  let jitterMax = 0;
  const modelHash = modelContentHash(model);
  try {
    for (let i = 0; i < layers.length; i++) {
      const l = layers[i];
      await job.checkpoint(0.88 + (0.12 * i) / layers.length, `layer ${l}: keys and least-squares update for ${reqs.length} edit(s)`);
      const { K, H } = keysAndHidden(model, l, top, rows, reqs.length, groups);
      layerKeys.push(K);
      layerHidden.push(H);
      const share = 1 / (layers.length - i);
      const R = z.map((zi, r) => {
        const x = new Float64Array(d);
        for (let j = 0; j < d; j++) x[j] = (zi[j] - H[r][j]) * share;
        return x;
      });
      residualNorms.push(R.reduce((a, x) => a + norm(x), 0) / share / R.length);
      const st = stats.get(l) ?? null;
      let A: Float64Array[];
      let jitter = 0;
      if (nullOn) {
        // AlphaEdit (nullspace.ts): ΔW = P K (KᵀPK + I)⁻¹ R̃ᵀ.
        if (!st) throw new FactLensError('INVALID_ARGUMENT', 'the null-space projection needs the key statistics (mom2Adjustment)', { field: 'nullSpace' });
        const ns = nullSpace(st, typeof opts.nullSpace === 'number' ? opts.nullSpace : undefined);
        nullRanks.push(ns.rank);
        A = nullSpaceSolve(ns, K, 1);
      } else {
        ({ A, jitter } = adjustedKeys(K, st, hp.mom2UpdateWeight, f));
      }
      jitterMax = Math.max(jitterMax, jitter);
      // ΔW [f, d] = Σ_r A_r ⊗ R̃_r.
      const dw = new Float32Array(f * d);
      const acc = new Float64Array(d);
      for (let a = 0; a < f; a++) {
        acc.fill(0);
        for (let r = 0; r < A.length; r++) {
          const s = A[r][a];
          if (s === 0) continue;
          const rr = R[r];
          for (let j = 0; j < d; j++) acc[j] += s * rr[j];
        }
        for (let j = 0; j < d; j++) dw[a * d + j] = acc[j];
      }
      const delta: DenseDelta = { kind: 'dense', layer: l, shape: [f, d], delta: encodeF32(dw) };
      deltas.push(delta);
      deltaNorms.push(norm(dw));
      if (i < layers.length - 1) {
        const rec: EditRecord = {
          id: `memit-partial-${crypto.randomUUID()}`,
          request: requests[0],
          method: 'memit',
          layers: [l],
          deltas: [delta],
          info: {},
          modelHash,
          createdAt: new Date().toISOString(),
        };
        applyEdit(model, rec);
        temp.push(rec);
      }
    }
  } finally {
    for (let i = temp.length - 1; i >= 0; i--) revertEdit(model, temp[i].id);
  }
  const layerSeconds = (performance.now() - tLayers) / 1000;

  const info: Record<string, number | string> = {
    edits: reqs.length,
    layers: layers.join(','),
    layers_source: hp.layersSource,
    top_layer: top,
    lambda: nullOn ? 'none (null space)' : hp.mom2UpdateWeight,
    ...(nullOn ? { null_space_ranks: nullRanks.join(',') } : {}),
    clamp_norm_factor: hp.clampNormFactor,
    z_cached: zCached,
    z_target_prob_mean: zProb.reduce((a, b) => a + b, 0) / zProb.length,
    z_delta_norm_mean: z.reduce((a, zi, r) => a + norm(zi.map((v, j) => v - hInit[r][j])), 0) / z.length,
    residual_norms: residualNorms.map((x) => x.toPrecision(4)).join(','),
    delta_w_norms: deltaNorms.map((x) => x.toPrecision(4)).join(','),
    templates: templates.length,
    templates_cached: tpl.cached ? 1 : 0,
    stats_cached: hp.mom2Adjustment ? [...stats.values()].map((s) => (s?.cached ? 1 : 0)).join(',') : 'none',
    cholesky_ridge: jitterMax,
    seconds_stats: statsSeconds,
    seconds_z: zSeconds,
    seconds_layers: layerSeconds,
    seconds_total: (performance.now() - started) / 1000,
  };
  const record: EditRecord = {
    id: crypto.randomUUID(),
    request: { ...requests[0], method: 'memit', layers, ...(nullOn ? { nullSpace: true } : {}) },
    ...(requests.length > 1 ? { requests: requests.map((r) => ({ ...r, method: 'memit' as const, layers, ...(nullOn ? { nullSpace: true } : {}) })) } : {}),
    method: 'memit',
    layers,
    deltas,
    info,
    modelHash,
    createdAt: new Date().toISOString(),
  };
  return { record, hparams: hp, templates, z, hInit, residualNorms, layerKeys, layerHidden };
}
