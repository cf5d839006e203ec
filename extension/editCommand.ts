/**
 * "Fact Lens: Edit fact…": finds the fact to edit (the direct arguments `{prompt, subject,
 * target, method?, layer?}`, a CodeLens's line, the selection or the cursor's line in a prompt
 * file or CounterFact record), asks what is missing in a short QuickInput wizard (template with
 * `{}`, new target with the current top prediction as placeholder, then the method), computes
 * the edit in the engine through EngineService (so it is journaled) with a cancellable progress
 * notification that names the stage and an ETA, and shows the edit-diff view: before → after on
 * the edit prompt, the record's paraphrase and neighbourhood prompts, and check prompts.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { EditProbe, EDIT_METHODS, Predict, type EditMethod, type EditRecord, type EditRequest } from '../engine/protocol.js';
import { AddCheck, EditStatus, Revert, SaveModel, ShowDiff, TracePrompt, type EditDiff, type EditSummary, type PromptDiff, type PromptKind } from '../webviews/edit/protocol.js';
import { readConfig, traceSettings } from './config.js';
import { EditPanel } from './editPanel.js';
import { errorCode, errorMessage, type EngineService } from './engine.js';
import { factFileKind, factsOf, PROMPTS_LANGUAGE, type TraceTargetArg } from './promptFiles.js';
import { editInputFromPromptLine, editInputFromRecord, editInputFromText, TemplateError, type EditInput } from './prompts/template.js';
import { normalizeSelection } from './prompts/subject.js';
import { pickSubject, type TraceRunner } from './traceCommand.js';
import { fillTemplate } from '../formats/template.js';

/** The command's direct arguments (other commands, tests). */
export interface EditFactArgs {
  /** A template with "{}", or a prompt that contains the subject. */
  prompt: string;
  subject: string;
  target: string;
  method?: EditMethod;
  layer?: number;
  /** The true target, when known (default: the top prediction before the edit). */
  targetTrue?: string;
}

export function isEditFactArgs(a: unknown): a is EditFactArgs {
  const o = a as Partial<EditFactArgs> | null;
  return (
    typeof o === 'object' &&
    o !== null &&
    typeof o.prompt === 'string' &&
    typeof o.subject === 'string' &&
    typeof o.target === 'string' &&
    (o.method === undefined || (EDIT_METHODS as readonly string[]).includes(o.method)) &&
    (o.layer === undefined || Number.isInteger(o.layer))
  );
}

const isTargetArg = (a: unknown): a is TraceTargetArg =>
  typeof a === 'object' && a !== null && typeof (a as TraceTargetArg).uri === 'string' && typeof (a as TraceTargetArg).line === 'number';

const METHOD_LABEL: Record<EditMethod, string> = { rome: 'ROME', memit: 'MEMIT', ft: 'FT', 'ft-l': 'FT+L' };

/** Progress stages of an edit, from the engine's progress messages. */
export function stageOf(message: string): string {
  if (/choosing the edit layer/.test(message)) return 'choosing the layer';
  if (/statistics/.test(message)) return 'statistics';
  if (/template/.test(message)) return 'templates';
  if (/v\*|z step|z\b/.test(message)) return 'v*';
  if (/appl|update|delta/.test(message)) return 'update';
  return 'editing';
}

export class EditRunner implements vscode.Disposable {
  /** Diffs computed in this session, by edit id (after a reload they are probed again). */
  private readonly diffs = new Map<string, EditDiff>();
  private readonly subs: vscode.Disposable[] = [];
  readonly panel: EditPanel;

  constructor(
    context: vscode.ExtensionContext,
    private readonly engine: EngineService,
    private readonly traces: () => TraceRunner,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.panel = new EditPanel(context, log);
    this.panel.onRequest(Revert, (p) => this.revert(p.id));
    this.panel.onRequest(SaveModel, () => this.saveModel());
    this.panel.onRequest(TracePrompt, (p) => {
      const s = traceSettings();
      void this.traces().run({ prompt: p.prompt, subject: p.subject }, { samples: s.samples, noise: s.noise, window: s.window });
    });
    this.panel.onRequest(AddCheck, (p) => this.check(p.id, p.prompt));
    this.subs.push(
      engine.onDidChangeEdits((c) => {
        for (const id of c.removed) {
          const d = this.diffs.get(id);
          if (d) this.diffs.set(id, { ...d, status: 'reverted' });
          this.panel.notify(EditStatus, { id, status: 'reverted' });
        }
      }),
    );
  }

