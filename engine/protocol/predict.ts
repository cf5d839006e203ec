/** Next-token prediction: `predict`. */
import { RequestType } from 'vscode-jsonrpc';
import type { EngineErrorData } from './errors.js';

export interface TokenView {
  id: number;
  text: string;
}

export interface Candidate {
  id: number;
  token: string;
  prob: number;
  logprob: number;
}

export interface Prediction {
  model: string;
  backend: string;
  tokens: TokenView[];
  top: Candidate[];
}

export interface PredictParams {
  prompt: string;
  /** How many candidates (default 10, at most 1000). */
  k?: number;
}
/** Runs at once, beside a running trace (it does not wait in the queue behind long jobs). */
export const Predict = new RequestType<PredictParams, Prediction, EngineErrorData>('predict');
