/**
 * Prompt files in the editor: a CodeLens "Trace" on each prompt line of `.prompts` files and on
 * each record of CounterFact-style `.json` / `.jsonl` files, and diagnostics (Problems) for
 * malformed lines, with line and column.
 */
import * as vscode from 'vscode';
import { parseFactFile, type FactRecord } from '../formats/fact-file.js';
import { parsePromptFile, type PromptDiagnostic } from '../formats/prompt-file.js';

export const PROMPTS_LANGUAGE = 'prompts';

export type FactFileKind = 'json' | 'jsonl';

/** Whether a document may hold CounterFact-style records, and in which form. */
export function factFileKind(doc: vscode.TextDocument): FactFileKind | null {
  const p = doc.uri.path.toLowerCase();
  if (p.endsWith('.jsonl') || doc.languageId === 'jsonl') return 'jsonl';
  if (p.endsWith('.json') || doc.languageId === 'json' || doc.languageId === 'jsonc') return 'json';
  return null;
}

/** Parses cached by document version (CodeLens, diagnostics and commands ask often). */
const cache = new WeakMap<vscode.TextDocument, { version: number; prompts?: ReturnType<typeof parsePromptFile>; facts?: ReturnType<typeof parseFactFile> }>();

function cached(doc: vscode.TextDocument) {
  let c = cache.get(doc);
  if (!c || c.version !== doc.version) {
    c = { version: doc.version };
    cache.set(doc, c);
  }
  return c;
}

export function promptsOf(doc: vscode.TextDocument): ReturnType<typeof parsePromptFile> {
  const c = cached(doc);
  return (c.prompts ??= parsePromptFile(doc.getText()));
}

export function factsOf(doc: vscode.TextDocument): ReturnType<typeof parseFactFile> | null {
  const kind = factFileKind(doc);
  if (!kind) return null;
  const c = cached(doc);
  return (c.facts ??= parseFactFile(doc.getText(), kind));
}

/** Arguments of the trace command from a CodeLens: the document and the line. */
export interface TraceTargetArg {
  uri: string;
  line: number;
}

export class PromptCodeLensProvider implements vscode.CodeLensProvider {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.changed.event;

  refresh(): void {
    this.changed.fire();
  }

  provideCodeLenses(doc: vscode.TextDocument): vscode.CodeLens[] {
    if (!vscode.workspace.getConfiguration('factlens').get<boolean>('codeLens.enabled', true)) return [];
    if (doc.languageId === PROMPTS_LANGUAGE) {
      const { entries, diagnostics } = promptsOf(doc);
      const bad = new Set(diagnostics.filter((d) => d.severity === 'error').map((d) => d.line));
      return entries
        .filter((e) => !bad.has(e.line))
        .flatMap((e) => [lens(doc, e.line, e.promptColumns[0], '$(pulse) Trace'), editLens(doc, e.line, e.promptColumns[0], '$(edit) Edit')]);
    }
    const facts = factsOf(doc);
    if (!facts?.isFactFile) return [];
    return facts.records.flatMap((r) => [lens(doc, r.line, r.column, factLensTitle(r)), editLens(doc, r.line, r.column, r.targetNew ? `$(edit) Edit → "${r.targetNew}"` : '$(edit) Edit')]);
  }
}

function lens(doc: vscode.TextDocument, line: number, column: number, title: string): vscode.CodeLens {
  const arg: TraceTargetArg = { uri: doc.uri.toString(), line };
  return new vscode.CodeLens(new vscode.Range(line, column, line, column), {
    title,
    command: 'factlens.tracePrompt',
    arguments: [arg],
    tooltip: 'Fact Lens: Trace this prompt (causal tracing of the subject)',
  });
}

function editLens(doc: vscode.TextDocument, line: number, column: number, title: string): vscode.CodeLens {
  const arg: TraceTargetArg = { uri: doc.uri.toString(), line };
  return new vscode.CodeLens(new vscode.Range(line, column, line, column), {
    title,
    command: 'factlens.editFact',
    arguments: [arg],
    tooltip: 'Fact Lens: Edit fact… (rewrite this fact in the model: ROME, MEMIT, FT)',
  });
}

function factLensTitle(r: FactRecord): string {
  return `$(pulse) Trace "${r.subject}"${r.caseId !== undefined ? ` (case ${r.caseId})` : ''}`;
}

/** Keeps Problems in step with open prompt files. */
export class PromptDiagnostics implements vscode.Disposable {
  private readonly collection = vscode.languages.createDiagnosticCollection('factlens');
  private readonly subs: vscode.Disposable[] = [];

  constructor() {
    this.subs.push(
      vscode.workspace.onDidOpenTextDocument((d) => this.update(d)),
      vscode.workspace.onDidChangeTextDocument((e) => this.update(e.document)),
      vscode.workspace.onDidCloseTextDocument((d) => this.collection.delete(d.uri)),
    );
    for (const d of vscode.workspace.textDocuments) this.update(d);
  }

  update(doc: vscode.TextDocument): void {
    let diags: PromptDiagnostic[] = [];
    if (doc.languageId === PROMPTS_LANGUAGE) diags = promptsOf(doc).diagnostics;
    else {
      const facts = factsOf(doc);
      if (facts?.isFactFile) diags = facts.diagnostics;
      else if (!facts) return;
    }
    this.collection.set(doc.uri, diags.map(toDiagnostic));
  }

  dispose(): void {
    this.collection.dispose();
    for (const s of this.subs) s.dispose();
  }
}

export function toDiagnostic(d: PromptDiagnostic): vscode.Diagnostic {
  const diag = new vscode.Diagnostic(
    new vscode.Range(d.line, d.column, d.line, d.endColumn),
    d.message,
    d.severity === 'error' ? vscode.DiagnosticSeverity.Error : vscode.DiagnosticSeverity.Warning,
  );
  diag.source = 'Fact Lens';
  return diag;
}
