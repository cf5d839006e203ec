/**
 * Error codes and error data on the wire. The engine's input errors (FactLensError in
 * engine/errors.ts) and the protocol layer's own errors share one table, so both sides map a
 * JSON-RPC code to the same symbolic name.
 */

/** Errors the engine raises on bad input (engine/errors.ts FactLensError.code). */
export type ErrorCode =
  | 'MODEL_NOT_FOUND'
  | 'FILE_MISSING'
  | 'BAD_CONFIG'
  | 'UNSUPPORTED_MODEL_TYPE'
  | 'PICKLE_CHECKPOINT'
  | 'CORRUPT_SAFETENSORS'
  | 'UNKNOWN_DTYPE'
  | 'MISSING_TENSOR'
  | 'TENSOR_SHAPE'
  | 'MODEL_TOO_LARGE'
  | 'BAD_TOKENIZER'
  | 'BACKEND_UNAVAILABLE'
  | 'SUBJECT_NOT_FOUND'
  | 'PROMPT_TOO_LONG'
  | 'NON_FINITE'
  | 'INVALID_ARGUMENT'
  | 'CANCELLED';

/** What was wrong: the file, tensor, field or line, so a person can act without a stack trace. */
export interface ErrorData {
  file?: string;
  tensor?: string;
  field?: string;
  line?: number;
  column?: number;
  [key: string]: unknown;
}

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
  NON_FINITE: 1121,
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
