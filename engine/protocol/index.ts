/**
 * The engine protocol: every JSON-RPC 2.0 method, notification, parameter and result the
 * engine process (engine/server/) and its clients (engine/client/, the extension) exchange.
 * The wire types live here, one file per area, and the engine's implementation modules import
 * them (never the other way round), so there is one definition of every shape.
 *
 * `REQUESTS` maps each method name to its typed constant. The server's handler table is a
 * mapped type over it (method → handler of exactly that request's params and result) and its
 * validation schemas are typed against the same params, so renaming or retyping a field is a
 * compile error in the server, the client and the extension (test/protocol-types.test.ts).
 *
 * JSON has no NaN or Infinity: numbers the engine computes as NaN (a trace cell that is not
 * computed) or ±Infinity (log 0) arrive as null.
 *
 * Loaded by the extension host and (types only) by the webviews: nothing here imports an
 * engine implementation module or tfjs.
 */
import type { RequestType } from 'vscode-jsonrpc';
import { Initialize, Shutdown } from './connection.js';
import { EditApply, EditList, EditProbe, EditRevert, EditSave, StatsCompute } from './edit.js';
import { EvalRun } from './eval.js';
import { JobsList } from './jobs.js';
import { ModelInfoRequest, ModelLoad } from './model.js';
import { Predict } from './predict.js';
import { PredictBatch, SpecificityCheckRequest } from './specificity.js';
import { Trace, TraceAverage } from './trace.js';

export * from './connection.js';
export * from './edit.js';
export * from './errors.js';
export * from './eval.js';
export * from './jobs.js';
export * from './model.js';
export * from './predict.js';
export * from './specificity.js';
export * from './trace.js';

/** Every request, by method name. */
export const REQUESTS = {
  initialize: Initialize,
  'model/load': ModelLoad,
  'model/info': ModelInfoRequest,
  predict: Predict,
  'predict/batch': PredictBatch,
  'specificity/check': SpecificityCheckRequest,
  trace: Trace,
  traceAverage: TraceAverage,
  'edit/apply': EditApply,
  'edit/revert': EditRevert,
  'edit/list': EditList,
  'edit/probe': EditProbe,
  'edit/save': EditSave,
  'eval/run': EvalRun,
  'stats/compute': StatsCompute,
  'jobs/list': JobsList,
  shutdown: Shutdown,
} as const;

export type Requests = typeof REQUESTS;
export type Method = keyof Requests;
/** The params of a request constant, or of a method name. */
export type ParamsOf<M extends Method> = Requests[M] extends RequestType<infer P, unknown, unknown> ? P : never;
export type ResultOf<M extends Method> = Requests[M] extends RequestType<unknown, infer R, unknown> ? R : never;

/** Every method name (strings, so any incoming name can be looked up). */
export const METHODS: readonly string[] = Object.keys(REQUESTS);

export function isMethod(m: string): m is Method {
  return Object.hasOwn(REQUESTS, m);
}
