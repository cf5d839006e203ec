/**
 * Fine-tuning baselines FT and FT+L (rome-spec §4; the reference's baselines/ft/ft_main.py).
 *
 * Only the MLP output matrix (c_proj: `blocks[l].mlpOut.w` [f, d]) and its bias of the chosen
 * layer(s) are trained, with Adam (torch defaults β = (0.9, 0.999), eps 1e-8, no weight decay).
 *
 * Loss (the reference's, including its quirk): log-softmax of the logits at the LAST PROMPT
 * TOKEN only, −log p of EVERY token of " " + target_new read at that one position, averaged
 * over the target tokens (tokens equal to the end-of-text id are masked, as the reference masks
 * GPT-2's unk = eos = pad id). For a multi-token target this is a "bag of target tokens at the
 * next position", not teacher forcing: it pushes all target tokens up at the first position and
 * never trains the later positions, and its minimum is not 0 (for two distinct tokens
 * p₁ + p₂ ≤ 1 gives a floor of ln 2 ≈ 0.69), so such edits never reach the early stop and run
 * all steps. The evaluation (eval/counterfact.ts) still scores the target teacher-forced.
 * tinyworld's CounterFact set has many multi-token targets: 226 of its 1,000 target_new
 * (e.g. " Nairobi", " sculptor", " Rio de Janeiro").
 *
 * Steps: up to `steps` (25); each step computes the loss, and takes an Adam step only if the
 * loss is ≥ `stopLoss` (1e-2); training stops at the first loss < 1e-2 (batch of one request,
 * so the reference's epoch average is that loss). FT+L: after every step each parameter is
 * clamped into [θ₀ − ε, θ₀ + ε] (an L∞ ball around the original weights).
 *
 * Hyperparameters. Reference models (recognised by config shape) get the reference config:
 * gpt2-xl FT layer 1, FT+L layer 0 ε 5e-4; gpt2-large FT+L layer 0 ε 1e-3; gpt2-medium FT+L
 * layer 0 ε 2e-3; GPT-J FT layer 21, FT+L layer 0 ε 5e-5; lr 5e-4, 25 steps. Configurations the
 * reference does not ship (e.g. unconstrained FT on gpt2-medium) and every other model use the
 * ROME layer (hparams.ts chooseLayer: causal tracing; layer 1 on tinyworld) and, for FT+L,
 * ε = 7.5e-3 (DEFAULT_EPSILON, chosen on tinyworld, see its comment).
 *
 * Gradient on WASM: the layers below the first trained layer do not depend on the parameters,
 * so their output is computed once and each step runs blocks l…L−1 only; the target
 * log-probabilities are read with a constant one-hot weight (mul + sum), never a gather
 * gradient; every frozen matrix (all but the trained ones, the unembedding included) is a
 * fastgrad.ts frozen-weight product (input-only gradient through a cached Wᵀ; W is neither
 * saved nor differentiated: WASM's tape would otherwise save a full copy of the [d, V]
 * unembedding every step), and the BatchMatMul gradient is fastgrad's transposed-matmul-free
 * one. The trained matrices are plain matmuls, so their gradient comes from the tape.
 *
 * The model is never modified: the parameters are trained as separate tensors on a view of the
 * model. The result is an EditRecord with one DenseDelta per layer (θ − θ₀, float32 base64),
 * applied with apply.ts's applyEdit.
 */
import * as crypto from 'node:crypto';
import * as tf from '@tensorflow/tfjs-core';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import type { BlockWeights } from '../model/decoder.js';
import { attentionBias, block, finalNorm, selectRows, unembed, type DecoderModel } from '../runtime/decoder-forward.js';
import { unembedOf } from '../model/unembedding.js';
import { forward } from '../runtime/forward.js';
import { padBatch } from '../runtime/batch.js';
import { interventionHook } from '../runtime/interventions.js';
import { site } from '../runtime/sites.js';
import { Job, type JobControl } from '../util/jobs.js';
import { scoped } from '../util/scope.js';
import { modelContentHash } from './hash.js';
import { checkLayer, chooseLayer, referenceModel } from './hparams.js';
import { FrozenWeights, withFastGradients } from './fastgrad.js';
import { setWeightMatMul, type WeightMatMul } from '../runtime/decoder-forward.js';
import { prepareRequest } from './rome.js';
import { encodeF32 } from './state.js';
import type { DenseDelta, EditRecord, EditRequest } from './types.js';
import { fillTemplate } from '../../formats/template.js';

