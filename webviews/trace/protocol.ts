/**
 * Messages between the extension host and the trace webview, as typed constants
 * (webviews/shared/channel.ts): the host notifies the trace lifecycle (`trace/started`,
 * `trace/progress`, `trace/result`, `trace/error`, tagged with its `runId`); the view asks to
 * re-run, cancel and export. Both sides import this module; nothing is written twice.
 *
 * Type-only imports from the engine protocol: the view bundle never loads the engine runtime.
 */
import type { TraceResult } from '../../engine/protocol/trace.js';
import { defineView, notification, request } from '../shared/channel.js';

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

export type ExportFormat = 'svg' | 'png';

// Host → view ---------------------------------------------------------------------------------

export const TraceStarted = notification<{ runId: number; input: TraceInput; settings: TraceSettings }>()('trace/started');
/** Progress is moot by the time a hidden view shows again: not queued. */
export const TraceProgress = notification<{ runId: number; fraction: number; message: string }>({ transient: true })('trace/progress');
export const TraceResultNote = notification<{
  runId: number;
  input: TraceInput;
  settings: TraceSettings;
  engine: EngineSummary;
  result: TraceResult;
}>()('trace/result');
export const TraceError = notification<{
  runId: number;
  input: TraceInput;
  /** The engine's symbolic error code (SUBJECT_NOT_FOUND, CANCELLED, ...). */
  code: string;
  message: string;
}>()('trace/error');

// View → host ---------------------------------------------------------------------------------

export const Rerun = request<{ input: TraceInput; settings: TraceSettings }>()('rerun');
export const Cancel = request<{ runId: number }>()('cancel');
/** Answered with a short message for the view ("Saved trace.svg", "Export cancelled"). */
export const Export = request<{
  format: ExportFormat;
  /** A file name to suggest, e.g. "trace-France-hidden.svg". */
  fileName: string;
  /** SVG text, or a PNG data URL. */
  data: string;
}, string>()('export');

export const TRACE_VIEW = defineView({
  viewType: 'factlens.trace',
  script: 'trace.js',
  requests: [Rerun, Cancel, Export],
  notifications: [TraceStarted, TraceProgress, TraceResultNote, TraceError],
});

export type TraceView = typeof TRACE_VIEW;

/** The state a view keeps across hide/show and window reloads (vscode.setState). */
export interface TraceViewState {
  input?: TraceInput;
  settings?: TraceSettings;
  engine?: EngineSummary;
  result?: TraceResult;
  error?: { code: string; message: string };
}

export const DEFAULT_SETTINGS: TraceSettings = { samples: 10, noise: '3sigma', window: 2 };
