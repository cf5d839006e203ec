/**
 * MEMIT hyperparameters (rome-spec §5.1). GPT-2 XL and GPT-J use the reference values. For
 * other models the layer range R is derived from the same causal trace that picks ROME's
 * layer (hparams.ts chooseLayer): R runs from the peak of the MLP effect at the subject's
 * last token to the end of its plateau (the ROME layer), at least two layers — the reference
 * ranges are likewise the layers of the MLP plateau that end at the ROME layer (XL: 13–17,
 * ROME 17). Without a trace, R is the ⌈5·L/48⌉ (≥ 2) layers ending at the ROME layer, XL's
 * share of depth.
 *
 * λ (mom2_update_weight) for other models: f/4 (f the MLP width). Why: for a key typical under
 * C, kᵀ(λC)⁻¹k ≈ f/λ, and one isolated edit closes a/(1+a) of its residual at a layer with
 * a = f/λ. The reference λ gives a ≈ 0.3 (XL: 6400/20000) and 1.1 (GPT-J: 16384/15000); on
 * tinyworld (f = 1024) λ = 15,000 gives a ≈ 0.07 and no edit lands (ES 0 of 30), and the
 * sweep 15000 → 30 saturates from λ ≈ f/4 (a ≈ 4) on, with NS unchanged (README, MEMIT).
 */
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import type { JobControl } from '../util/jobs.js';
import { checkLayer, chooseLayer, findReference, ROME_DEFAULTS, type LayerChoiceOptions, type RomeHparams } from './hparams.js';

export interface MemitHparams extends Omit<RomeHparams, 'layer' | 'layerSource'> {
  layers: number[];
  layersSource: string;
  /** λ in A = (λ·C + K Kᵀ)⁻¹ K. */
  mom2UpdateWeight: number;
  /** Template start words: one generated text per word (rome-spec §5.2). */
  contextTemplateStarts: string[];
}

export const MEMIT_DEFAULTS: Omit<MemitHparams, 'layers' | 'layersSource'> = {
  ...ROME_DEFAULTS,
  clampNormFactor: 0.75,
  mom2UpdateWeight: 15_000,
  contextTemplateLengths: [[10, 5]],
  contextTemplateStarts: ['The', 'Therefore', 'Because', 'I', 'You'],
};

interface MemitReference {
  name: string;
  modelType: string;
  nLayer: number;
  dModel: number;
  layers: number[];
  mom2UpdateWeight: number;
  vNumGradSteps: number;
}

export const MEMIT_REFERENCE_MODELS: MemitReference[] = [
  { name: 'gpt2-xl', modelType: 'gpt2', nLayer: 48, dModel: 1600, layers: [13, 14, 15, 16, 17], mom2UpdateWeight: 20_000, vNumGradSteps: 20 },
  { name: 'gpt-j-6B', modelType: 'gptj', nLayer: 28, dModel: 4096, layers: [3, 4, 5, 6, 7, 8], mom2UpdateWeight: 15_000, vNumGradSteps: 25 },
];

function range(lo: number, hi: number): number[] {
  return Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
}

export function checkLayers(model: LoadedModel, layers: number[]): number[] {
  if (!Array.isArray(layers) || layers.length === 0) {
    throw new FactLensError('INVALID_ARGUMENT', 'MEMIT needs at least one layer', { field: 'layers' });
  }
  for (const l of layers) checkLayer(model.config, l, 'layers');
  const sorted = [...new Set(layers)].sort((a, b) => a - b);
  if (sorted.length !== layers.length) throw new FactLensError('INVALID_ARGUMENT', `MEMIT layers repeat: [${layers.join(', ')}]`, { field: 'layers' });
  return sorted;
}

export async function memitHparams(
  model: LoadedModel,
  opts: { layers?: number[] } & LayerChoiceOptions = {},
  control: JobControl = {},
): Promise<MemitHparams> {
  const cfg = model.config;
  const ref = findReference(MEMIT_REFERENCE_MODELS, cfg);
  const base: Omit<MemitHparams, 'layers' | 'layersSource'> = ref
    ? { ...MEMIT_DEFAULTS, mom2UpdateWeight: ref.mom2UpdateWeight, vNumGradSteps: ref.vNumGradSteps }
    : { ...MEMIT_DEFAULTS, mom2UpdateWeight: Math.max(1, Math.round(cfg.dMlp / 4)) };
  if (opts.layers !== undefined) return { ...base, layers: checkLayers(model, opts.layers), layersSource: 'requested' };
  if (ref) return { ...base, layers: ref.layers, layersSource: `reference hyperparameters (${ref.name})` };
  const choice = await chooseLayer(model, opts, control);
  const top = choice.layer;
  let lo: number;
  let why: string;
  if (choice.trace && choice.trace.peakLayer < top) {
    lo = choice.trace.peakLayer;
    why = `causal tracing: layers from the MLP effect's peak (${lo}) to the end of its plateau (${top}, ROME's layer)`;
  } else {
    const n = Math.max(2, Math.ceil((5 * cfg.nLayer) / 48));
    lo = Math.max(0, top - n + 1);
    why = `the ${top - lo + 1} layers ending at ROME's layer ${top} (${choice.source})`;
  }
  if (lo === top && top > 0) lo = top - 1;
  return { ...base, layers: range(lo, top), layersSource: why };
}
