/**
 * Edits as values (`edit/apply`, `edit/revert`, `edit/list`) and the second-moment statistics
 * edits read (`stats/compute`). A record carries the request, the method and the weight deltas
 * it adds; the engine applies, reverts and lists records, and the extension's journal
 * re-applies them after an engine restart without recomputing.
 */
import { RequestType } from 'vscode-jsonrpc';
import type { EngineErrorData } from './errors.js';
import type { Candidate } from './predict.js';
import type { WithProgress } from './jobs.js';

export const EDIT_METHODS = ['rome', 'memit', 'ft', 'ft-l'] as const;
export type EditMethod = (typeof EDIT_METHODS)[number];

export const ROME_FORMULAS = ['subject-keys', 'keys', 'consistent', 'reference'] as const;
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
   * ROME's update (rome-spec §2.8; engine/edit/rome.ts): 'subject-keys' (the default where the
   * model has no reference hyperparameters: every template key, and the subject's key after the
   * same prefixes without the prompt's words before it, gets v*'s change), 'keys' (the template
   * keys only), 'consistent' (k̄ ↦ v*; the default for the reference models) or 'reference'
   * (the original code's: the bare prompt's key ↦ v*).
   */
  formula?: RomeFormula;
  /** ROME/MEMIT: confine the update to the null space of the key statistics (AlphaEdit; engine/edit/nullspace.ts). */
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

/** Overrides of the method's hyperparameters (ROME's names; MEMIT adds λ). */
export interface EditHparamOverrides {
  vNumGradSteps?: number;
  vLr?: number;
  vWeightDecay?: number;
  clampNormFactor?: number;
  klFactor?: number;
  mom2Adjustment?: boolean;
  mom2NSamples?: number;
  /** MEMIT's λ. */
  mom2UpdateWeight?: number;
}

/** Options of the edit computation (ROME's; other methods read what applies to them). */
export interface EditComputeOptions {
  /** Documents for the statistics (default: all of the corpus, capped at 100,000). */
  statsSamples?: number;
  /** Reference .npz statistics to import instead of computing them (a file on the engine's machine). */
  statsNpz?: string;
  templateSeed?: number;
  /** Facts file for the layer choice by causal tracing (default: the model's facts.jsonl). */
  facts?: string;
  /** The layer comes from request.layers, not from here. */
  hparams?: EditHparamOverrides;
}

/** Compute an edit from a request and apply it. */
export interface EditComputeParams extends WithProgress {
  request: EditRequest;
  options?: EditComputeOptions;
}

/**
 * Apply a record computed earlier (the journal re-applies records after an engine restart).
 * A record computed on another model (content hash) is refused unless `force` is set.
 */
export interface EditReapplyParams extends WithProgress {
  record: EditRecord;
  force?: boolean;
}

export type EditApplyParams = EditComputeParams | EditReapplyParams;

/** Which form of edit/apply a params object is. */
export function isReapply(p: EditApplyParams): p is EditReapplyParams {
  return 'record' in p && p.record !== undefined;
}

export const EditApply = new RequestType<EditApplyParams, EditRecord, EngineErrorData>('edit/apply');

export interface EditRevertParams {
  id: string;
}
export interface EditRevertResult {
  reverted: string;
  /** Ids still applied, oldest first. */
  remaining: string[];
}
export const EditRevert = new RequestType<EditRevertParams, EditRevertResult, EngineErrorData>('edit/revert');

export type EditListParams = Record<string, never>;
/** The edits applied to the loaded model, oldest first. */
export const EditList = new RequestType<EditListParams, EditRecord[], EngineErrorData>('edit/list');

/**
 * Second-moment statistics of MLP keys (ROME's C = E[k kᵀ]) for some layers, from or into the
 * disk cache that edits read.
 */
export interface StatsComputeParams extends WithProgress {
  /** Layers (default: the layer a ROME edit of this model would use). */
  layers?: number[];
  /** Corpus file (.txt or .jsonl); default: `corpus.txt` in the model folder. */
  corpus?: string;
  /** Number of documents (default: all, capped at 100,000). */
  samples?: number;
  /** Padded tokens per batch (default max(3·n_ctx, 2048)). */
  batchTokens?: number;
  /** Read and write the disk cache (default true). */
  cache?: boolean;
}

/** Per layer: what was summed and where it is cached (the f×f matrix itself stays in the engine). */
export interface LayerStatsSummary {
  layer: number;
  /** MLP width: C is f×f. */
  f: number;
  /** Number of tokens summed. */
  count: number;
  /** Documents used. */
  documents: number;
  corpus: string;
  /** True when read from the disk cache (or an imported .npz). */
  cached: boolean;
  /** Cache file (null when caching is off). */
  file: string | null;
  /** Wall-clock seconds of this call (computing or reading). */
  seconds: number;
}
export interface StatsComputeResult {
  layers: LayerStatsSummary[];
}
export const StatsCompute = new RequestType<StatsComputeParams, StatsComputeResult, EngineErrorData>('stats/compute');

/**
 * What an edit does to predictions: for each prompt, the top candidates of the next token,
 * the probability of each target (all its tokens, teacher forced) and a greedy continuation.
 * `unedited` probes the original weights (every applied edit left out, nothing changed in the
 * engine), which is the "before" of the edit-diff view.
 */
export interface EditProbeParams {
  prompts: string[];
  /** Target strings scored after every prompt (a leading space is added, as edits do). */
  targets: string[];
  /** Top candidates per prompt (default 5). */
  k?: number;
  /** Greedy continuation length in tokens (default 20; 0: none). */
  tokens?: number;
  unedited?: boolean;
}

export interface ProbeTarget {
  target: string;
  /** P(all target tokens | prompt). */
  prob: number;
  /** exp(mean log p) over the target's tokens. */
  meanTokenProb: number;
  tokens: number;
}

export interface PromptProbeResult {
  prompt: string;
  top: Candidate[];
  targets: ProbeTarget[];
  /** The greedy continuation (text after the prompt); null when tokens is 0. */
  generation: string | null;
}

export interface EditProbeResult {
  /** The edits in effect for this probe (none when unedited). */
  edits: string[];
  unedited: boolean;
  prompts: PromptProbeResult[];
}
export const EditProbe = new RequestType<EditProbeParams, EditProbeResult, EngineErrorData>('edit/probe');

/** Saves the model with its applied edits as a checkpoint folder (float32 safetensors) on the engine's machine. */
export interface EditSaveParams {
  dir: string;
}
export interface EditSaveResult {
  dir: string;
  files: string[];
  bytes: number;
  /** The edits the saved weights contain. */
  edits: string[];
}
export const EditSave = new RequestType<EditSaveParams, EditSaveResult, EngineErrorData>('edit/save');
