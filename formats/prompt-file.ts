/**
 * Prompt files (`.prompts`): one prompt per line, the subject in [brackets], an optional
 * `=> expected answer`, `#` comments.
 *
 *   # capitals
 *   The capital of [France] is => Paris
 *   [Paris] is located in the country of     # trailing comments need a space before '#'
 *   The symbol \[sic\] of [C#] is            # \[ \] \# \\ \= are literal characters
 *
 * Pure functions (no `vscode`, no engine import; formats/ is read by both the extension and the
 * engine CLI): the extension turns the results into CodeLenses and
 * diagnostics, and the unit tests run them directly. Lines and columns are 0-based here;
 * messages name them 1-based, as editors show them.
 *
 * The bracket rules match the engine's `parseMarkedPrompt` (engine/trace/marked.ts): one pair,
 * not nested, not empty; `\[` and `\]` are literal brackets.
 */

export type Severity = 'error' | 'warning';

export interface PromptDiagnostic {
  /** 0-based line. */
  line: number;
  /** 0-based column where the problem starts. */
  column: number;
  /** 0-based column where it ends (exclusive); at least column + 1. */
  endColumn: number;
  severity: Severity;
  message: string;
}

export interface PromptEntry {
  /** 0-based line. */
  line: number;
  /** The prompt as the model sees it: brackets and escapes removed, trimmed. */
  prompt: string;
  /** The bracketed subject (trimmed), or null when none is marked. */
  subject: string | null;
  /** Expected answer after `=>` (trimmed), if any. */
  expect?: string;
  /** Columns [start, end) of the prompt text in the raw line (before `=>` and comments). */
  promptColumns: [number, number];
  /** Columns [start, end) of the subject text in the raw line (inside the brackets). */
  subjectColumns?: [number, number];
  /** Where the bracketed subject starts in `prompt` (it may also occur elsewhere in it). */
  subjectOffset?: number;
  /** Columns [start, end) of the expected answer in the raw line. */
  expectColumns?: [number, number];
}

export interface ParsedPromptFile {
  entries: PromptEntry[];
  diagnostics: PromptDiagnostic[];
}

/** Characters a backslash makes literal. Any other backslash is itself literal. */
const ESCAPABLE = new Set(['[', ']', '#', '\\', '=']);

/** Splits text into lines (\n, \r\n or \r), keeping positions aligned with editors. */
export function splitLines(text: string): string[] {
  return text.split(/\r\n|\r|\n/);
}

/** Parses a whole `.prompts` document. */
export function parsePromptFile(text: string): ParsedPromptFile {
  const entries: PromptEntry[] = [];
  const diagnostics: PromptDiagnostic[] = [];
  splitLines(text).forEach((raw, line) => {
    const r = parsePromptLine(raw, line);
    if (r.entry) entries.push(r.entry);
    diagnostics.push(...r.diagnostics);
  });
  return { entries, diagnostics };
}

export interface ParsedPromptLine {
  /** The prompt on this line; absent for blank and comment lines. Present (with subject null) when the subject is missing. */
  entry?: PromptEntry;
  diagnostics: PromptDiagnostic[];
}

/** Whether a line holds no prompt (blank, or a comment). */
export function isBlankOrComment(raw: string): boolean {
  const t = raw.trimStart();
  return t === '' || t.startsWith('#');
}

/**
 * Parses one line. An entry is returned whenever the line holds prompt text, even with
 * errors, so a command can explain what is wrong with the line the user picked;
 * `entryErrors(r)` tells whether it can be traced.
 */
