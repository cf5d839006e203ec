/**
 * Edits as values: a request, the method that computed it, and the weight deltas it adds.
 * Shared by the engine (apply/revert/list/save), the protocol and the extension's journal,
 * which re-applies records after an engine restart without recomputing them.
 */

export type EditMethod = 'rome' | 'memit' | 'ft' | 'ft-l';

export const ROME_FORMULAS = ['keys', 'consistent', 'reference'] as const;
export type RomeFormula = (typeof ROME_FORMULAS)[number];

export interface EditRequest {
  /** Prompt with "{}" where the subject goes, e.g. "{} is located in the country of". */
  prompt: string;
  subject: string;
  /** The new object, e.g. "Japan" (a leading space is added, as the reference does). */
  target: string;
  /** The true object, for reporting and evaluation only. */
  targetTrue?: string;
  method?: EditMethod;
  /** ROME/FT layer, or MEMIT layers; defaults come from the model's hyperparameters. */
  layers?: number[];
  /**
   * ROME's update (rome-spec §2.8): 'keys' (every template key gets v*'s change; the default
   * where the model has no reference hyperparameters), 'consistent' (k̄ ↦ v*; the default for
   * the reference models) or 'reference' (the original code's: the bare prompt's key ↦ v*).
   */
  formula?: RomeFormula;
  /** ROME/MEMIT: confine the update to the null space of the key statistics (AlphaEdit; nullspace.ts). */
  nullSpace?: boolean;
  /** Corpus for second-moment statistics (default: the model's corpus.txt). */
  corpus?: string;
}

/** W_layer += u ⊗ v (u ∈ R^f, v ∈ R^d) on the MLP output matrix [f, d]. */
export interface RankOneDelta {
  kind: 'rank-one';
  layer: number;
  u: number[];
  v: number[];
}

/** W_layer += delta ([f, d] row-major) and b += biasDelta, for fine-tuning methods. */
export interface DenseDelta {
  kind: 'dense';
  layer: number;
  shape: [number, number];
  /** Base64 of little-endian float32, to keep journals compact. */
  delta: string;
  biasDelta?: string;
}

export type WeightDelta = RankOneDelta | DenseDelta;

export interface EditRecord {
  id: string;
  request: EditRequest;
  /** Every request of a batch edit (MEMIT); `request` is then the first of them. */
  requests?: EditRequest[];
  method: EditMethod;
  layers: number[];
  deltas: WeightDelta[];
  /** Diagnostics: k·u, ‖ΔW‖, v* loss, steps, seconds. */
  info: Record<string, number | string>;
  /**
   * The verdict (engine/edit/verdict.ts): the new target is the greedy answer on the edit
   * prompt once the edit is applied (for a batch: on every request's prompt).
   */
  took?: boolean;
  /** When it did not take: the measured cause and what to try. */
  reason?: string;
  /** Model content hash the deltas were computed on (re-application checks it). */
  modelHash: string;
  createdAt: string;
}
