/**
 * Specificity beside the code: after every change of the applied edits (and on "Fact Lens:
 * Check specificity"), every prompt of the visible prompt files and CounterFact records is
 * checked by the engine (`specificity/check`: the unedited answer, cached in the engine, and
 * the answer with the edits) and shows
 *  - an after-line decoration `Paris 99.9% → Tokyo 64.0%` in theme colours (dim when
 *    unchanged, warning colour for collateral damage, success colour when it moved to the new
 *    target, info colour when the edit does not reach it), with a hover of the top-5 before
 *    and after and the applied edits;
 *  - a Problems entry for collateral damage (Warning; quick fixes Revert that edit, Show edit
 *    diff) and for prompts about an edited subject that did not move (Information);
 *  - `specificity N/M unchanged` in the status bar while edits are applied.
 * Updates are debounced and cancellable (a newer update cancels the older request), and run
 * in the engine process, so typing is never blocked. With no edit applied everything is cleared.
 */
import * as vscode from 'vscode';
import type { RequestType } from 'vscode-jsonrpc';
import type { RequestOptions } from '../../engine/client/index.js';
import { SpecificityCheckRequest, type AppliedEditSummary, type CheckVerdict, type SpecificityCheck, type SpecificityCheckResult } from '../../engine/protocol.js';
import { checkFileKind, checkFilePrompts, type CheckFileKind, type CheckFilePrompt } from '../../formats/check-prompts.js';
import { readConfig } from '../config.js';
import { decorationText, hoverMarkdown, problemOf, statusText, type SpecificityProblem } from './present.js';

/** What the controller needs of the engine service (EngineService provides all of it). */
export interface SpecificityHost {
  /** Fires after every change of the applied edits (apply, revert, re-applied after a restart, another model). */
  readonly onDidChangeEdits: vscode.Event<unknown>;
  /** The applied edits, when the host knows them without asking the engine. */
  readonly edits?: readonly unknown[];
  request<P, R>(type: RequestType<P, R, unknown>, params: P, opts?: RequestOptions): Promise<R>;
  revertEdit(id: string): Promise<void>;
}

export const DIAGNOSTIC_SOURCE = 'Fact Lens specificity';
/** Delay after an edit change, and after typing in a checked file. */
const EDITS_DEBOUNCE_MS = 150;
const TYPING_DEBOUNCE_MS = 700;

interface Located {
  doc: vscode.TextDocument;
  version: number;
  entry: CheckFilePrompt;
}

const COLORS: Record<CheckVerdict, string> = {
  unchanged: 'editorCodeLens.foreground',
  collateral: 'editorWarning.foreground',
  moved: 'testing.iconPassed',
  'not-reached': 'editorInfo.foreground',
};

export function documentKind(doc: vscode.TextDocument): CheckFileKind | null {
  if (doc.languageId === 'prompts') return 'prompts';
  if (doc.uri.scheme !== 'file' && doc.uri.scheme !== 'untitled' && doc.uri.scheme !== 'vscode-remote') return null;
  return checkFileKind(doc.fileName);
}

export class SpecificityController implements vscode.Disposable, vscode.CodeActionProvider {
  private readonly types: Record<CheckVerdict, vscode.TextEditorDecorationType>;
  private readonly diagnostics = vscode.languages.createDiagnosticCollection('factlens-specificity');
  private readonly status = vscode.window.createStatusBarItem('factlens.specificity', vscode.StatusBarAlignment.Left, 90);
  private readonly subscriptions: vscode.Disposable[] = [];
  private timer: NodeJS.Timeout | null = null;
  private inFlight: vscode.CancellationTokenSource | null = null;
  /** Edits were applied at the last update: typing and newly shown files trigger updates. */
  private active = false;
  private edits: AppliedEditSummary[] = [];
  /** The last result per document, for re-rendering (visible editors, setting) and quick fixes. */
  private readonly shown = new Map<string, Array<{ entry: CheckFilePrompt; check: SpecificityCheck; problem: SpecificityProblem | null }>>();
  /** Resolves when the pending or running update has finished (tests and the command wait on it). */
  private idle: Promise<void> = Promise.resolve();