  /** The command. */
  async command(arg?: unknown): Promise<EditRecord | undefined> {
    let input: EditInput | undefined;
    let direct: EditFactArgs | undefined;
    try {
      if (isEditFactArgs(arg)) {
        direct = arg;
        input = arg.prompt.includes('{}')
          ? { template: arg.prompt.trim(), subject: arg.subject, ...(arg.targetTrue ? { targetTrue: arg.targetTrue } : {}) }
          : { ...editInputFromText(arg.prompt, arg.subject), ...(arg.targetTrue ? { targetTrue: arg.targetTrue } : {}) };
      } else {
        input = await resolveEditInput(arg);
      }
    } catch (e) {
      if (e instanceof TemplateError) {
        this.log.warn(`edit: ${e.message}`);
        void vscode.window.showErrorMessage(`Fact Lens: ${e.message}`);
        return undefined;
      }
      throw e;
    }
    if (!input) return undefined;
    const request = direct
      ? requestOf(input, direct.target, direct.method, direct.layer)
      : await this.wizard(input);
    if (!request) return undefined;
    return this.run(request, input);
  }

  /** The QuickInput wizard: template, new target, method. Undefined when dismissed. */
  private async wizard(input: EditInput): Promise<EditRequest | undefined> {
    const template = await vscode.window.showInputBox({
      title: 'Fact Lens: Edit fact (1/3) — the prompt, "{}" where the subject goes',
      value: input.template,
      prompt: `Subject: ${input.subject}`,
      validateInput: (v) => {
        const n = v.split('{}').length - 1;
        return n === 1 ? null : n === 0 ? 'Put "{}" where the subject goes' : 'Use "{}" once, for the subject';
      },
      ignoreFocusOut: true,
    });
    if (template === undefined) return undefined;
    const filled = fillTemplate(template, input.subject);
    let top = '';
    try {
      const p = await this.engine.request(Predict, { prompt: filled, k: 1 });
      top = p.top[0]?.token.trim() ?? '';
    } catch (e) {
      this.log.warn(`edit: could not predict the current answer: ${errorMessage(e)}`);
    }
    const target = await vscode.window.showInputBox({
      title: 'Fact Lens: Edit fact (2/3) — the new target',
      value: input.targetNew ?? '',
      placeHolder: top ? `now: ${top}` : 'the new object, e.g. Rome',
      prompt: `“${filled}” →${top ? ` now “${top}”` : ''}`,
      validateInput: (v) => (v.trim() ? null : 'Type the new target'),
      ignoreFocusOut: true,
    });
    if (target === undefined) return undefined;
    type Item = vscode.QuickPickItem & { method?: EditMethod; pickLayer?: boolean };
    const model = this.engine.status.model;
    const items: Item[] = [
      { label: '$(sparkle) Edit with ROME (defaults)', method: 'rome', detail: 'A rank-one update of one MLP layer (the layer causal tracing picks for this model)' },
      { label: 'ROME at a layer…', method: 'rome', pickLayer: true },
      { label: 'MEMIT', method: 'memit', detail: 'The update spread over a range of layers' },
      { label: 'FT', method: 'ft', detail: 'Fine-tune one MLP output matrix' },
      { label: 'FT+L', method: 'ft-l', detail: 'Fine-tune, each weight kept within ε of the original' },
    ];
    const picked = await vscode.window.showQuickPick(items, { title: 'Fact Lens: Edit fact (3/3) — method', ignoreFocusOut: true });
    if (!picked?.method) return undefined;
    let layer: number | undefined;
    if (picked.pickLayer) {
      const n = model?.nLayer ?? 0;
      const l = await vscode.window.showQuickPick(
        Array.from({ length: n }, (_, i) => ({ label: `layer ${i}`, layer: i })),
        { title: 'Fact Lens: Edit fact — the layer ROME edits', ignoreFocusOut: true },
      );
      if (!l) return undefined;
      layer = l.layer;
    }
    return requestOf({ ...input, template }, target.trim(), picked.method, layer);
  }

