/**
 * The engine protocol: every JSON-RPC 2.0 method, notification, parameter and result the
 * engine process (engine/server/) and its clients (engine/client/, the extension) exchange.
 * Both sides import the typed constants below, so a renamed field is a compile error on both.
 *
 * Transport: vscode-jsonrpc framing (`Content-Length: N\r\n\r\n` + UTF-8 JSON) on stdio, or on
 * a TCP socket (`factlens serve --listen HOST:PORT`). The first request on a connection must
 * be `initialize`; on a socket with a token, `initialize` carries it.
 *
 * JSON has no NaN or Infinity: numbers the engine computes as NaN (a trace cell that is not
 * computed) or ±Infinity (log 0) arrive as null.
 *
 * This module is loaded by the extension host, so it imports engine modules for their types
 * only (`import type`) and never pulls tfjs into a bundle.
 */
import { NotificationType, RequestType } from 'vscode-jsonrpc';
import type { ErrorCode, ErrorData } from './errors.js';
import type { EditRecord, EditRequest } from './edit/types.js';
import type { MemitHparams, RomeHparams, RomeOptions } from './edit/index.js';
import type { LayerStats, StatsOptions } from './edit/stats.js';
import type { Prediction } from './predict.js';
import type { BackendName, BackendStatus } from './runtime/backend.js';
import type { AverageOptions, AverageResult, Fact } from './trace/average.js';
import type { TraceOptions, TraceResult } from './trace/types.js';
import type { PredictBatchParams, PredictBatchResult, SpecificityCheckParams, SpecificityCheckResult } from './protocol/specificity.js';

export type * from './protocol/specificity.js';

/**
 * Protocol version, MAJOR.MINOR. A client and an engine work together when the majors are
 * equal; the engine refuses `initialize` from a client with another major (VERSION_MISMATCH).
 * Bump MINOR for additions (new methods, new optional fields), MAJOR for anything else.
 */
export const PROTOCOL_VERSION = '1.1';

