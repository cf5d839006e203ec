/**
 * Errors the engine raises on bad input. Every error carries a stable `code` (used by the
 * JSON-RPC layer and tests) and `data` naming what was wrong: the file, tensor, field or
 * line, so a person can act on the message without reading a stack trace.
 */
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

export interface ErrorData {
  file?: string;
  tensor?: string;
  field?: string;
  line?: number;
  column?: number;
  [key: string]: unknown;
}

export class FactLensError extends Error {
  readonly code: ErrorCode;
  readonly data: ErrorData;
  constructor(code: ErrorCode, message: string, data: ErrorData = {}) {
    super(message);
    this.name = 'FactLensError';
    this.code = code;
    this.data = data;
  }
}

export function isFactLensError(e: unknown): e is FactLensError {
  return e instanceof FactLensError;
}
