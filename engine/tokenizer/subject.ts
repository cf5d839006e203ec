/**
 * Locating the subject's tokens in a prompt, with the exact rules of the reference
 * implementations (causal tracing's `find_token_range`, ROME's
 * `get_words_idxs_in_templates`), so indices agree with published results.
 */
import { FactLensError } from '../errors.js';
import type { Tokenizer } from './types.js';

/**
 * Token range [start, end) covering `subject` in the prompt `ids` (causal tracing rule):
 * decode each token on its own, concatenate, find the first occurrence of the subject;
 * start = first token whose cumulative end offset is past the subject's first char,
 * end = one past the first token whose cumulative end offset reaches the subject's end.
 * Returns null if the subject does not occur in the decoded text.
 */
export function subjectTokenRange(tokenizer: Tokenizer, ids: number[], subject: string): [number, number] | null {
  if (typeof subject !== 'string' || subject.length === 0) {
    throw new FactLensError('INVALID_ARGUMENT', 'The subject must be a non-empty string', { field: 'subject' });
  }
  const pieces = ids.map((id) => tokenizer.tokenToString(id));
  const whole = pieces.join('');
  // Offsets are in UTF-16 units throughout; since every piece is whole code points this
  // gives the same token indices as Python's code-point offsets.
  const charStart = whole.indexOf(subject);
  if (charStart < 0) return byteLevelRange(tokenizer, ids, subject);
  const charEnd = charStart + subject.length;
  let loc = 0;
  let start = -1;
  for (let i = 0; i < pieces.length; i++) {
    loc += pieces[i].length;
    if (start < 0 && loc > charStart) start = i;
    if (loc >= charEnd) return [start, i + 1];
  }
  return null; // unreachable: the subject was found inside `whole`
}

/**
 * The same rule when tokens split characters: byte-level BPE cuts an emoji or other multi-byte
 * character into several tokens, each of which alone decodes to U+FFFD, so the concatenated
 * pieces never contain the subject ("[🇫🇷France]" looked absent although it is there). Each
 * token's end offset is then measured on the decoded text: the longest prefix of the whole
 * decoding that decoding the first i+1 tokens reproduces (floor), plus the rest of the
 * character when the token ends inside one (ceil).
 */
function byteLevelRange(tokenizer: Tokenizer, ids: number[], subject: string): [number, number] | null {
  const whole = tokenizer.decode(ids);
  const charStart = whole.indexOf(subject);
  if (charStart < 0) return null;
  const charEnd = charStart + subject.length;
  let start = -1;
  for (let i = 0; i < ids.length; i++) {
    const part = tokenizer.decode(ids.slice(0, i + 1));
    let floor = 0;
    while (floor < part.length && floor < whole.length && part[floor] === whole[floor]) floor++;
    const cp = whole.codePointAt(floor);
    const ceil = floor < part.length && cp !== undefined ? floor + (cp > 0xffff ? 2 : 1) : floor;
    if (start < 0 && ceil > charStart) start = i;
    if (floor >= charEnd) return [start, i + 1];
  }
  return start >= 0 ? [start, ids.length] : null;
}

export interface TemplateSubjectIndex {
  /** Token ids of the filled-in template (prefix, subject word and suffix tokenized separately). */
  ids: number[];
  /** Index of the subject's first token. */
  firstSubjectIndex: number;
  /** Index of the subject's last token (where ROME reads and writes the key). */
  lastSubjectIndex: number;
}

/**
 * ROME's rule for where the subject sits in a context template such as
 * `"The capital of {} is"`: split at `{}`; a non-empty prefix must end with a space,
 * which moves onto the word (`" " + subject.trim()`); prefix, word and suffix are
 * tokenized separately and concatenated.
 */
export function subjectLastIndexInTemplate(tokenizer: Tokenizer, template: string, subject: string): TemplateSubjectIndex {
  if (typeof template !== 'string') {
    throw new FactLensError('INVALID_ARGUMENT', 'The template must be a string', { field: 'template' });
  }
  const holes = template.split('{}').length - 1;
  if (holes !== 1) {
    throw new FactLensError('INVALID_ARGUMENT', `The template must contain exactly one "{}" (found ${holes}): ${JSON.stringify(template)}`, {
      field: 'template',
      template,
    });
  }
  if (typeof subject !== 'string' || subject.trim().length === 0) {
    throw new FactLensError('INVALID_ARGUMENT', 'The subject must be a non-empty string', { field: 'subject' });
  }
  const at = template.indexOf('{}');
  let prefix = template.slice(0, at);
  const suffix = template.slice(at + 2);
  let word = subject;
  if (prefix.length > 0) {
    if (!prefix.endsWith(' ')) {
      throw new FactLensError('INVALID_ARGUMENT', `The text before "{}" must end with a space: ${JSON.stringify(template)}`, {
        field: 'template',
        template,
      });
    }
    prefix = prefix.slice(0, -1);
    word = ` ${subject.trim()}`;
  }
  const prefixIds = tokenizer.encode(prefix);
  const wordIds = tokenizer.encode(word);
  const suffixIds = tokenizer.encode(suffix);
  return {
    ids: [...prefixIds, ...wordIds, ...suffixIds],
    firstSubjectIndex: prefixIds.length,
    lastSubjectIndex: prefixIds.length + wordIds.length - 1,
  };
}
