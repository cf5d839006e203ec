/**
 * The connection: versions, the `initialize` handshake and `shutdown`.
 *
 * Transport: vscode-jsonrpc framing (`Content-Length: N\r\n\r\n` + UTF-8 JSON) on stdio, or on
 * a TCP socket (`factlens serve --listen HOST:PORT`). The first request on a connection must
 * be `initialize`; on a socket with a token, `initialize` carries it.
 */
import { RequestType } from 'vscode-jsonrpc';
import type { EngineErrorData } from './errors.js';
import type { BackendName, BackendStatus, ModelInfo } from './model.js';

/**
 * Protocol version, MAJOR.MINOR. A client and an engine work together when the majors are
 * equal; the engine refuses `initialize` from a client with another major (VERSION_MISMATCH).
 * Bump MINOR for additions (new methods, new optional fields), MAJOR for anything else.
 */
export const PROTOCOL_VERSION = '1.2';

/** Default limit on one incoming message (the Content-Length of one frame). */
export const DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** Whether two protocol versions can talk to each other (same major). */
export function protocolCompatible(a: string, b: string): boolean {
  const major = (v: string) => /^(\d+)\.(\d+)$/.exec(v)?.[1];
  return major(a) !== undefined && major(a) === major(b);
}

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

export type ShutdownParams = Record<string, never>;
export interface ShutdownResult {
  /** True when the engine process exits after this reply (stdio); false when only this connection closes (socket). */
  exiting: boolean;
}
/** Cancels the caller's jobs; then the engine exits (stdio) or closes this connection (socket). */
export const Shutdown = new RequestType<ShutdownParams, ShutdownResult, EngineErrorData>('shutdown');
