/**
 * Which prompts an edit is about, and what a change of answer means (pure; no model). A
 * prompt is *related* to an edit when its subject is the edit's subject — or, for a prompt
 * that marks no subject (a CounterFact neighbourhood prompt, a plain check prompt), when its
 * text names the edit's subject as a whole word. Subjects compare after trimming and
 * collapsing white space, case-sensitively (the model's tokens are case-sensitive).
 */
import type { EditRecord } from '../edit/types.js';
import type { AppliedEditSummary, CheckVerdict } from '../protocol/specificity.js';

export function normalizeSubject(s: string): string {
  return s.trim().replace(/\s+/g, ' ');
}

/** Every request of an applied record (a MEMIT batch has many). */
export function recordRequests(r: EditRecord) {
  return r.requests?.length ? r.requests : [r.request];
}

export function summarizeEdit(r: EditRecord): AppliedEditSummary {
  const reqs = recordRequests(r);
  const first = reqs[0];
  const more = reqs.length > 1 ? ` (+${reqs.length - 1} more)` : '';
  return {
    id: r.id,
    subject: first.subject,
    target: first.target,
    ...(first.targetTrue ? { targetTrue: first.targetTrue } : {}),
    method: r.method,
    label: `${first.subject} → ${first.target}${more}`,
  };
}

const isWordChar = (c: string | undefined) => c !== undefined && /[\p{L}\p{N}_]/u.test(c);

/** Whether `text` contains `subject` with no letter or digit glued to either end. */
export function namesSubject(text: string, subject: string): boolean {
  const s = normalizeSubject(subject);
  if (!s) return false;
  const t = text.replace(/\s+/g, ' ');
  for (let at = t.indexOf(s); at >= 0; at = t.indexOf(s, at + 1)) {
    if (!isWordChar(t[at - 1]) && !isWordChar(t[at + s.length])) return true;
  }
  return false;
}

/** An edited subject with its targets' first token ids (what the verdicts compare against). */
export interface EditedSubject {
  editId: string;
  subject: string;
  targetId: number;
  /** The true object's first token, when the edit names one. */
  targetTrueId?: number;
}

/** The edited subjects a prompt is about. */
export function relatedEdits(prompt: string, subject: string | null | undefined, edited: EditedSubject[]): EditedSubject[] {
  if (subject !== null && subject !== undefined && subject.trim()) {
    const s = normalizeSubject(subject);
    return edited.filter((e) => normalizeSubject(e.subject) === s);
  }
  return edited.filter((e) => namesSubject(prompt, e.subject));
}

/**
 * The verdict of one prompt from its top-1 token before and after. A prompt asks the edited
 * fact when it is about an edited subject and, where the edit names the true object, the
 * unedited model answered that object (so "The capital of France is" is the fact of an edit
 * France: Paris → Tokyo, but "The official language of France is" is another fact of the same
 * subject); such a prompt should now answer the new target (`moved`, else `not-reached`).
 * Every other prompt should keep its answer (`unchanged`, else `collateral`).
 */
export function classifyCheck(
  related: EditedSubject[],
  beforeTop: number,
  afterTop: number,
): { related: boolean; changed: boolean; verdict: CheckVerdict } {
  const changed = beforeTop !== afterTop;
  const asked = related.filter((e) => e.targetTrueId === undefined || e.targetTrueId === beforeTop || e.targetId === beforeTop);
  if (!asked.length) return { related: related.length > 0, changed, verdict: changed ? 'collateral' : 'unchanged' };
  return { related: true, changed, verdict: asked.some((e) => e.targetId === afterTop) ? 'moved' : 'not-reached' };
}