  constructor(private readonly host: SpecificityHost) {
    this.types = Object.fromEntries(
      (Object.keys(COLORS) as CheckVerdict[]).map((v) => [
        v,
        vscode.window.createTextEditorDecorationType({
          after: { color: new vscode.ThemeColor(COLORS[v]), margin: '0 0 0 2em', fontStyle: v === 'unchanged' ? 'italic' : 'normal' },
          rangeBehavior: vscode.DecorationRangeBehavior.ClosedClosed,
        }),
      ]),
    ) as Record<CheckVerdict, vscode.TextEditorDecorationType>;
    this.status.name = 'Fact Lens specificity';
    this.status.command = 'factlens.checkSpecificity';
    this.subscriptions.push(
      host.onDidChangeEdits(() => this.schedule(EDITS_DEBOUNCE_MS)),
      vscode.window.onDidChangeVisibleTextEditors(() => {
        if (this.active) this.schedule(EDITS_DEBOUNCE_MS);
      }),
      vscode.workspace.onDidChangeTextDocument((e) => {
        if (this.active && e.contentChanges.length && documentKind(e.document) && this.isVisible(e.document)) this.schedule(TYPING_DEBOUNCE_MS);
      }),
      vscode.workspace.onDidCloseTextDocument((d) => {
        this.shown.delete(d.uri.toString());
        this.diagnostics.delete(d.uri);
      }),
      vscode.workspace.onDidChangeConfiguration((e) => {
        if (e.affectsConfiguration('factlens.specificity.decorations')) this.render();
      }),
      vscode.languages.registerCodeActionsProvider([{ language: 'prompts' }, { language: 'json' }, { language: 'jsonl' }], this, {
        providedCodeActionKinds: [vscode.CodeActionKind.QuickFix],
      }),
    );
  }

  private isVisible(doc: vscode.TextDocument): boolean {
    return vscode.window.visibleTextEditors.some((e) => e.document === doc);
  }

