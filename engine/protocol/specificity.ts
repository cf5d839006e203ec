/**
 * Batched prediction and specificity checks (what the applied edits did to a set of prompts):
 * `predict/batch`, `specificity/check`. The engine's implementation (engine/predict-batch.ts,
 * engine/specificity/) imports these types.
 */
import { RequestType } from 'vscode-jsonrpc';
import type { EngineErrorData } from './errors.js';
import type { Candidate } from './predict.js';

export interface PredictBatchParams {
  /** The prompts (at most 10,000); each is answered as `predict` would answer it alone. */
  prompts: string[];
  /** Candidates per prompt (default 5, at most 100). */
  k?: number;
  /** Named targets whose probability is reported for every prompt (e.g. an edit's old and new object). */
  targets?: string[];
  /** Ask the model without its applied edits (default false: the model as it is now). */
  unedited?: boolean;
}

/** The probability of a named target as the next token: its first token, with a leading space added. */
export interface TargetProb {
  target: string;
  id: number;
  token: string;
  prob: number;
}

export interface BatchPrediction {
  prompt: string;
  /** Prompt length in tokens. */
  tokens: number;
  top: Candidate[];
  targets: TargetProb[];
}

export interface PredictBatchResult {
  model: string;
  backend: string;
  unedited: boolean;
  predictions: BatchPrediction[];
  /** Forward passes run (the prompts are packed into chunks by length). */
  chunks: number;
  seconds: number;
}

/** A prompt to check: its text and, where the file marks one, its subject. */
export interface SpecificityPrompt {
  prompt: string;
  /** The marked subject; null or absent when the prompt marks none (e.g. a neighbourhood prompt). */
  subject?: string | null;
}

export interface SpecificityCheckParams {
  prompts: SpecificityPrompt[];
  /** Candidates kept before and after (default 5, at most 20). */
  k?: number;
}

/**
 * What the applied edits did to one prompt. A prompt *asks the edited fact* when it is about an
 * edited subject and (where the edit names its true object) the unedited model answered that
 * object; other prompts about the subject ask its other facts.
 *  - `unchanged`: does not ask an edited fact, same top-1 token;
 *  - `collateral`: does not ask an edited fact, but its top-1 token changed (collateral damage);
 *  - `moved`: asks an edited fact, and its top-1 token is now that edit's new target;
 *  - `not-reached`: asks an edited fact, but its top-1 token is not the new target (the edit
 *    does not reach this phrasing).
 */
export type CheckVerdict = 'unchanged' | 'collateral' | 'moved' | 'not-reached';

export interface CheckAnswer {
  /** Top-1 token and its probability. */
  token: string;
  prob: number;
  top: Candidate[];
}

export interface SpecificityCheck {
  prompt: string;
  subject: string | null;
  /** The prompt is about an edited subject (its subject, or a subject named in its text). */
  related: boolean;
  /** The top-1 token differs before and after. */
  changed: boolean;
  verdict: CheckVerdict;
  before: CheckAnswer;
  after: CheckAnswer;
  /** Ids of the edits this check concerns: the edits of its subject when related, else every applied edit. */
  edits: string[];
}

/** An applied edit as the checks describe it. */
export interface AppliedEditSummary {
  id: string;
  subject: string;
  target: string;
  targetTrue?: string;
  method: string;
  /** "Paris → Japan": subject → new target (a batch edit lists its first request and a count). */
  label: string;
}

export interface SpecificityCheckResult {
  edits: AppliedEditSummary[];
  checks: SpecificityCheck[];
  /** Specificity: of the `others` (checks that do not ask an edited fact), how many kept their top-1 token. */
  unchanged: number;
  others: number;
  total: number;
  /** Prompts whose "before" answer came from the cache (no forward pass). */
  cachedBefore: number;
  seconds: number;
}

/** Many prompts in padded forward passes; each answered as `predict` answers it alone. Jumps the queue like predict. */
export const PredictBatch = new RequestType<PredictBatchParams, PredictBatchResult, EngineErrorData>('predict/batch');

/**
 * Before (unedited, cached per model content hash and prompt) and after (with the applied edits)
 * answers of prompts, each classified: unchanged, collateral, moved, not-reached.
 */
export const SpecificityCheckRequest = new RequestType<SpecificityCheckParams, SpecificityCheckResult, EngineErrorData>('specificity/check');
