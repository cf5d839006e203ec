/**
 * Filling a prompt template: "{}" stands for the subject (CounterFact, zsRE, facts.jsonl, the
 * edit CLI) or, in ROME's context templates, for the whole prompt. One function for all of
 * them, literal: String.prototype.replace would expand `$&`, `$'`, `` $` `` and `$$` in the
 * inserted text, so a subject such as "Rock$&Roll" came out as "Rock{}Roll".
 */

/** `template` with its first "{}" replaced by `text`, taken literally; `template` itself when it has none. */
export function fillTemplate(template: string, text: string): string {
  const at = template.indexOf('{}');
  return at < 0 ? template : template.slice(0, at) + text + template.slice(at + 2);
}
