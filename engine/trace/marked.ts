/** Prompts with the subject marked in brackets: "The capital of [France] is". */
import { FactLensError } from '../errors.js';

export interface MarkedPrompt {
  prompt: string;
  subject: string | null;
}

/**
 * Removes one pair of [brackets] and returns the bracketed text as the subject. `\[` and `\]`
 * stand for literal brackets. A prompt without brackets has no subject; unbalanced or nested
 * brackets, or more than one pair, are errors naming the column.
 */
export function parseMarkedPrompt(text: string): MarkedPrompt {
  let prompt = '';
  let subject: string | null = null;
  let open = -1;
  let current = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\\' && (text[i + 1] === '[' || text[i + 1] === ']')) {
      if (open >= 0) current += text[i + 1];
      else prompt += text[i + 1];
      i++;
      continue;
    }
    if (c === '[') {
      if (open >= 0) throw new FactLensError('INVALID_ARGUMENT', `nested '[' at column ${i + 1}`, { column: i + 1 });
      if (subject !== null) throw new FactLensError('INVALID_ARGUMENT', `a second [subject] at column ${i + 1}; mark one subject`, { column: i + 1 });
      open = i;
      current = '';
      continue;
    }
    if (c === ']') {
      if (open < 0) throw new FactLensError('INVALID_ARGUMENT', `']' without '[' at column ${i + 1}`, { column: i + 1 });
      if (!current.trim()) throw new FactLensError('INVALID_ARGUMENT', `empty [] at column ${open + 1}`, { column: open + 1 });
      subject = current;
      prompt += current;
      open = -1;
      continue;
    }
    if (open >= 0) current += c;
    else prompt += c;
  }
  if (open >= 0) throw new FactLensError('INVALID_ARGUMENT', `'[' at column ${open + 1} is never closed`, { column: open + 1 });
  return { prompt, subject };
}
