/**
 * CounterFact-style records in `.json` (an array of records, or one record) and `.jsonl`
 * (one record per line): each `requested_rewrite` — a template with `{}`, a subject, and the
 * true and new targets — is a traceable prompt. Records in the facts form
 * (`{"subject", "prompt": "... {} ...", "object"}`) are traceable too.
 *
 * Pure functions (no `vscode` import). Lines and columns are 0-based.
 */
import type { PromptDiagnostic } from './prompt-file.js';
import { fillTemplate } from './template.js';

export interface FactRecord {
  /** 0-based line of the record's `requested_rewrite` key (or of the record's start). */
  line: number;
  column: number;
  /** The filled-in prompt (`{}` replaced by the subject). */
  prompt: string;
  subject: string;
  /** target_true (or object): traced as the expected answer. */
  expect?: string;
  /** target_new, for display. */
  targetNew?: string;
  /** The prompt template as the record has it ("{} was born in"). */
  template?: string;
  /** paraphrase_prompts and neighborhood_prompts, when the record has them. */
  paraphrases?: string[];
  neighborhood?: string[];
  caseId?: number | string;
}

export interface ParsedFactFile {
  records: FactRecord[];
  diagnostics: PromptDiagnostic[];
  /** False when the file has no record of either form: not a fact file at all. */
  isFactFile: boolean;
}

/** 0-based line and column of a character offset. */
export function positionAt(text: string, offset: number): { line: number; column: number } {
  let line = 0;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === '\n') {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: offset - lineStart };
}

/** Offset of a JSON.parse error, from V8's messages ("at position N" or "line L column C"). */
function jsonErrorOffset(text: string, e: unknown): number {
  const msg = e instanceof Error ? e.message : String(e);
  const pos = /at position (\d+)/.exec(msg);
  if (pos) return Number(pos[1]);
  const lc = /line (\d+) column (\d+)/.exec(msg);
  if (lc) {
    const lines = text.split('\n');
    let off = 0;
    for (let i = 0; i < Number(lc[1]) - 1 && i < lines.length; i++) off += lines[i].length + 1;
    return off + Number(lc[2]) - 1;
  }
  return Math.max(0, text.length - 1);
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : isObj(v) && typeof v.str === 'string' ? v.str : undefined);

/** The traceable record of one JSON value, or an error message when it looks like one but is malformed. */
function recordOf(v: unknown): { ok: Omit<FactRecord, 'line' | 'column'> } | { error: string } | null {
  if (!isObj(v)) return null;
  const rw = v.requested_rewrite;
  const form = isObj(rw) ? rw : typeof v.subject === 'string' && typeof v.prompt === 'string' ? v : null;
  if (!form) return isObj(v) && 'requested_rewrite' in v ? { error: 'requested_rewrite must be an object' } : null;
  const template = form.prompt;
  const subject = form.subject;
  if (typeof template !== 'string') return { error: 'the record has no "prompt" template' };
  if (typeof subject !== 'string' || !subject.trim()) return { error: 'the record has no "subject"' };
  const holes = template.split('{}').length - 1;
  if (holes !== 1) return { error: `the prompt template must contain "{}" exactly once (found ${holes}): ${JSON.stringify(template)}` };
  const expect = form === v ? str(v.object) : str(form.target_true);
  const targetNew = form === v ? undefined : str(form.target_new);
  const caseId = v.case_id;
  const strings = (x: unknown) => (Array.isArray(x) ? x.filter((s): s is string => typeof s === 'string' && s.trim() !== '') : []);
  const paraphrases = strings(v.paraphrase_prompts);
  const neighborhood = strings(v.neighborhood_prompts);
  return {
    ok: {
      prompt: fillTemplate(template, subject).trim(),
      subject,
      template: template.trim(),
      ...(paraphrases.length ? { paraphrases } : {}),
      ...(neighborhood.length ? { neighborhood } : {}),
      ...(expect ? { expect } : {}),
      ...(targetNew ? { targetNew } : {}),
      ...(typeof caseId === 'number' || typeof caseId === 'string' ? { caseId } : {}),
    },
  };
}

/** Parses a `.json` or `.jsonl` document for traceable records. */
export function parseFactFile(text: string, kind: 'json' | 'jsonl'): ParsedFactFile {
  return kind === 'jsonl' ? parseJsonl(text) : parseJson(text);
}

function parseJsonl(text: string): ParsedFactFile {
  const records: FactRecord[] = [];
  const diagnostics: PromptDiagnostic[] = [];
  let isFactFile = false;
  const lines = text.split('\n');
  lines.forEach((raw, line) => {
    const t = raw.trim();
    if (!t) return;
    let v: unknown;
    try {
      v = JSON.parse(t);
    } catch (e) {
      const col = raw.length - raw.trimStart().length + Math.min(jsonErrorOffset(t, e), t.length);
      diagnostics.push({ line, column: col, endColumn: col + 1, severity: 'error', message: `not valid JSON (line ${line + 1}, column ${col + 1})` });
      return;
    }
    const r = recordOf(v);
    if (!r) return;
    isFactFile = true;
    const column = Math.max(0, raw.indexOf('"requested_rewrite"'));
    if ('error' in r) {
      diagnostics.push({ line, column, endColumn: raw.length, severity: 'error', message: `${r.error} (line ${line + 1})` });
    } else {
      records.push({ line, column, ...r.ok });
    }
  });
  return { records, diagnostics, isFactFile };
}

