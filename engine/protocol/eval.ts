/** Evaluation of edits (efficacy, generalisation, specificity, fluency): `eval/run`. */
import { RequestType } from 'vscode-jsonrpc';
import type { EditMethod } from './edit.js';
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
}
export type EvalRunResult = Record<string, unknown>;
export const EvalRun = new RequestType<EvalRunParams, EvalRunResult, EngineErrorData>('eval/run');
