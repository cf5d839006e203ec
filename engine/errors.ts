/**
 * Errors the engine raises on bad input. Every error carries a stable `code` (used by the
 * JSON-RPC layer and tests) and `data` naming what was wrong: the file, tensor, field or
 * line, so a person can act on the message without reading a stack trace.
 */
import type { ErrorCode, ErrorData } from './protocol/errors.js';

export type { ErrorCode, ErrorData };

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