/** Default limit on one incoming message (the Content-Length of one frame). */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Whether two protocol versions can talk to each other (same major). */
export function protocolCompatible(a: string, b: string): boolean {
  const major = (v: string) => /^(\d+)\.(\d+)$/.exec(v)?.[1];
  return major(a) !== undefined && major(a) === major(b);
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/** Errors of the protocol layer itself (the engine's input errors are ErrorCode). */
export type ProtocolErrorCode =
  | 'PARSE_ERROR'
  | 'INVALID_REQUEST'
  | 'METHOD_NOT_FOUND'
  | 'INVALID_PARAMS'
  | 'INTERNAL'
  | 'NOT_INITIALIZED'
  | 'UNAUTHORIZED'
  | 'VERSION_MISMATCH'
  | 'MESSAGE_TOO_LARGE'
  | 'NO_MODEL'
  | 'NOT_AVAILABLE'
  | 'SHUTTING_DOWN'
  | 'QUEUE_FULL'
  // Raised by the client library, never sent by the engine:
  | 'TIMEOUT'
  | 'ENGINE_EXITED';

export type AnyErrorCode = ErrorCode | ProtocolErrorCode;

/**
 * The one table from symbolic error codes to JSON-RPC error codes. JSON-RPC and LSP codes
 * where one fits (-32700..-32600 from the JSON-RPC spec, -32002 ServerNotInitialized and
 * -32800 RequestCancelled from LSP); application codes 1000+ otherwise (outside the ranges
 * JSON-RPC and vscode-jsonrpc reserve). A bad argument of any kind is -32602 InvalidParams.
 * The symbolic code always travels as `error.data.code`.
 */
export const ERROR_CODES: Readonly<Record<AnyErrorCode, number>> = {
  // JSON-RPC 2.0
  PARSE_ERROR: -32700,
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  INVALID_PARAMS: -32602,
  INVALID_ARGUMENT: -32602,
  INTERNAL: -32603,
  // LSP
  NOT_INITIALIZED: -32002,
  CANCELLED: -32800,
  // Protocol and connection
  UNAUTHORIZED: 1001,
  VERSION_MISMATCH: 1002,
  MESSAGE_TOO_LARGE: 1003,
  NO_MODEL: 1004,
  NOT_AVAILABLE: 1005,
  SHUTTING_DOWN: 1006,
  QUEUE_FULL: 1007,
  // Model folders and checkpoints
  MODEL_NOT_FOUND: 1100,
  FILE_MISSING: 1101,
  BAD_CONFIG: 1102,
  UNSUPPORTED_MODEL_TYPE: 1103,
  PICKLE_CHECKPOINT: 1104,
  CORRUPT_SAFETENSORS: 1105,
  UNKNOWN_DTYPE: 1106,
  MISSING_TENSOR: 1107,
  TENSOR_SHAPE: 1108,
  MODEL_TOO_LARGE: 1109,
  BAD_TOKENIZER: 1110,
  // Runtime
  BACKEND_UNAVAILABLE: 1120,
  // Prompts
  SUBJECT_NOT_FOUND: 1130,
  PROMPT_TOO_LONG: 1131,
  // Client library
  TIMEOUT: 1200,
  ENGINE_EXITED: 1201,
};

/** `error.data` of every error reply: the symbolic code plus what was wrong (field, file, ...). */
export interface EngineErrorData extends ErrorData {
  code: AnyErrorCode;
  /** The method whose request failed, when known. */
  method?: string;
}

/** The symbolic code of a JSON-RPC error code (the first match when several share one). */
export function errorCodeName(code: number): AnyErrorCode | undefined {
  return (Object.keys(ERROR_CODES) as AnyErrorCode[]).find((k) => ERROR_CODES[k] === code);
}

// ---------------------------------------------------------------------------------------
// Shared shapes
// ---------------------------------------------------------------------------------------

/** Requests that run as jobs accept a client-chosen token; `$/progress` then carries it. */
export interface WithProgress {
  progressToken?: string;
}

/** What the engine says about the loaded model. */
export interface ModelInfo {
  name: string;
  /** Absolute folder on the engine's machine. */
  dir: string;
  backend: BackendName;
  modelType: string;
  nLayer: number;
  dModel: number;
  nHead: number;
  dMlp: number;
  vocabSize: number;
  /** Longest prompt in tokens. */
  nCtx: number;
  parameterCount: number;
  /** Ids of the edits applied to this model, oldest first. */
  edits: string[];
  loadedAt: string;
}

// ---------------------------------------------------------------------------------------
// initialize
// ---------------------------------------------------------------------------------------

export interface InitializeParams {
  /** The client's PROTOCOL_VERSION. */
  protocolVersion: string;
  clientName?: string;
  clientVersion?: string;
  /** Required by a socket engine started with a token. */
  token?: string;
}

export interface EngineCapabilities {
  /** Every method this engine answers. */
  methods: string[];
  /** Declared methods this build cannot run, with the reason (e.g. eval/run before evaluation ships). */
  unavailable: Record<string, string>;
  /** `predict` runs beside a running trace instead of waiting behind it. */
  predictJumpsQueue: boolean;
  cancellation: boolean;
  progress: boolean;
}

export interface InitializeResult {
  engineVersion: string;
  protocolVersion: string;
  pid: number;
  backend: {
    /** The backend in use (null until a model is loaded). */
    active: BackendName | null;
    /** The backend the engine uses when model/load names none (from `serve --backend`). */
    preferred: BackendName | null;
    available: BackendStatus[];
  };
  capabilities: EngineCapabilities;
  limits: {
    maxMessageBytes: number;
  };
  connection: {
    id: string;
    transport: 'stdio' | 'socket';
  };
  model: ModelInfo | null;
}

export const Initialize = new RequestType<InitializeParams, InitializeResult, EngineErrorData>('initialize');

// ---------------------------------------------------------------------------------------
// model
// ---------------------------------------------------------------------------------------

export interface ModelLoadParams extends WithProgress {
  /** Model folder on the engine's machine (default: the embedded tinyworld model). */
  dir?: string;
  /** Compute backend (default: the engine's preferred one, else the first that starts). */
  backend?: BackendName;
}

/** model/load replaces the loaded model; edits applied to the previous one are gone. */
export const ModelLoad = new RequestType<ModelLoadParams, ModelInfo, EngineErrorData>('model/load');

export type ModelInfoParams = Record<string, never>;
/** The loaded model, or null when none is loaded. */
export const ModelInfoRequest = new RequestType<ModelInfoParams, ModelInfo | null, EngineErrorData>('model/info');

// ---------------------------------------------------------------------------------------
// predict, trace, traceAverage
// ---------------------------------------------------------------------------------------

export interface PredictParams {
  prompt: string;
  /** How many candidates (default 10, at most 1000). */
  k?: number;
}
/** Runs at once, beside a running trace (it does not wait in the queue behind long jobs). */
export const Predict = new RequestType<PredictParams, Prediction, EngineErrorData>('predict');

/** Many prompts in padded forward passes; each answered as `predict` answers it alone. Jumps the queue like predict. */
export const PredictBatch = new RequestType<PredictBatchParams, PredictBatchResult, EngineErrorData>('predict/batch');

/**
 * Before (unedited, cached per model hash and prompt) and after (with the applied edits) answers of
 * prompts, each classified: unchanged, collateral, moved, not-reached (engine/protocol/specificity.ts).
 */
export const SpecificityCheckRequest = new RequestType<SpecificityCheckParams, SpecificityCheckResult, EngineErrorData>('specificity/check');

export interface TraceParams extends TraceOptions, WithProgress {
  prompt: string;
}
export const Trace = new RequestType<TraceParams, TraceResult, EngineErrorData>('trace');

export interface TraceAverageParams extends AverageOptions, WithProgress {
  /** Facts file on the engine's machine (JSON lines or a JSON array), default the model's facts.jsonl. */
  factsFile?: string;
  /** Or the facts themselves (then factsFile must be absent). */
  facts?: Fact[];
}
export const TraceAverage = new RequestType<TraceAverageParams, AverageResult, EngineErrorData>('traceAverage');

// ---------------------------------------------------------------------------------------
// edits
// ---------------------------------------------------------------------------------------

/** Options of the edit computation (ROME's; other methods read what applies to them). */
export interface EditComputeOptions extends Pick<RomeOptions, 'statsSamples' | 'statsNpz' | 'templateSeed' | 'facts'> {
  /** Overrides of the method's hyperparameters (the layer comes from request.layers). */
  hparams?: Partial<Omit<RomeHparams, 'layer' | 'layerSource' | 'contextTemplateLengths'> & Pick<MemitHparams, 'mom2UpdateWeight'>>;
}

/**
 * Either compute an edit from a request and apply it, or apply a record computed earlier
 * (the client's journal re-applies records after an engine restart without recomputing).
 * A record computed on another model (content hash) is refused unless `force` is set.
 */
export type EditApplyParams = (
  | { request: EditRequest; options?: EditComputeOptions; record?: undefined; force?: undefined }
  | { record: EditRecord; force?: boolean; request?: undefined; options?: undefined }
) &
  WithProgress;
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

// ---------------------------------------------------------------------------------------
// evaluation and statistics
// ---------------------------------------------------------------------------------------

/** Evaluation of applied edits (efficacy, generalisation, specificity, fluency). */
export interface EvalRunParams extends WithProgress {
  /** Edit ids to evaluate (default: all applied edits). */
  edits?: string[];
  /** CounterFact-format file on the engine's machine; each record is edited, evaluated and reverted. */
  dataset?: string;
  limit?: number;
  /** Editing method for the dataset's records (default rome; 'none' evaluates the unedited model). */
  method?: 'rome' | 'memit' | 'ft' | 'ft-l' | 'none';
  layer?: number;
  /** MEMIT's layer range (instead of `layer`). */
  layers?: number[];
  /** Records edited together (MEMIT batches). */
  batch?: number;
}
export type EvalRunResult = Record<string, unknown>;
export const EvalRun = new RequestType<EvalRunParams, EvalRunResult, EngineErrorData>('eval/run');

/**
 * Second-moment statistics of MLP keys (ROME's C = E[k kᵀ]) for some layers, from or into the
 * disk cache that edits read. corpus/samples/batchTokens/cache as in the statistics module.
 */
export interface StatsComputeParams extends Pick<StatsOptions, 'corpus' | 'samples' | 'batchTokens' | 'cache'>, WithProgress {
  /** Layers (default: the layer a ROME edit of this model would use). */
  layers?: number[];
}
/** Per layer: what was summed and where it is cached (the f×f matrix itself stays in the engine). */
export type LayerStatsSummary = Omit<LayerStats, 'sum'>;
export interface StatsComputeResult {
  layers: LayerStatsSummary[];
}
export const StatsCompute = new RequestType<StatsComputeParams, StatsComputeResult, EngineErrorData>('stats/compute');

// ---------------------------------------------------------------------------------------
// jobs and lifecycle
// ---------------------------------------------------------------------------------------

export type JobState = 'queued' | 'running';

export interface JobInfo {
  id: string;
  method: string;
  state: JobState;
  /** 0 for running jobs, 1.. for the place in the queue. */
  position: number;
  owner: {
    /** Connection id (stable for the life of a connection). */
    connection: string;
    /** clientName from that connection's initialize. */
    client: string;
  };
  /** True when the job belongs to the asking connection. */
  mine: boolean;
  /** A short description, e.g. the prompt. */
  summary: string;
  fraction: number;
  message: string;
  queuedAt: string;
  startedAt?: string;
}

export type JobsListParams = Record<string, never>;
export interface JobsListResult {
  jobs: JobInfo[];
}
export const JobsList = new RequestType<JobsListParams, JobsListResult, EngineErrorData>('jobs/list');

export type ShutdownParams = Record<string, never>;
export interface ShutdownResult {
  /** True when the engine process exits after this reply (stdio); false when only this connection closes (socket). */
  exiting: boolean;
}
/** Cancels the caller's jobs; then the engine exits (stdio) or closes this connection (socket). */
export const Shutdown = new RequestType<ShutdownParams, ShutdownResult, EngineErrorData>('shutdown');

/** Progress of a job started with a progressToken; sent only to the job's own connection. */
export interface ProgressParams {
  /** The progressToken of the request. */
  token: string;
  jobId: string;
  method: string;
  /** 0..1 */
  fraction: number;
  message: string;
  state: JobState;
}
export const Progress = new NotificationType<ProgressParams>('$/progress');

/** Sent by vscode-jsonrpc when a request's CancellationToken fires. Long jobs stop at their next checkpoint. */
export interface CancelParams {
  id: number | string;
}
export const CancelRequest = new NotificationType<CancelParams>('$/cancelRequest');

/** Every request type, for capability lists and tests. */
export const REQUESTS = [
  Initialize,
  ModelLoad,
  ModelInfoRequest,
  Predict,
  PredictBatch,
  SpecificityCheckRequest,
  Trace,
  TraceAverage,
  EditApply,
  EditRevert,
  EditList,
  EvalRun,
  StatsCompute,
  JobsList,
  Shutdown,
] as const;

export const METHODS: readonly string[] = REQUESTS.map((r) => r.method);
