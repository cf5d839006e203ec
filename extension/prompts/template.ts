/**
 * What an edit needs from a line: the prompt template with `{}` where the subject goes, the
 * subject, and (when the line says it) the true answer. From a `.prompts` line the bracketed
 * span is the subject (`The capital of [France] is` → `The capital of {} is`, `France`; escapes
 * such as `\[` are literal text), from a CounterFact record its `requested_rewrite`. Pure
 * functions: the edit command and the tests use them.
 */
import type { FactRecord } from '../../formats/fact-file.js';
import { entryErrors, isBlankOrComment, parsePromptLine } from '../../formats/prompt-file.js';

export interface EditInput {
  /** The prompt with "{}" where the subject goes. */
  template: string;
  subject: string;
  /** The answer the line expects (`=> Paris`, a record's target_true). */
  targetTrue?: string;
  /** A record's target_new, offered as the new target. */
  targetNew?: string;
  /** Where it came from ("capitals.prompts:3"). */
  source?: string;
  /** A CounterFact record's paraphrase and neighbourhood prompts, for the diff view. */
  paraphrases?: string[];
  neighborhood?: string[];
}

export class TemplateError extends Error {}

/** The template of a prompt whose subject starts at `offset`; "{}" already in the text would be ambiguous. */
export function templateOf(prompt: string, subject: string, offset: number): string {
  if (prompt.slice(offset, offset + subject.length) !== subject) {
    throw new TemplateError(`the subject "${subject}" is not at offset ${offset} of "${prompt}"`);
  }
  if (prompt.includes('{}')) {
    throw new TemplateError(`the prompt "${prompt}" already contains "{}", which an edit template uses for the subject`);
  }
  return `${prompt.slice(0, offset)}{}${prompt.slice(offset + subject.length)}`;
}

/** A `.prompts` line → the edit input; a TemplateError says what is wrong with the line. */
export function editInputFromPromptLine(raw: string, line: number, source?: string): EditInput {
  if (isBlankOrComment(raw)) throw new TemplateError(`line ${line + 1} has no prompt (it is blank or a comment).`);
  const r = parsePromptLine(raw, line);
  const errors = entryErrors(r);
  const e = r.entry;
  if (errors.length || !e || e.subject === null || e.subjectOffset === undefined) {
    throw new TemplateError(`cannot edit this prompt: ${errors[0]?.message ?? `no [subject] marked (line ${line + 1})`}`);
  }
  return {
    template: templateOf(e.prompt, e.subject, e.subjectOffset),
    subject: e.subject,
    ...(e.expect ? { targetTrue: e.expect } : {}),
    ...(source ? { source } : {}),
  };
}

/** A CounterFact-style record → the edit input (its requested rewrite). */
export function editInputFromRecord(rec: FactRecord, source?: string): EditInput {
  let template = rec.template;
  if (!template) {
    const offset = rec.prompt.indexOf(rec.subject);
    if (offset < 0) throw new TemplateError(`the subject "${rec.subject}" does not occur in "${rec.prompt}"`);
    template = templateOf(rec.prompt, rec.subject, offset);
  }
  return {
    template,
    subject: rec.subject,
    ...(rec.expect ? { targetTrue: rec.expect } : {}),
    ...(rec.targetNew ? { targetNew: rec.targetNew } : {}),
    ...(rec.paraphrases?.length ? { paraphrases: rec.paraphrases } : {}),
    ...(rec.neighborhood?.length ? { neighborhood: rec.neighborhood } : {}),
    ...(source ? { source } : {}),
  };
}

/** Plain text and a subject in it (the first occurrence) → the edit input. */
export function editInputFromText(prompt: string, subject: string, source?: string): EditInput {
  const text = prompt.trim();
  const offset = text.indexOf(subject);
  if (!subject.trim() || offset < 0) throw new TemplateError(`the subject "${subject}" does not occur in "${text}"`);
  return { template: templateOf(text, subject, offset), subject, ...(source ? { source } : {}) };
}