export const FT_LR = 5e-4;
export const FT_STEPS = 25;
export const FT_STOP_LOSS = 1e-2;
/**
 * FT+L's ε for models without a reference config. The reference shrinks ε as models grow
 * (2e-3 for gpt2-medium, 1e-3 large, 5e-4 XL; picked by sweeps on 50 CounterFact cases) and
 * its FT+L reaches efficacy ≥ 99 on every model. On tinyworld (layer 1, lr 5e-4, 25 steps) we
 * swept ε on CounterFact dev records 500–524 (not the first records we report on), post-edit:
 *
 *   ε      ES    PS    NS    S
 *   2e-3    0     0   100    0     (the reference's gpt2-medium value moves nothing here)
 *   5e-3   76    48   100   68.2
 *   6e-3   88    64    98   80.7
 *   7.5e-3 100   76    98   89.9   ← the smallest ε with ES ≥ 99
 *   1e-2  100    86    98   94.2
 *   2e-2  100    88    98   95.0   (= FT: Adam moves a parameter by at most ≈ lr per step, so
 *                                    ε ≥ 25 · 5e-4 = 1.25e-2 never binds)
 *
 * so 7.5e-3, the reference's criterion (smallest ε with full efficacy).
 */
export const DEFAULT_EPSILON = 7.5e-3;

interface RefFT {
  ft?: { layer: number };
  ftl?: { layer: number; epsilon: number };
}

const REFERENCE_FT: Record<string, RefFT> = {
  'gpt2-xl': { ft: { layer: 1 }, ftl: { layer: 0, epsilon: 5e-4 } },
  'gpt2-large': { ftl: { layer: 0, epsilon: 1e-3 } },
  'gpt2-medium': { ftl: { layer: 0, epsilon: 2e-3 } },
  'gpt-j-6B': { ft: { layer: 21 }, ftl: { layer: 0, epsilon: 5e-5 } },
};

/** FT+L's default ε on a model: the reference config's for the reference models, else DEFAULT_EPSILON. */
export function defaultEpsilon(config: LoadedModel['config']): number {
  const ref = referenceModel(config);
  return (ref && REFERENCE_FT[ref.name]?.ftl?.epsilon) || DEFAULT_EPSILON;
}

export interface FTOptions {
  /** FT+L (true) or FT (false). */
  constrained: boolean;
  /** L∞ radius of FT+L (default: the reference model's, else DEFAULT_EPSILON). */
  epsilon?: number;
  lr?: number;
  steps?: number;
  /** Layers whose MLP output matrix and bias are trained (default: request.layers, else as above). */
  layers?: number[];
  stopLoss?: number;
  /** Transposed-matmul-free gradient (default true). */
  fastGrad?: boolean;
  /** Facts file for the ROME layer choice (default: the model's facts.jsonl). */
  facts?: string;
  onStep?: (s: FTStep) => void;
}

export interface FTStep {
  step: number;
  loss: number;
  /** Whether an Adam step followed this loss (loss ≥ stopLoss). */
  stepped: boolean;
}

export interface FTHparams {
  layers: number[];
  lr: number;
  steps: number;
  epsilon: number | null;
  stopLoss: number;
  source: string;
}

/** The hyperparameters FT / FT+L use on a model (see the module comment). */
export async function ftHparams(model: LoadedModel, opts: FTOptions, requestLayers?: number[], control: JobControl = {}): Promise<FTHparams> {
  const ref = referenceModel(model.config);
  const refFT = ref ? REFERENCE_FT[ref.name] : undefined;
  const refCfg = opts.constrained ? refFT?.ftl : refFT?.ft;
  let layers = opts.layers ?? requestLayers;
  let source: string;
  if (layers && layers.length) {
    source = 'requested';
  } else if (refCfg) {
    layers = [refCfg.layer];
    source = `reference ${opts.constrained ? 'FT+L' : 'FT'} config (${ref!.name})`;
  } else {
    const choice = await chooseLayer(model, { facts: opts.facts }, control);
    layers = [choice.layer];
    source = `ROME layer: ${choice.source}`;
  }
  layers = [...new Set(layers)].sort((a, b) => a - b);
  for (const l of layers) checkLayer(model.config, l, 'layers');
  let epsilon: number | null = null;
  if (opts.constrained) {
    epsilon = opts.epsilon ?? (refCfg && 'epsilon' in refCfg ? (refCfg as { epsilon: number }).epsilon : DEFAULT_EPSILON);
    if (!(epsilon > 0) || !Number.isFinite(epsilon)) {
      throw new FactLensError('INVALID_ARGUMENT', `epsilon must be a positive number, not ${epsilon}`, { field: 'epsilon' });
    }
  }
  const lr = opts.lr ?? FT_LR;
  const steps = opts.steps ?? FT_STEPS;
  if (!(lr > 0)) throw new FactLensError('INVALID_ARGUMENT', `lr must be positive, not ${lr}`, { field: 'lr' });
  if (!Number.isInteger(steps) || steps < 1) throw new FactLensError('INVALID_ARGUMENT', `steps must be a whole number ≥ 1, not ${steps}`, { field: 'steps' });
  return { layers, lr, steps, epsilon, stopLoss: opts.stopLoss ?? FT_STOP_LOSS, source };
}