function parseJson(text: string): ParsedFactFile {
  const records: FactRecord[] = [];
  const diagnostics: PromptDiagnostic[] = [];
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    // A .json file that does not parse: report it only if it looks like a CounterFact file
    // (VS Code's JSON support reports syntax errors of other JSON files itself).
    const isFactFile = text.includes('"requested_rewrite"');
    if (isFactFile) {
      const { line, column } = positionAt(text, jsonErrorOffset(text, e));
      diagnostics.push({ line, column, endColumn: column + 1, severity: 'error', message: `not valid JSON (line ${line + 1}, column ${column + 1})` });
    }
    return { records, diagnostics, isFactFile };
  }
  const items = Array.isArray(doc) ? doc : [doc];
  // Locate records in the text: the k-th "requested_rewrite" key belongs to the k-th record that
  // has one; facts-form records are located by the k-th top-level '{' of the array.
  const keyOffsets: number[] = [];
  for (let at = text.indexOf('"requested_rewrite"'); at >= 0; at = text.indexOf('"requested_rewrite"', at + 1)) keyOffsets.push(at);
  const objectStarts = topLevelObjectStarts(text);
  let isFactFile = false;
  let k = 0;
  items.forEach((item, i) => {
    const r = recordOf(item);
    if (!r) return;
    isFactFile = true;
    const hasKey = isObj(item) && 'requested_rewrite' in item;
    const offset = hasKey ? keyOffsets[k++] ?? objectStarts[i] ?? 0 : objectStarts[i] ?? 0;
    const { line, column } = positionAt(text, offset);
    if ('error' in r) {
      diagnostics.push({ line, column, endColumn: column + 1, severity: 'error', message: `record ${i}: ${r.error} (line ${line + 1})` });
    } else {
      records.push({ line, column, ...r.ok });
    }
  });
  return { records, diagnostics, isFactFile };
}

/** Offsets of the '{' of each element of a top-level array (or of the top-level object). */
function topLevelObjectStarts(text: string): number[] {
  const out: number[] = [];
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
      continue;
    }
    if (c === '"') inString = true;
    else if (c === '[' || c === '{') {
      if (c === '{' && (depth === 1 || (depth === 0 && out.length === 0))) out.push(i);
      depth++;
    } else if (c === ']' || c === '}') depth--;
  }
  return out;
}

/** Which prompt of a CounterFact record a check prompt is. */
export type FactPromptRole = 'rewrite' | 'paraphrase' | 'neighborhood';

/** One prompt of a record, for before/after checks: the rewrite prompt, a paraphrase, a neighbourhood prompt. */
export interface FactPrompt {
  /** 0-based line and column of the prompt's string in the file (the record's when it cannot be found). */
  line: number;
  column: number;
  prompt: string;
  /**
   * The record's subject for its rewrite prompt and paraphrases (CounterFact paraphrases are
   * about the same subject); null for neighbourhood prompts, which are about other subjects
   * that the record does not name.
   */
  subject: string | null;
  role: FactPromptRole;
  /** Index of the record in the file (0-based). */
  record: number;
}

/**
 * Every prompt of the CounterFact records of a `.json` / `.jsonl` document: the rewrite prompt
 * of each record (as parseFactFile gives it), then its `paraphrase_prompts` and
 * `neighborhood_prompts`, each located at its string in the text. Facts-form records have
 * only their prompt. Malformed records are left to parseFactFile's diagnostics.
 */
export function factFilePrompts(text: string, kind: 'json' | 'jsonl'): FactPrompt[] {
  const parsed = parseFactFile(text, kind);
  let values: unknown[];
  let starts: number[];
  if (kind === 'jsonl') {
    values = [];
    starts = [];
    let off = 0;
    for (const raw of text.split('\n')) {
      const t = raw.trim();
      if (t) {
        try {
          values.push(JSON.parse(t));
          starts.push(off);
        } catch {
          /* reported by parseFactFile */
        }
      }
      off += raw.length + 1;
    }
  } else {
    try {
      const doc = JSON.parse(text) as unknown;
      values = Array.isArray(doc) ? doc : [doc];
    } catch {
      return [];
    }
    starts = topLevelObjectStarts(text);
  }
  const out: FactPrompt[] = [];
  let k = 0;
  values.forEach((v, i) => {
    const r = recordOf(v);
    if (!r || 'error' in r) return;
    const rec = parsed.records[k++];
    if (!rec) return;
    out.push({ line: rec.line, column: rec.column, prompt: rec.prompt, subject: rec.subject, role: 'rewrite', record: i });
    const o = v as Obj;
    const from = starts[i] ?? 0;
    const locate = (p: string, after: number) => {
      const at = text.indexOf(JSON.stringify(p), after);
      return at >= 0 ? { at, ...positionAt(text, at) } : { at: after, line: rec.line, column: rec.column };
    };
    let cursor = from;
    const add = (list: unknown, role: FactPromptRole, subject: string | null) => {
      if (!Array.isArray(list)) return;
      for (const p of list) {
        if (typeof p !== 'string' || !p.trim()) continue;
        const pos = locate(p, cursor);
        cursor = pos.at;
        out.push({ line: pos.line, column: pos.column, prompt: p.trim(), subject, role, record: i });
      }
    };
    add(o.paraphrase_prompts, 'paraphrase', rec.subject);
    add(o.neighborhood_prompts, 'neighborhood', null);
  });
  return out;
}