export function parsePromptLine(raw: string, line = 0): ParsedPromptLine {
  const diagnostics: PromptDiagnostic[] = [];
  const diag = (column: number, endColumn: number, message: string, severity: Severity = 'error') =>
    diagnostics.push({ line, column, endColumn: Math.max(endColumn, column + 1), severity, message: `${message} (line ${line + 1}, column ${column + 1})` });
  if (isBlankOrComment(raw)) return { diagnostics };

  // Pass 1: find where the prompt ends (`=>` or a ` #` comment), honouring escapes.
  let arrow = -1;
  let contentEnd = raw.length;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === '\\' && ESCAPABLE.has(raw[i + 1])) {
      i++;
      continue;
    }
    if (c === '#' && (i === 0 || /\s/.test(raw[i - 1]))) {
      contentEnd = i;
      break;
    }
    if (c === '=' && raw[i + 1] === '>') {
      if (arrow < 0) arrow = i;
      else diag(i, i + 2, "a second '=>'; a line has one expected answer");
      i++;
    }
  }
  const promptEnd = arrow >= 0 ? arrow : contentEnd;

  // Pass 2: the prompt part: brackets and escapes.
  let prompt = '';
  let subject: string | null = null;
  let subjectColumns: [number, number] | undefined;
  let open = -1;
  let current = '';
  let subjectStartInPrompt = -1;
  let pendingSubjectStart = -1;
  let bracketError = false;
  for (let i = 0; i < promptEnd; i++) {
    const c = raw[i];
    if (c === '\\' && ESCAPABLE.has(raw[i + 1]) && i + 1 < promptEnd) {
      if (open >= 0) current += raw[i + 1];
      else prompt += raw[i + 1];
      i++;
      continue;
    }
    if (c === '[') {
      if (open >= 0) {
        diag(i, i + 1, "nested '['; the subject is one [bracketed] span");
        bracketError = true;
        continue;
      }
      if (subject !== null) {
        diag(i, i + 1, 'a second [subject]; mark one subject per line');
        bracketError = true;
      }
      open = i;
      current = '';
      pendingSubjectStart = prompt.length;
      continue;
    }
    if (c === ']') {
      if (open < 0) {
        diag(i, i + 1, "']' without '['");
        bracketError = true;
        continue;
      }
      if (!current.trim()) {
        diag(open, i + 1, 'empty []; put the subject inside the brackets');
        bracketError = true;
      } else if (subject === null) {
        const lead = current.length - current.trimStart().length;
        subject = current.trim();
        subjectColumns = [open + 1, i];
        subjectStartInPrompt = pendingSubjectStart + lead;
      }
      prompt += current;
      open = -1;
      continue;
    }
    if (open >= 0) current += c;
    else prompt += c;
  }
  if (open >= 0) {
    diag(open, promptEnd, `'[' is never closed`);
    bracketError = true;
    prompt += current;
  }

  // The prompt is trimmed (a trailing space changes GPT-2's next token); keep offsets right.
  const leading = prompt.length - prompt.trimStart().length;
  const promptText = prompt.trim();
  subjectStartInPrompt -= leading;
  const firstContent = raw.length - raw.trimStart().length;
  let lastContent = promptEnd;
  while (lastContent > firstContent && /\s/.test(raw[lastContent - 1])) lastContent--;

  if (!promptText) {
    diag(firstContent, Math.max(firstContent + 1, promptEnd), arrow >= 0 ? "no prompt before '=>'" : 'the prompt is empty');
  } else if (subject === null && !bracketError) {
    diag(firstContent, lastContent, 'no [subject] marked; put the subject in brackets, e.g. "The capital of [France] is"');
  } else if (subject !== null && subjectStartInPrompt >= 0) {
    const first = promptText.indexOf(subject);
    if (first >= 0 && first < subjectStartInPrompt) {
      diag(
        subjectColumns![0],
        subjectColumns![1],
        `"${subject}" also occurs earlier in the prompt; the trace corrupts its first occurrence`,
        'warning',
      );
    }
  }

  let expect: string | undefined;
  let expectColumns: [number, number] | undefined;
  if (arrow >= 0) {
    const part = raw.slice(arrow + 2, contentEnd);
    let text = '';
    for (let i = 0; i < part.length; i++) {
      if (part[i] === '\\' && ESCAPABLE.has(part[i + 1])) {
        text += part[++i];
        continue;
      }
      text += part[i];
    }
    // A second '=>' was reported above; keep only the first answer.
    const cut = text.indexOf('=>');
    if (cut >= 0) text = text.slice(0, cut);
    expect = text.trim();
    const start = arrow + 2 + (part.length - part.trimStart().length);
    expectColumns = [start, start + Math.max(0, part.trim().length)];
    if (!expect) {
      diag(arrow, arrow + 2, "no expected answer after '=>'");
      expect = undefined;
      expectColumns = undefined;
    }
  }

  const entry: PromptEntry = {
    line,
    prompt: promptText,
    subject,
    ...(expect !== undefined ? { expect, expectColumns } : {}),
    promptColumns: [firstContent, lastContent],
    ...(subjectColumns ? { subjectColumns, subjectOffset: subjectStartInPrompt } : {}),
  };
  return { entry, diagnostics };
}

/** The errors (not warnings) of a parsed line. */
export function entryErrors(r: ParsedPromptLine): PromptDiagnostic[] {
  return r.diagnostics.filter((d) => d.severity === 'error');
}

/** Writes a prompt in `.prompts` syntax (escaping what needs it): the inverse of parsePromptLine. */
export function formatPromptLine(prompt: string, subject: string, expect?: string): string {
  const esc = (s: string) => s.replace(/[\\[\]]/g, (c) => `\\${c}`).replace(/=>/g, '\\=>').replace(/(^|\s)#/g, '$1\\#');
  const at = prompt.indexOf(subject);
  if (at < 0) throw new Error(`the subject "${subject}" does not occur in "${prompt}"`);
  const line = `${esc(prompt.slice(0, at))}[${esc(subject)}]${esc(prompt.slice(at + subject.length))}`;
  return expect ? `${line} => ${esc(expect)}` : line;
}