// ---------------------------------------------------------------------------------------
// the objective
// ---------------------------------------------------------------------------------------

export interface FTObjective {
  layers: number[];
  /** θ₀: [W_l, b_l] per layer in `layers` order (b_l only when the layer has a bias). Owned by the model. */
  params0: tf.Tensor[];
  /** Which entry of params0 belongs to which layer and what it is. */
  slots: Array<{ layer: number; kind: 'w' | 'b' }>;
  value(params: tf.Tensor[]): number;
  /** Loss and its gradients w.r.t. params (the caller disposes the gradients). */
  valueAndGrads(params: tf.Tensor[]): { value: number; grads: tf.Tensor[] };
  dispose(): void;
}

/**
 * The FT loss as a function of the trained parameters: mean over target tokens (eos masked)
 * of −log p(token) at the last prompt token.
 */
export function ftObjective(
  model: DecoderModel,
  promptIds: number[],
  targetIds: number[],
  layers: number[],
  opts: { maskId?: number | null; fastGrad?: boolean } = {},
): FTObjective {
  const cfg = model.config;
  const L = cfg.nLayer;
  const d = cfg.dModel;
  const V = cfg.vocabSize;
  const T = promptIds.length;
  if (T === 0) throw new FactLensError('INVALID_ARGUMENT', 'the prompt has no tokens', { field: 'prompt' });
  if (T > cfg.nCtx) throw new FactLensError('PROMPT_TOO_LONG', `the prompt is ${T} tokens; the model reads at most ${cfg.nCtx}`, { field: 'prompt' });
  const kept = targetIds.filter((t) => t !== opts.maskId);
  if (kept.length === 0) throw new FactLensError('INVALID_ARGUMENT', 'the target has no tokens to train on', { field: 'target' });
  const sorted = [...new Set(layers)].sort((a, b) => a - b);
  const lmin = sorted[0];
  const slots: Array<{ layer: number; kind: 'w' | 'b' }> = [];
  const params0: tf.Tensor[] = [];
  for (const l of sorted) {
    const mo = model.weights.blocks[l].mlpOut;
    slots.push({ layer: l, kind: 'w' });
    params0.push(mo.w);
    if (mo.b) {
      slots.push({ layer: l, kind: 'b' });
      params0.push(mo.b);
    }
  }
  const consts = scoped(() => {
    const batch = padBatch([promptIds], 'right');
    const reads = new Map<string, tf.Tensor3D>();
    const hook = interventionHook([{ site: site.residPre(lmin), op: 'read' }], reads);
    forward(model, batch, { hook, stopAfterLayer: lmin, logitsAt: 'none' });
    const w = new Float32Array(V);
    for (const t of kept) w[t] += 1 / kept.length;
    return { h0: reads.get(site.residPre(lmin))!, bias: attentionBias(batch.mask, 0, T), targetW: tf.tensor2d(w, [1, V]) };
  });
  // fastgrad.ts's frozen-weight products for every matrix except the trained ones, which stay
  // plain (differentiable) matmuls: `trainable` holds the current parameter tensors.
  const frozen = new FrozenWeights();
  frozen.knownTranspose(unembedOf(model.weights), model.weights.head);
  let trainable = new Set<tf.Tensor>();
  const partlyFrozen: WeightMatMul = (x, w) => (trainable.has(w) ? (tf.matMul(x, w) as tf.Tensor2D) : frozen.matMul(x, w));
  const fast = opts.fastGrad !== false;
  const run = <R>(fn: () => R): R =>
    fast
      ? withFastGradients(frozen, () => {
          const prev = setWeightMatMul(partlyFrozen);
          try {
            return fn();
          } finally {
            setWeightMatMul(prev);
          }
        })
      : fn();

  const lossOf = (...params: tf.Tensor[]): tf.Scalar => {
    trainable = new Set(params);
    const blocks: BlockWeights[] = model.weights.blocks.slice();
    slots.forEach((s, i) => {
      const cur = blocks[s.layer];
      blocks[s.layer] = { ...cur, mlpOut: s.kind === 'w' ? { ...cur.mlpOut, w: params[i] as tf.Tensor2D } : { ...cur.mlpOut, b: params[i] as tf.Tensor1D } };
    });
    const view: DecoderModel = { config: cfg, weights: { ...model.weights, blocks } };
    let h = consts.h0;
    for (let l = lmin; l < L; l++) h = block(view, l, h, consts.bias).h;
    const hn = finalNorm(view, h);
    const last = selectRows(tf.reshape(hn, [T, d]) as tf.Tensor2D, [T - 1]);
    const logp = tf.logSoftmax(unembed(view, last));
    return tf.neg(tf.sum(tf.mul(logp, consts.targetW))) as tf.Scalar;
  };

  return {
    layers: sorted,
    params0,
    slots,
    value(params) {
      const v = run(() => tf.tidy(() => lossOf(...params)));
      const x = v.dataSync()[0];
      v.dispose();
      return x;
    },
    valueAndGrads(params) {
      const r = run(() => tf.tidy(() => tf.valueAndGrads((...xs: tf.Tensor[]) => lossOf(...xs))(params)));
      const x = r.value.dataSync()[0];
      r.value.dispose();
      return { value: x, grads: r.grads };
    },
    dispose() {
      frozen.release();
      tf.dispose([consts.h0, consts.bias, consts.targetW]);
    },
  };
}

