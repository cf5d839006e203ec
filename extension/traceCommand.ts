/**
 * "Fact Lens: Trace this prompt": finds the prompt (a CodeLens's line, the selection, the
 * cursor's line in a prompt file or CounterFact record), asks for the subject when it is not
 * marked, runs `trace` in the engine with a cancellable progress notification, and shows the
 * result in the trace panel. Errors become an error message (and the panel's error box),
 * never a hang.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { Trace, type TraceParams } from '../engine/protocol.js';
import { TraceError, TraceProgress, TraceResultNote, TraceStarted, type EngineSummary, type TraceInput, type TraceSettings } from '../webviews/trace/protocol.js';
import { traceSettings } from './config.js';
import { errorCode, errorMessage, type EngineService } from './engine.js';
import { factFileKind, factsOf, PROMPTS_LANGUAGE, type TraceTargetArg } from './promptFiles.js';
import { entryErrors, isBlankOrComment, parsePromptLine } from '../formats/prompt-file.js';
import { normalizeSelection, subjectCandidates } from './prompts/subject.js';
import type { TracePanel } from './tracePanel.js';

/** A user-facing problem with the input: shown as an error message, no stack, no engine call. */
export class InputError extends Error {}

export class TraceRunner implements vscode.Disposable {
  private runSeq = 0;
  private readonly running = new Map<number, vscode.CancellationTokenSource>();

  constructor(
    private readonly engine: EngineService,
    private readonly panel: () => TracePanel,
    private readonly log: vscode.LogOutputChannel,
  ) {}

  /** The command: resolve the prompt, then trace it. */
  async command(arg?: unknown): Promise<void> {
    let input: TraceInput | undefined;
    try {
      input = await resolveInput(arg);
    } catch (e) {
      if (e instanceof InputError) {
        this.log.warn(`trace: ${e.message}`);
        void vscode.window.showErrorMessage(`Fact Lens: ${e.message}`);
        return;
      }
      throw e;
    }
    if (!input) return; // the user dismissed the subject picker
    const s = traceSettings();
    await this.run(input, { samples: s.samples, noise: s.noise, window: s.window });
  }

  /** Runs one trace: progress notification with Cancel, then the panel. */
  async run(input: TraceInput, settings: TraceSettings): Promise<void> {
    const runId = ++this.runSeq;
    const panel = this.panel();
    panel.show(`Trace: ${input.subject}`);
    panel.notify(TraceStarted, { runId, input, settings });
    const cts = new vscode.CancellationTokenSource();
    this.running.set(runId, cts);
    // Every field written out (no conditional spreads): a renamed protocol field fails to compile here.
    const params: TraceParams = {
      prompt: input.prompt,
      subject: input.subject,
      expect: input.expect || undefined,
      samples: settings.samples,
      noise: settings.noise,
      window: settings.window > 0 ? settings.window : undefined,
    };
    this.log.info(`trace ${JSON.stringify(params)}`);
    try {
      const result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `Fact Lens: tracing “${ellipsis(input.prompt, 60)}”`, cancellable: true },
        async (progress, token) => {
          token.onCancellationRequested(() => cts.cancel());
          let last = 0;
          progress.report({ message: 'starting the engine…' });
          return this.engine.request(Trace, params, {
            token: cts.token,
            onProgress: (fraction, message) => {
              const pct = Math.round(fraction * 100);
              progress.report({ increment: Math.max(0, pct - last), message: `${message} (${pct}%)` });
              last = Math.max(last, pct);
              panel.notify(TraceProgress, { runId, fraction, message });
            },
          });
        },
      );
      const model = this.engine.status.model;
      const engine: EngineSummary = { model: model?.name ?? '?', backend: result.backend, nLayer: model?.nLayer ?? 0 };
      this.log.info(
        `trace done in ${result.elapsed_ms} ms: answer ${JSON.stringify(result.answer.token)} clean ${result.clean_prob.toFixed(4)} corrupted ${result.corrupted_prob.toFixed(4)}`,
      );
      panel.notify(TraceResultNote, {
        runId,
        input,
        settings: { samples: result.samples, noise: settings.noise, window: result.window },
        engine,
        result,
      });
    } catch (e) {
      const code = errorCode(e);
      const message = errorMessage(e);
      panel.notify(TraceError, { runId, input, code, message });
      if (code === 'CANCELLED') {
        this.log.info('trace cancelled');
        void vscode.window.showInformationMessage('Fact Lens: the trace was cancelled.');
      } else {
        this.log.error(`trace failed (${code}): ${message}`);
        void vscode.window.showErrorMessage(`Fact Lens: the trace failed: ${message}`, 'Show log').then((a) => {
          if (a) this.log.show(true);
        });
      }
    } finally {
      this.running.delete(runId);
      cts.dispose();
    }
  }

  cancel(runId: number): void {
    this.running.get(runId)?.cancel();
  }

  dispose(): void {
    for (const c of this.running.values()) c.cancel();
  }
}

function ellipsis(s: string, n: number): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

function isTargetArg(a: unknown): a is TraceTargetArg {
  return typeof a === 'object' && a !== null && typeof (a as TraceTargetArg).uri === 'string' && typeof (a as TraceTargetArg).line === 'number';
}

function sourceOf(doc: vscode.TextDocument, line: number): string {
  return `${path.basename(doc.uri.path)}:${line + 1}`;
}

