/**
 * Messages between the extension host and the edit-diff webview (typed constants, see
 * webviews/shared/channel.ts). The host shows an edit's diff — before and after the edit, on
 * the edit prompt, the record's paraphrase and neighbourhood prompts, and check prompts the
 * user adds — and tells the view when the edit is reverted; the view asks to revert, save
 * the edited model, trace a prompt on the edited model, and add a check prompt.
 *
 * Type-only imports from the engine protocol: the view bundle never loads the engine runtime.
 */
import type { EditMethod, EditRequest, ProbeTarget } from '../../engine/protocol/edit.js';
import type { Candidate } from '../../engine/protocol/predict.js';
import { defineView, notification, request } from '../shared/channel.js';

export type { Candidate, ProbeTarget };

export type PromptKind = 'edit' | 'paraphrase' | 'neighborhood' | 'check';

/** One side of a prompt's diff: what the model predicts there. */
export interface ProbeSide {
  /** Top candidates of the next token (5). */
  top: Candidate[];
  /** [new target, true target]. */
  targets: ProbeTarget[];
  /** Greedy continuation (text after the prompt). */
  generation: string | null;
}

export interface PromptDiff {
  prompt: string;
  kind: PromptKind;
  /** The unedited model. */
  before: ProbeSide;
  /** With the edit applied. */
  after: ProbeSide;
}

/** An edit record as the view needs it (no weight deltas). */
export interface EditSummary {
  id: string;
  method: EditMethod;
  layers: number[];
  request: EditRequest;
  info: Record<string, number | string>;
  createdAt: string;
  /** The engine's verdict, when its records carry one. */
  took?: boolean;
  reason?: string;
}

export interface EditDiff {
  edit: EditSummary;
  model: { name: string; backend: string; nLayer: number };
  targetNew: string;
  targetTrue: string;
  prompts: PromptDiff[];
  status: 'applied' | 'reverted';
  /** Wall-clock seconds of the whole edit as the user waited for it (when this session computed it). */
  seconds?: number;
}

// Host → view ---------------------------------------------------------------------------------

export const ShowDiff = notification<{ diff: EditDiff }>()('edit/show');
export const EditStatus = notification<{ id: string; status: 'applied' | 'reverted' }>()('edit/status');

// View → host ---------------------------------------------------------------------------------

export const Revert = request<{ id: string }>()('revert');
/** Answered with a short message ("Saved to …", "Save cancelled"). */
export const SaveModel = request<Record<string, never>, string>()('save');
export const TracePrompt = request<{ prompt: string; subject: string }>()('trace');
/** A check prompt the user adds: answered with its before/after diff. */
export const AddCheck = request<{ id: string; prompt: string }, PromptDiff>()('check');

export const EDIT_VIEW = defineView({
  viewType: 'factlens.edit',
  script: 'edit.js',
  requests: [Revert, SaveModel, TracePrompt, AddCheck],
  notifications: [ShowDiff, EditStatus],
});

export type EditView = typeof EDIT_VIEW;

/** What the view keeps across hide/show and reloads (vscode.setState). */
export interface EditViewState {
  diff?: EditDiff;
}