// ---------------------------------------------------------------------------------------
// the edit
// ---------------------------------------------------------------------------------------

/** Computes an FT or FT+L edit against the model's current weights (the model is not modified). */
export async function computeFT(model: LoadedModel, request: EditRequest, opts: FTOptions, control: JobControl = {}): Promise<EditRecord> {
  const started = performance.now();
  const method = opts.constrained ? 'ft-l' : 'ft';
  const job = new Job(control, opts.constrained ? 'FT+L edit' : 'FT edit');
  const req = prepareRequest(model, request);
  // The layer choice may run causal tracing once per model (then cached): its progress is ours.
  const hp = await ftHparams(model, opts, request.layers, control);
  const promptIds = model.tokenizer.encode(fillTemplate(req.prompt, req.subject));
  const obj = ftObjective(model, promptIds, req.targetIds, hp.layers, { maskId: model.tokenizer.eosId, fastGrad: opts.fastGrad });
  const beta1 = 0.9;
  const beta2 = 0.999;
  const adamEps = 1e-8;
  let params = obj.params0.map((p) => p.clone());
  let m = params.map((p) => tf.zerosLike(p));
  let v = params.map((p) => tf.zerosLike(p));
  const bounds =
    hp.epsilon !== null ? obj.params0.map((p) => tf.tidy(() => [tf.sub(p, hp.epsilon!), tf.add(p, hp.epsilon!)] as [tf.Tensor, tf.Tensor])) : null;
  const losses: number[] = [];
  let t = 0;
  let lossAfter = NaN;
  let deltas: DenseDelta[] = [];
  let maxAbs = 0;
  let sq = 0;
  try {
    for (let it = 0; it < hp.steps; it++) {
      const { value, grads } = obj.valueAndGrads(params);
      losses.push(value);
      const stepped = value >= hp.stopLoss;
      if (stepped) {
        t++;
        const bc1 = 1 - beta1 ** t;
        const bc2 = 1 - beta2 ** t;
        const next = params.map((p, i) =>
          tf.tidy(() => {
            const g = grads[i];
            const m2 = tf.add(tf.mul(m[i], beta1), tf.mul(g, 1 - beta1));
            const v2 = tf.add(tf.mul(v[i], beta2), tf.mul(tf.square(g), 1 - beta2));
            const denom = tf.add(tf.div(tf.sqrt(v2), Math.sqrt(bc2)), adamEps);
            let p2 = tf.sub(p, tf.mul(tf.div(m2, denom), hp.lr / bc1));
            if (bounds) p2 = tf.minimum(tf.maximum(p2, bounds[i][0]), bounds[i][1]);
            return [p2, m2, v2] as [tf.Tensor, tf.Tensor, tf.Tensor];
          }),
        );
        tf.dispose([...params, ...m, ...v]);
        params = next.map((x) => x[0]);
        m = next.map((x) => x[1]);
        v = next.map((x) => x[2]);
      }
      tf.dispose(grads);
      opts.onStep?.({ step: it, loss: value, stepped });
      await job.checkpoint((it + 1) / hp.steps, `${method} step ${it + 1}/${hp.steps}: loss ${value.toFixed(4)}`);
      if (!stepped) break;
    }
    lossAfter = obj.value(params);
    // θ − θ₀ per parameter, in float32 (the delta applyEdit adds back). FT+L: θ was clamped to
    // float32(θ₀ ± ε), which can sit an ulp of θ₀ outside the ball; the stored delta is clipped
    // to [−ε, ε] so it is within ε exactly.
    const lim = hp.epsilon ?? Infinity;
    const diffs = params.map((p, i) => {
      const a = p.dataSync() as Float32Array;
      const b = obj.params0[i].dataSync() as Float32Array;
      const out = new Float32Array(a.length);
      for (let k = 0; k < a.length; k++) {
        out[k] = Math.max(-lim, Math.min(lim, a[k] - b[k]));
        const x = Math.abs(out[k]);
        if (x > maxAbs) maxAbs = x;
        sq += out[k] * out[k];
      }
      return out;
    });
    const { dMlp: f, dModel: dm } = model.config;
    deltas = obj.layers.map((layer) => {
      const wi = obj.slots.findIndex((s) => s.layer === layer && s.kind === 'w');
      const bi = obj.slots.findIndex((s) => s.layer === layer && s.kind === 'b');
      const dd: DenseDelta = { kind: 'dense', layer, shape: [f, dm], delta: encodeF32(diffs[wi]) };
      if (bi >= 0) dd.biasDelta = encodeF32(diffs[bi]);
      return dd;
    });
  } finally {
    tf.dispose([...params, ...m, ...v]);
    if (bounds) tf.dispose(bounds.flat());
    obj.dispose();
  }
  const info: Record<string, number | string> = {
    layers: hp.layers.join(','),
    layer_source: hp.source,
    lr: hp.lr,
    epsilon: hp.epsilon ?? 'none',
    max_steps: hp.steps,
    adam_steps: t,
    loss_initial: losses[0],
    loss_final: losses[losses.length - 1],
    loss_after: lossAfter,
    target_tokens: req.targetIds.length,
    loss_trajectory: losses.map((x) => x.toPrecision(4)).join(','),
    max_abs_delta: maxAbs,
    delta_norm: Math.sqrt(sq),
    seconds_total: (performance.now() - started) / 1000,
  };
  return {
    id: crypto.randomUUID(),
    request: { ...request, method, layers: hp.layers },
    method,
    layers: hp.layers,
    deltas,
    info,
    modelHash: modelContentHash(model),
    createdAt: new Date().toISOString(),
  };
}

function numberOpt(o: Record<string, unknown>, k: string): number | undefined {
  const x = o[k];
  return typeof x === 'number' ? x : undefined;
}

function ftOptionsFrom(o: Record<string, unknown>, constrained: boolean): FTOptions {
  return {
    constrained,
    epsilon: numberOpt(o, 'epsilon'),
    lr: numberOpt(o, 'lr'),
    steps: numberOpt(o, 'steps'),
    layers: Array.isArray(o.layers) ? (o.layers as number[]) : undefined,
    facts: typeof o.facts === 'string' ? o.facts : undefined,
  };
}

/** apply.ts EditComputer for method 'ft' (for `registerEditMethod('ft', computeFTEdit)`). */
export function computeFTEdit(model: LoadedModel, request: EditRequest, control: JobControl = {}, opts: Record<string, unknown> = {}): Promise<EditRecord> {
  return computeFT(model, request, ftOptionsFrom(opts, false), control);
}

/** apply.ts EditComputer for method 'ft-l'. */
export function computeFTLEdit(model: LoadedModel, request: EditRequest, control: JobControl = {}, opts: Record<string, unknown> = {}): Promise<EditRecord> {
  return computeFT(model, request, ftOptionsFrom(opts, true), control);
}
