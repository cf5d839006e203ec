/** Evaluation of edits (efficacy, generalisation, specificity, fluency): `eval/run`. */
import { RequestType } from 'vscode-jsonrpc';
import type { EditMethod, RomeFormula } from './edit.js';
import type { EngineErrorData } from './errors.js';
import type { WithProgress } from './jobs.js';

export interface EvalRunParams extends WithProgress {
  /** Edit ids to evaluate (default: all applied edits). */
  edits?: string[];
  /** CounterFact-format file on the engine's machine; each record is edited, evaluated and reverted. */
  dataset?: string;
  limit?: number;
  /** Editing method for the dataset's records (default rome; 'none' evaluates the unedited model). */
  method?: EditMethod | 'none';
  layer?: number;
  /** MEMIT's layer range (instead of `layer`). */
  layers?: number[];
  /** Records edited together (MEMIT batches). */
  batch?: number;
  /**
   * Stacked edits: the records' edits applied one after another without restoring, every
   * record measured after the last, plus `retention` (greedy accuracy on 1,000 untouched facts
   * before and after); every edit is reverted at the end. As `factlens eval --sequential`.
   */
  sequential?: boolean;
  /** ROME/MEMIT: AlphaEdit's null-space projection of each update (`--null-space`). */
  nullSpace?: boolean;
  /** ROME's update formula (default: the model's, subject-keys without reference hyperparameters). */
  formula?: RomeFormula;
  /** Also return per-record rows (metrics, `took` / `reason`) as `per_record`. */
  perRecord?: boolean;
}
export type EvalRunResult = Record<string, unknown>;
export const EvalRun = new RequestType<EvalRunParams, EvalRunResult, EngineErrorData>('eval/run');
