/**
 * Messages between the extension host and the trace webview (postMessage), as discriminated
 * unions on `type`. Both sides import this module; nothing about the messages is written twice.
 *
 * - Host → view: the trace lifecycle (`trace/started`, `trace/progress`, `trace/result`,
 *   `trace/error`) tagged with the host's `runId`, and `reply` to a view request.
 * - View → host: `ready`, and requests carrying a view-chosen `requestId` (`rerun`, `cancel`,
 *   `export`, `openSettings`) that the host answers with exactly one `reply`.
 *
 * Type-only imports from the engine protocol: the view bundle never loads the engine runtime.
 */
import type { TraceResult } from '../engine/trace/types.js';

export type { TraceResult };

/** The knobs a view can change before re-running a trace. */
export interface TraceSettings {
  samples: number;
  /** '3sigma' or an explicit noise scale. */
  noise: '3sigma' | number;
  window: number;
}

/** What was traced (enough to re-run it). */
export interface TraceInput {
  prompt: string;
  subject: string;
  expect?: string;
  /** Where the prompt came from, for the header ("capitals.prompts:3"). */
  source?: string;
}

/** What the view shows about the engine beside the result. */
export interface EngineSummary {
  model: string;
  backend: string;
  nLayer: number;
}

// -------------------------------------------------------------------------------------------
// Host → view
// -------------------------------------------------------------------------------------------

export interface TraceStartedMessage {
  type: 'trace/started';
  runId: number;
  input: TraceInput;
  settings: TraceSettings;
}

export interface TraceProgressMessage {
  type: 'trace/progress';
  runId: number;
  /** 0..1 */
  fraction: number;
  message: string;
}

export interface TraceResultMessage {
  type: 'trace/result';
  runId: number;
  input: TraceInput;
  settings: TraceSettings;
  engine: EngineSummary;
  result: TraceResult;
}

export interface TraceErrorMessage {
  type: 'trace/error';
  runId: number;
  input: TraceInput;
  /** The engine's symbolic error code (SUBJECT_NOT_FOUND, CANCELLED, ...). */
  code: string;
  message: string;
}

export interface ReplyMessage {
  type: 'reply';
  requestId: number;
  ok: boolean;
  /** A short human message (e.g. "Saved trace.svg"), or the error. */
  message?: string;
}

export type HostToView = TraceStartedMessage | TraceProgressMessage | TraceResultMessage | TraceErrorMessage | ReplyMessage;

// -------------------------------------------------------------------------------------------
// View → host
// -------------------------------------------------------------------------------------------

export interface ReadyMessage {
  type: 'ready';
}

export interface RerunRequest {
  type: 'rerun';
  requestId: number;
  input: TraceInput;
  settings: TraceSettings;
}

export interface CancelRequest {
  type: 'cancel';
  requestId: number;
  runId: number;
}

export type ExportFormat = 'svg' | 'png';

export interface ExportRequest {
  type: 'export';
  requestId: number;
  format: ExportFormat;
  /** A file name to suggest, e.g. "trace-France-hidden.svg". */
  fileName: string;
  /** SVG text, or a PNG data URL. */
  data: string;
}

export type ViewRequest = RerunRequest | CancelRequest | ExportRequest;
export type ViewToHost = ReadyMessage | ViewRequest;

// -------------------------------------------------------------------------------------------
// Helpers
// -------------------------------------------------------------------------------------------

const HOST_TYPES = new Set<HostToView['type']>(['trace/started', 'trace/progress', 'trace/result', 'trace/error', 'reply']);
const VIEW_TYPES = new Set<ViewToHost['type']>(['ready', 'rerun', 'cancel', 'export']);

/** Narrows an incoming message event's data (anything can arrive on a message port). */
export function isHostToView(v: unknown): v is HostToView {
  return typeof v === 'object' && v !== null && HOST_TYPES.has((v as { type: HostToView['type'] }).type);
}

export function isViewToHost(v: unknown): v is ViewToHost {
  if (typeof v !== 'object' || v === null) return false;
  const t = (v as { type: ViewToHost['type'] }).type;
  if (!VIEW_TYPES.has(t)) return false;
  return t === 'ready' || typeof (v as { requestId?: unknown }).requestId === 'number';
}

/** The state a view keeps across hide/show and window reloads (vscode.setState). */
export interface TraceViewState {
  input?: TraceInput;
  settings?: TraceSettings;
  engine?: EngineSummary;
  result?: TraceResult;
  error?: { code: string; message: string };
}

export const DEFAULT_SETTINGS: TraceSettings = { samples: 10, noise: '3sigma', window: 2 };