/** What to trace, from a CodeLens argument or the active editor; undefined when the user cancelled. */
export async function resolveInput(arg?: unknown): Promise<TraceInput | undefined> {
  if (isTargetArg(arg)) {
    const doc = await vscode.workspace.openTextDocument(vscode.Uri.parse(arg.uri));
    return inputAtLine(doc, arg.line);
  }
  const editor = vscode.window.activeTextEditor;
  if (!editor) throw new InputError('open a prompt file, or select a prompt in any file, to trace it.');
  const doc = editor.document;
  const sel = editor.selection;
  if (!sel.isEmpty) {
    const text = doc.getText(sel);
    const line = sel.start.line;
    // A selection inside a prompt file that is one whole prompt line: use its markup.
    if (doc.languageId === PROMPTS_LANGUAGE && sel.isSingleLine && /\[[^\]]+\]/.test(text)) {
      return fromPromptLine(text, line, sourceOf(doc, line));
    }
    return fromPlainText(text.replace(/\s*=>.*$/s, ''), sourceOf(doc, line));
  }
  return inputAtLine(doc, sel.active.line);
}

/** The prompt on a line of a prompt file or CounterFact file (or the line's text elsewhere). */
async function inputAtLine(doc: vscode.TextDocument, line: number): Promise<TraceInput | undefined> {
  if (line < 0 || line >= doc.lineCount) throw new InputError(`line ${line + 1} is not in ${path.basename(doc.uri.path)}.`);
  if (doc.languageId === PROMPTS_LANGUAGE || doc.uri.path.endsWith('.prompts')) {
    return fromPromptLine(doc.lineAt(line).text, line, sourceOf(doc, line));
  }
  if (factFileKind(doc)) {
    const facts = factsOf(doc);
    if (facts?.isFactFile) {
      const before = facts.records.filter((r) => r.line <= line);
      const rec = before[before.length - 1] ?? facts.records[0];
      if (!rec) {
        const err = facts.diagnostics[0];
        throw new InputError(err ? err.message : `no traceable record in ${path.basename(doc.uri.path)}.`);
      }
      return { prompt: rec.prompt, subject: rec.subject, ...(rec.expect ? { expect: rec.expect } : {}), source: sourceOf(doc, rec.line) };
    }
  }
  const text = doc.lineAt(line).text;
  if (!text.trim()) throw new InputError(`line ${line + 1} is empty: put the cursor on a prompt, or select one.`);
  return fromPlainText(text, sourceOf(doc, line));
}

/** A `.prompts` line: it must mark its subject. */
export function fromPromptLine(raw: string, line: number, source?: string): TraceInput {
  if (isBlankOrComment(raw)) throw new InputError(`line ${line + 1} has no prompt (it is blank or a comment).`);
  const r = parsePromptLine(raw, line);
  const errors = entryErrors(r);
  if (errors.length || !r.entry || !r.entry.subject) {
    const first = errors[0]?.message ?? `no [subject] marked (line ${line + 1})`;
    throw new InputError(`cannot trace this prompt: ${first}`);
  }
  const e = r.entry;
  return { prompt: e.prompt, subject: e.subject!, ...(e.expect ? { expect: e.expect } : {}), ...(source ? { source } : {}) };
}

/** Any text: the subject is picked from a QuickPick of spans, the guess pre-selected. */
async function fromPlainText(text: string, source: string): Promise<TraceInput | undefined> {
  const prompt = normalizeSelection(text);
  if (!prompt) throw new InputError('the selection is empty.');
  if (/\[[^\]]+\]/.test(prompt)) {
    try {
      return fromPromptLine(prompt, 0, source);
    } catch {
      /* brackets that are not prompt markup: ask below */
    }
  }
  const subject = await pickSubject(prompt);
  if (subject === undefined) return undefined;
  if (!prompt.includes(subject)) throw new InputError(`the subject "${subject}" does not occur in "${prompt}".`);
  return { prompt, subject, source };
}

/** QuickPick of candidate subjects; typing enters any other span of the prompt. */
export function pickSubject(prompt: string): Promise<string | undefined> {
  const { candidates, guess } = subjectCandidates(prompt);
  type Item = vscode.QuickPickItem & { subject: string };
  const items: Item[] = candidates.map((c, i) => ({
    label: c.text,
    subject: c.text,
    description: i === guess ? 'guess' : c.kind === 'name' ? 'name' : undefined,
    detail: i === guess ? highlight(prompt, c.start, c.text.length) : undefined,
  }));
  const qp = vscode.window.createQuickPick<Item>();
  qp.title = `Fact Lens: which span of “${ellipsis(prompt, 70)}” is the subject?`;
  qp.placeholder = 'Pick the subject to corrupt (the guess is pre-selected), or type another span of the prompt';
  qp.items = items;
  qp.matchOnDescription = false;
  if (guess >= 0) qp.activeItems = [items[guess]];
  return new Promise((resolve) => {
    let done = false;
    const finish = (v: string | undefined) => {
      if (done) return;
      done = true;
      resolve(v);
      qp.dispose();
    };
    qp.onDidAccept(() => {
      const picked = qp.selectedItems[0] ?? qp.activeItems[0];
      const typed = qp.value.trim();
      if (picked && (!typed || picked.subject.toLowerCase().includes(typed.toLowerCase()))) finish(picked.subject);
      else if (typed) finish(typed);
    });
    qp.onDidHide(() => finish(undefined));
    qp.show();
  });
}

function highlight(prompt: string, start: number, len: number): string {
  return `${prompt.slice(0, start)}[${prompt.slice(start, start + len)}]${prompt.slice(start + len)}`;
}