  /** Computes and applies the edit with progress, then shows its diff. */
  async run(request: EditRequest, input: EditInput): Promise<EditRecord | undefined> {
    const filled = fillTemplate(request.prompt, request.subject);
    const t0 = Date.now();
    const label = `${METHOD_LABEL[request.method ?? 'rome']}: ${request.subject} → ${request.target}`;
    this.log.info(`edit ${JSON.stringify(request)}`);
    try {
      const result = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `Fact Lens: editing (${label})`, cancellable: true },
        async (progress, token) => {
          const cts = new vscode.CancellationTokenSource();
          token.onCancellationRequested(() => cts.cancel());
          progress.report({ message: 'measuring the model before the edit…' });
          const targetTrue = request.targetTrue ?? (await this.engine.request(Predict, { prompt: filled, k: 1 })).top[0].token.trim();
          const req: EditRequest = { ...request, targetTrue };
          const prompts = promptsOf(filled, input);
          const before = await this.engine.request(EditProbe, { prompts: prompts.map((p) => p.prompt), targets: [req.target, targetTrue], unedited: true }, { token: cts.token });
          let last = 0;
          let stage = '';
          const statsSamples = readConfig().statsSamples;
          const record = await this.engine.applyEdit(
            { request: req, options: statsSamples > 0 ? { statsSamples } : undefined },
            {
              token: cts.token,
              onProgress: (fraction, message) => {
                const s = stageOf(message);
                if (s !== stage) {
                  stage = s;
                  if (s === 'statistics' && /tokenizing/.test(message)) {
                    // Only a first edit at a layer computes them: say so, with what it costs.
                    void vscode.window.showInformationMessage(
                      `Fact Lens: first edit at this layer of ${this.engine.status.model?.name ?? 'the model'}: computing the second-moment statistics over its corpus (${message.replace(/^.*tokenizing /, '')}). This takes minutes once; they are cached for later edits.`,
                    );
                  }
                }
                const pct = Math.round(fraction * 100);
                const elapsed = (Date.now() - t0) / 1000;
                const eta = fraction > 0.02 ? Math.max(0, (elapsed * (1 - fraction)) / fraction) : undefined;
                progress.report({
                  increment: Math.max(0, pct - last),
                  message: `${stage}: ${message} (${pct}%${eta !== undefined ? `, about ${formatSeconds(eta)} left` : ''})`,
                });
                last = Math.max(last, pct);
              },
            },
          );
          progress.report({ message: 'measuring the model after the edit…' });
          const after = await this.engine.request(EditProbe, { prompts: prompts.map((p) => p.prompt), targets: [req.target, targetTrue] });
          return { record, targetTrue, prompts, before, after };
        },
      );
      const seconds = (Date.now() - t0) / 1000;
      const diff: EditDiff = {
        edit: summaryOf(result.record),
        model: this.modelSummary(),
        targetNew: request.target,
        targetTrue: result.targetTrue,
        prompts: result.prompts.map((p, i) => ({
          prompt: p.prompt,
          kind: p.kind,
          before: sideOf(result.before.prompts[i]),
          after: sideOf(result.after.prompts[i]),
        })),
        status: 'applied',
        seconds,
      };
      this.diffs.set(result.record.id, diff);
      const top = diff.prompts[0].after.top[0];
      this.log.info(`edit ${result.record.id} done in ${seconds.toFixed(1)} s: top after ${JSON.stringify(top?.token)} (${top?.prob.toFixed(4)})`);
      this.show(diff);
      return result.record;
    } catch (e) {
      const code = errorCode(e);
      if (code === 'CANCELLED') {
        this.log.info('edit cancelled');
        void vscode.window.showInformationMessage('Fact Lens: the edit was cancelled; the model is unchanged.');
        return undefined;
      }
      this.log.error(`edit failed (${code}): ${errorMessage(e)}`);
      void vscode.window.showErrorMessage(`Fact Lens: the edit failed: ${errorMessage(e)}`, 'Show log').then((a) => {
        if (a) this.log.show(true);
      });
      return undefined;
    }
  }

  /** Shows an applied edit's diff (the Edits tree's "Show diff"); probed again when not computed in this session. */
  async showDiff(id: string): Promise<void> {
    let diff = this.diffs.get(id);
    if (!diff) {
      const record = this.engine.edits.find((r) => r.id === id);
      if (!record) throw new Error(`the edit ${id} is not applied`);
      diff = await vscode.window.withProgress(
        { location: vscode.ProgressLocation.Window, title: 'Fact Lens: measuring the edit' },
        () => this.probeDiff(record),
      );
      this.diffs.set(id, diff);
      this.log.info(`probed edit ${id} after the restart: top ${JSON.stringify(diff.prompts[0]?.after.top[0]?.token)} (the record as journaled, not recomputed)`);
    }
    this.show(diff);
  }

  private show(diff: EditDiff): void {
    this.panel.show(`Edit: ${diff.edit.request.subject} → ${diff.targetNew}`);
    this.panel.notify(ShowDiff, { diff });
  }

  /** Before (unedited weights) and after (as applied) for a journaled edit: nothing is recomputed. */
  private async probeDiff(record: EditRecord): Promise<EditDiff> {
    const filled = fillTemplate(record.request.prompt, record.request.subject);
    const targetTrue = record.request.targetTrue ?? '';
    const prompts = promptsOf(filled, {});
    const targets = [record.request.target, ...(targetTrue ? [targetTrue] : [])];
    const before = await this.engine.request(EditProbe, { prompts: prompts.map((p) => p.prompt), targets, unedited: true });
    const after = await this.engine.request(EditProbe, { prompts: prompts.map((p) => p.prompt), targets });
    return {
      edit: summaryOf(record),
      model: this.modelSummary(),
      targetNew: record.request.target,
      targetTrue,
      prompts: prompts.map((p, i) => ({ prompt: p.prompt, kind: p.kind, before: sideOf(before.prompts[i]), after: sideOf(after.prompts[i]) })),
      status: 'applied',
    };
  }

  private async check(id: string, prompt: string): Promise<PromptDiff> {
    const diff = this.diffs.get(id);
    const record = this.engine.edits.find((r) => r.id === id);
    if (!diff) throw new Error('show the edit again: its diff is not known in this window');
    const targets = [diff.targetNew, diff.targetTrue].filter((t) => t);
    const before = await this.engine.request(EditProbe, { prompts: [prompt], targets, unedited: true });
    const after = await this.engine.request(EditProbe, { prompts: [prompt], targets, unedited: !record });
    const pd: PromptDiff = { prompt, kind: 'check', before: sideOf(before.prompts[0]), after: sideOf(after.prompts[0]) };
    this.diffs.set(id, { ...diff, prompts: [...diff.prompts, pd] });
    return pd;
  }

  async revert(id: string): Promise<void> {
    const record = this.engine.edits.find((r) => r.id === id);
    if (!record) throw new Error(`the edit ${id} is not applied (any more)`);
    await this.engine.revertEdit(id);
    void vscode.window.showInformationMessage(`Fact Lens: reverted ${record.request.subject} → ${record.request.target}.`);
  }

  /** Save edited model…: a folder the engine writes the edited checkpoint into. */
  async saveModel(): Promise<string> {
    const model = this.engine.status.model;
    if (!model) throw new Error('no model is loaded');
    const base = vscode.workspace.workspaceFolders?.[0]?.uri ?? vscode.Uri.file(process.env.HOME ?? '/');
    const target = await vscode.window.showSaveDialog({
      defaultUri: vscode.Uri.joinPath(base, `${model.name}-edited`),
      title: `Save ${model.name} with its ${this.engine.edits.length} edit(s) as a checkpoint folder`,
      saveLabel: 'Save edited model',
    });
    if (!target) return 'Save cancelled';
    const r = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: 'Fact Lens: saving the edited model' }, () =>
      this.engine.saveEditedModel(target.fsPath),
    );
    const msg = `Saved ${path.basename(r.dir)} (${(r.bytes / 1e6).toFixed(1)} MB, ${r.edits.length} edit(s)); load it with the factlens.model.folder setting.`;
    this.log.info(`saved the edited model to ${r.dir}`);
    void vscode.window.showInformationMessage(`Fact Lens: ${msg}`);
    return msg;
  }

  private modelSummary(): EditDiff['model'] {
    const m = this.engine.status.model;
    return { name: m?.name ?? '?', backend: m?.backend ?? '?', nLayer: m?.nLayer ?? 0 };
  }

  dispose(): void {
    this.panel.dispose();
    for (const s of this.subs) s.dispose();
  }
}