  private schedule(delay: number): void {
    if (this.timer) clearTimeout(this.timer);
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const previous = this.idle;
    this.idle = previous.then(() => finished);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.update().finally(done);
    }, delay);
  }

  /** Runs an update now; with `interactive`, says why nothing is shown. */
  async checkNow(interactive = false): Promise<SpecificityCheckResult | null> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const r = await this.update();
    if (interactive && r && !r.edits.length) void vscode.window.showInformationMessage('Fact Lens: no edit is applied, so every prompt answers as before.');
    if (interactive && r === null) void vscode.window.showInformationMessage('Fact Lens: open a .prompts file or CounterFact records to check specificity.');
    return r;
  }

  /** Waits for pending updates (e2e and the command). */
  async settled(): Promise<void> {
    await this.idle;
  }

  private async update(): Promise<SpecificityCheckResult | null> {
    this.inFlight?.cancel();
    if (this.host.edits && this.host.edits.length === 0) {
      this.clear();
      return { edits: [], checks: [], unchanged: 0, others: 0, total: 0, cachedBefore: 0, seconds: 0 };
    }
    const located: Located[] = [];
    const seen = new Set<string>();
    for (const ed of vscode.window.visibleTextEditors) {
      const doc = ed.document;
      const kind = documentKind(doc);
      if (!kind || seen.has(doc.uri.toString())) continue;
      seen.add(doc.uri.toString());
      const parsed = checkFilePrompts(doc.getText(), kind);
      if (!parsed.recognised) continue;
      for (const entry of parsed.prompts) located.push({ doc, version: doc.version, entry });
    }
    if (!located.length) {
      this.clear();
      return null;
    }
    const cts = new vscode.CancellationTokenSource();
    this.inFlight = cts;
    let r: SpecificityCheckResult;
    try {
      r = await this.host.request(
        SpecificityCheckRequest,
        { prompts: located.map((l) => ({ prompt: l.entry.prompt, subject: l.entry.subject })) },
        { token: cts.token, timeoutMs: 0 },
      );
    } catch (e) {
      if (cts.token.isCancellationRequested) return null;
      throw e;
    } finally {
      if (this.inFlight === cts) this.inFlight = null;
      cts.dispose();
    }
    if (cts.token.isCancellationRequested) return null;
    // A document edited while the engine answered: its lines may have moved; check again.
    if (located.some((l) => l.doc.version !== l.version)) this.schedule(TYPING_DEBOUNCE_MS);
    if (!r.edits.length) {
      this.clear();
      return r;
    }
    this.active = true;
    this.edits = r.edits;
    this.shown.clear();
    located.forEach((l, i) => {
      const key = l.doc.uri.toString();
      const list = this.shown.get(key) ?? [];
      list.push({ entry: l.entry, check: r.checks[i], problem: problemOf(r.checks[i], r.edits) });
      this.shown.set(key, list);
    });
    this.diagnostics.clear();
    for (const [key, list] of this.shown) {
      const diags = list
        .filter((x) => x.problem)
        .map((x) => {
          const range = new vscode.Range(x.entry.line, x.entry.column, x.entry.line, Math.max(x.entry.endColumn, x.entry.column + 1));
          const d = new vscode.Diagnostic(range, x.problem!.message, x.problem!.severity === 'warning' ? vscode.DiagnosticSeverity.Warning : vscode.DiagnosticSeverity.Information);
          d.source = DIAGNOSTIC_SOURCE;
          d.code = x.problem!.kind;
          return d;
        });
      this.diagnostics.set(vscode.Uri.parse(key), diags);
    }
    this.status.text = `$(beaker) ${statusText(r)}`;
    this.status.tooltip = `Fact Lens: of ${r.others} prompts that do not ask an edited fact, ${r.unchanged} keep their answer (${r.total} prompts checked; applied: ${r.edits.map((e) => e.label).join(', ')}). Click to check again.`;
    this.status.show();
    this.render();
    return r;
  }

  /** Draws the decorations of the last result in every visible editor (or none, when the setting is off). */
  private render(): void {
    const on = readConfig().specificityDecorations;
    for (const ed of vscode.window.visibleTextEditors) {
      const list = on ? (this.shown.get(ed.document.uri.toString()) ?? []) : [];
      for (const v of Object.keys(this.types) as CheckVerdict[]) {
        const opts = list
          .filter((x) => x.check.verdict === v)
          .map((x): vscode.DecorationOptions => {
            // The prompt's text to the end of its line: hovering the prompt shows the details,
            // and the after-text sits at the line's end.
            const line = ed.document.lineAt(Math.min(x.entry.line, ed.document.lineCount - 1));
            const range = new vscode.Range(line.lineNumber, Math.min(x.entry.column, line.range.end.character), line.lineNumber, line.range.end.character);
            const md = new vscode.MarkdownString(hoverMarkdown(x.check, this.edits));
            return { range, hoverMessage: md, renderOptions: { after: { contentText: decorationText(x.check) } } };
          });
        ed.setDecorations(this.types[v], opts);
      }
    }
  }

  private clear(): void {
    this.active = false;
    this.edits = [];
    this.shown.clear();
    this.diagnostics.clear();
    this.status.hide();
    for (const ed of vscode.window.visibleTextEditors) for (const t of Object.values(this.types)) ed.setDecorations(t, []);
  }

  /** The quick fix "Revert that edit". */
  async revert(id: string): Promise<void> {
    const label = this.edits.find((e) => e.id === id)?.label ?? id;
    await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Fact Lens: reverting ${label}` }, () => this.host.revertEdit(id));
  }

  /** The quick fix "Show edit diff": the edit-diff view of the Edits feature. */
  async showEditDiff(id: string): Promise<void> {
    await vscode.commands.executeCommand('factlens.edits.showDiff', id);
  }

  provideCodeActions(doc: vscode.TextDocument, _range: vscode.Range | vscode.Selection, ctx: vscode.CodeActionContext): vscode.CodeAction[] {
    const list = this.shown.get(doc.uri.toString()) ?? [];
    const out: vscode.CodeAction[] = [];
    for (const d of ctx.diagnostics) {
      if (d.source !== DIAGNOSTIC_SOURCE || d.code !== 'collateral') continue;
      const hit = list.find((x) => x.entry.line === d.range.start.line && x.problem?.kind === 'collateral');
      for (const e of hit?.problem?.edits ?? []) {
        const revert = new vscode.CodeAction(`Revert edit '${e.label}'`, vscode.CodeActionKind.QuickFix);
        revert.command = { command: 'factlens.specificity.revertEdit', title: 'Revert that edit', arguments: [e.id] };
        revert.diagnostics = [d];
        revert.isPreferred = true;
        const diff = new vscode.CodeAction(`Show edit diff '${e.label}'`, vscode.CodeActionKind.QuickFix);
        diff.command = { command: 'factlens.specificity.showEditDiff', title: 'Show edit diff', arguments: [e.id] };
        diff.diagnostics = [d];
        out.push(revert, diff);
      }
    }
    return out;
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.inFlight?.cancel();
    for (const s of this.subscriptions) s.dispose();
    for (const t of Object.values(this.types)) t.dispose();
    this.diagnostics.dispose();
    this.status.dispose();
  }
}
