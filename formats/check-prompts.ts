/**
 * The prompts of a file that specificity checks run on, whatever its format: every prompt
 * line of a `.prompts` file (with its [subject]), and the rewrite, paraphrase and
 * neighbourhood prompts of the CounterFact records of a `.json` / `.jsonl` file. Shared by
 * `factlens edit --check-file` and the extension's inline decorations, so both check the same
 * prompts at the same lines. Lines are 0-based.
 */
import { factFilePrompts, parseFactFile, type FactPromptRole } from './fact-file.js';
import { entryErrors, parsePromptLine, splitLines, type PromptDiagnostic } from './prompt-file.js';

export type CheckFileKind = 'prompts' | 'json' | 'jsonl';

export interface CheckFilePrompt {
  line: number;
  column: number;
  /** Column where the prompt's text ends on its line (decorations go after it). */
  endColumn: number;
  prompt: string;
  subject: string | null;
  role: 'prompt' | FactPromptRole;
}

export interface CheckFilePrompts {
  prompts: CheckFilePrompt[];
  /** Lines that hold no checkable prompt because they are malformed (errors only). */
  diagnostics: PromptDiagnostic[];
  /** False for a .json / .jsonl file without CounterFact or facts-form records. */
  recognised: boolean;
}

/** The kind of a file from its name, or null when it is not one checks read. */
export function checkFileKind(name: string): CheckFileKind | null {
  const m = /\.(prompts|json|jsonl)$/i.exec(name);
  return m ? (m[1].toLowerCase() as CheckFileKind) : null;
}

export function checkFilePrompts(text: string, kind: CheckFileKind): CheckFilePrompts {
  if (kind === 'prompts') {
    const prompts: CheckFilePrompt[] = [];
    const diagnostics: PromptDiagnostic[] = [];
    splitLines(text).forEach((raw, line) => {
      const r = parsePromptLine(raw, line);
      if (!r.entry) return;
      const errors = entryErrors(r);
      if (errors.length) {
        diagnostics.push(...errors);
        return;
      }
      const e = r.entry;
      prompts.push({ line, column: e.promptColumns[0], endColumn: raw.trimEnd().length, prompt: e.prompt, subject: e.subject, role: 'prompt' });
    });
    return { prompts, diagnostics, recognised: true };
  }
  const parsed = parseFactFile(text, kind);
  const lines = splitLines(text);
  const prompts = factFilePrompts(text, kind).map((p): CheckFilePrompt => ({
    line: p.line,
    column: p.column,
    endColumn: (lines[p.line] ?? '').trimEnd().length,
    prompt: p.prompt,
    subject: p.subject,
    role: p.role,
  }));
  return { prompts, diagnostics: parsed.diagnostics.filter((d) => d.severity === 'error'), recognised: parsed.isFactFile };
}