function requestOf(input: EditInput, target: string, method?: EditMethod, layer?: number): EditRequest {
  return {
    prompt: input.template,
    subject: input.subject,
    target,
    targetTrue: input.targetTrue,
    method,
    layers: layer !== undefined ? [layer] : undefined,
  };
}

function promptsOf(filled: string, input: Pick<EditInput, 'paraphrases' | 'neighborhood'>): Array<{ prompt: string; kind: PromptKind }> {
  return [
    { prompt: filled, kind: 'edit' as const },
    ...(input.paraphrases ?? []).map((prompt) => ({ prompt, kind: 'paraphrase' as const })),
    ...(input.neighborhood ?? []).map((prompt) => ({ prompt, kind: 'neighborhood' as const })),
  ];
}

function sideOf(p: { top: PromptDiff['before']['top']; targets: PromptDiff['before']['targets']; generation: string | null }): PromptDiff['before'] {
  return { top: p.top, targets: p.targets, generation: p.generation };
}

/** The record without its weight deltas (the view needs none of them). */
export function summaryOf(r: EditRecord): EditSummary {
  // The engine's verdict, once its records carry one (took, reason).
  const verdict = r as EditRecord & { took?: unknown; reason?: unknown };
  return {
    id: r.id,
    method: r.method,
    layers: r.layers,
    request: r.request,
    info: r.info,
    createdAt: r.createdAt,
    ...(typeof verdict.took === 'boolean' ? { took: verdict.took } : {}),
    ...(typeof verdict.reason === 'string' ? { reason: verdict.reason } : {}),
  };
}

function formatSeconds(s: number): string {
  if (s < 90) return `${Math.round(s)} s`;
  return `${Math.round(s / 60)} min`;
}

/** What to edit, from a CodeLens argument or the active editor; undefined when the user cancelled. */
export async function resolveEditInput(arg?: unknown): Promise<EditInput | undefined> {
  if (isTargetArg(arg)) {
    const doc = await vscode.workspace.openTextDocument(vscode.Uri.parse(arg.uri));
    return inputAtLine(doc, arg.line);
  }
  const editor = vscode.window.activeTextEditor;
  if (!editor) throw new TemplateError('open a prompt file, or select a prompt in any file, to edit its fact.');
  const doc = editor.document;
  const sel = editor.selection;
  if (!sel.isEmpty) {
    const text = doc.getText(sel);
    const source = sourceOf(doc, sel.start.line);
    if (/\[[^\]]+\]/.test(text)) {
      try {
        return editInputFromPromptLine(text, sel.start.line, source);
      } catch {
        /* brackets that are not prompt markup: ask below */
      }
    }
    return fromPlainText(text.replace(/\s*=>.*$/s, ''), source);
  }
  return inputAtLine(doc, sel.active.line);
}

function sourceOf(doc: vscode.TextDocument, line: number): string {
  return `${path.basename(doc.uri.path)}:${line + 1}`;
}

async function inputAtLine(doc: vscode.TextDocument, line: number): Promise<EditInput | undefined> {
  if (line < 0 || line >= doc.lineCount) throw new TemplateError(`line ${line + 1} is not in ${path.basename(doc.uri.path)}.`);
  if (doc.languageId === PROMPTS_LANGUAGE || doc.uri.path.endsWith('.prompts')) {
    return editInputFromPromptLine(doc.lineAt(line).text, line, sourceOf(doc, line));
  }
  if (factFileKind(doc)) {
    const facts = factsOf(doc);
    if (facts?.isFactFile) {
      const before = facts.records.filter((r) => r.line <= line);
      const rec = before[before.length - 1] ?? facts.records[0];
      if (!rec) throw new TemplateError(facts.diagnostics[0]?.message ?? `no record in ${path.basename(doc.uri.path)}.`);
      return editInputFromRecord(rec, sourceOf(doc, rec.line));
    }
  }
  const text = doc.lineAt(line).text;
  if (!text.trim()) throw new TemplateError(`line ${line + 1} is empty: put the cursor on a prompt, or select one.`);
  return fromPlainText(text, sourceOf(doc, line));
}

async function fromPlainText(text: string, source: string): Promise<EditInput | undefined> {
  const prompt = normalizeSelection(text);
  if (!prompt) throw new TemplateError('the selection is empty.');
  const subject = await pickSubject(prompt);
  if (subject === undefined) return undefined;
  return editInputFromText(prompt, subject, source);
}
