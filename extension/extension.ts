/**
 * Fact Lens for VS Code: causal tracing of GPT-style models from the editor.
 *
 * - `.prompts` files (and CounterFact-style `.json` / `.jsonl`): highlighting, a "Trace"
 *   CodeLens per prompt, problems with line and column;
 * - "Fact Lens: Trace this prompt" (editor context menu, CodeLens, command palette; on any
 *   selection it asks for the subject);
 * - "Fact Lens: Edit fact…" (palette, context menu, an "Edit" CodeLens): ROME / MEMIT / FT /
 *   FT+L edits with the edit-diff panel (webviews/edit) and the Edits sidebar; edits are
 *   journaled by EngineService and come back after a restart or a window reload;
 * - the trace panel (webviews/trace), a status-bar item (engine state, backend, model) and
 *   an output channel with the engine log.
 *
 * The engine runs in its own process (dist/engine/server.js) behind the engine client; the
 * extension host never loads tfjs or a model.
 */
import * as vscode from 'vscode';
import { EngineService, errorMessage } from './engine.js';
import { factsOf, PromptCodeLensProvider, PromptDiagnostics, PROMPTS_LANGUAGE } from './promptFiles.js';
import { EngineStatusBar, engineMenu, selectModel } from './statusBar.js';
import { EditRunner } from './editCommand.js';
import { EDITS_VIEW_ID, editIdOf, EditsTreeProvider } from './editsTree.js';
import { TraceRunner } from './traceCommand.js';
import { TracePanel } from './tracePanel.js';
import { SpecificityController } from './specificity/controller.js';

let engine: EngineService | undefined;

export interface FactLensApi {
  /** The engine, and the user's edits: subscribe to engine.onDidChangeEdits. */
  engine: EngineService;
}

export function activate(context: vscode.ExtensionContext): FactLensApi {
  const log = vscode.window.createOutputChannel('Fact Lens', { log: true });
  context.subscriptions.push(log);
  log.info(`Fact Lens ${context.extension.packageJSON.version ?? ''} activated (VS Code ${vscode.version}, node ${process.version})`);

  engine = new EngineService(context, log);
  context.subscriptions.push(engine, new EngineStatusBar(engine));

  let runner: TraceRunner;
  const panel: TracePanel = new TracePanel(
    context,
    {
      rerun: (input, settings) => void runner.run(input, settings),
      cancel: (runId) => runner.cancel(runId),
    },
    log,
  );
  runner = new TraceRunner(engine, () => panel, log);
  context.subscriptions.push(panel, runner);

  const edits = new EditRunner(context, engine, () => runner, log);
  const tree = new EditsTreeProvider(engine);
  context.subscriptions.push(edits, tree, vscode.window.createTreeView(EDITS_VIEW_ID, { treeDataProvider: tree, showCollapseAll: false }));

  const lenses = new PromptCodeLensProvider();
  const selector: vscode.DocumentSelector = [
    { language: PROMPTS_LANGUAGE },
    { pattern: '**/*.prompts' },
    { language: 'json' },
    { language: 'jsonl' },
    { pattern: '**/*.jsonl' },
  ];
  context.subscriptions.push(vscode.languages.registerCodeLensProvider(selector, lenses), new PromptDiagnostics());

  // `factlens.factFile`: the active editor holds CounterFact-style records (context menu).
  const updateFactContext = (ed: vscode.TextEditor | undefined) =>
    void vscode.commands.executeCommand('setContext', 'factlens.factFile', !!(ed && factsOf(ed.document)?.isFactFile));
  updateFactContext(vscode.window.activeTextEditor);
  context.subscriptions.push(vscode.window.onDidChangeActiveTextEditor(updateFactContext));

  const e = engine;
  const command = (id: string, fn: (...args: unknown[]) => unknown) =>
    context.subscriptions.push(
      vscode.commands.registerCommand(id, async (...args: unknown[]) => {
        try {
          await fn(...args);
        } catch (err) {
          log.error(`${id}: ${errorMessage(err)}`);
          void vscode.window.showErrorMessage(`Fact Lens: ${errorMessage(err)}`);
        }
      }),
    );
  command('factlens.tracePrompt', (arg) => runner.command(arg));
  command('factlens.editFact', (arg) => edits.command(arg));
  const editId = (arg: unknown) => {
    const id = editIdOf(arg);
    if (!id) throw new Error('pick an edit in the Edits view');
    return id;
  };
  command('factlens.edits.showDiff', (arg) => edits.showDiff(editId(arg)));
  command('factlens.edits.revert', (arg) => edits.revert(editId(arg)));
  command('factlens.edits.revertAll', async () => {
    const n = e.edits.length;
    if (!n) return void vscode.window.showInformationMessage('Fact Lens: no edits to revert.');
    const ok = await vscode.window.showWarningMessage(`Revert all ${n} edit(s) of ${e.status.model?.name ?? 'the model'}?`, { modal: true }, 'Revert all');
    if (ok) await e.revertAllEdits();
  });
  command('factlens.edits.save', () => edits.saveModel());
  command('factlens.edits.export', async () => {
    const base = vscode.workspace.workspaceFolders?.[0]?.uri ?? vscode.Uri.file(process.env.HOME ?? '/');
    const target = await vscode.window.showSaveDialog({
      defaultUri: vscode.Uri.joinPath(base, `${e.status.model?.name ?? 'model'}-edits.json`),
      filters: { 'Fact Lens edit journal': ['json'] },
      title: 'Export the edit journal',
    });
    if (!target) return;
    const n = await e.exportJournal(target.fsPath);
    void vscode.window.showInformationMessage(`Fact Lens: exported ${n} edit(s) to ${vscode.workspace.asRelativePath(target)}.`);
  });
  command('factlens.edits.import', async () => {
    const [file] = (await vscode.window.showOpenDialog({ canSelectMany: false, filters: { 'Fact Lens edit journal': ['json'] }, title: 'Import an edit journal' })) ?? [];
    if (!file) return;
    const r = await e.importJournal(file.fsPath);
    void vscode.window.showInformationMessage(`Fact Lens: imported ${r.applied.length} edit(s)${r.skipped.length ? `; ${r.skipped.length} already applied` : ''}.`);
  });
  command('factlens.selectModel', () => selectModel(context, e));
  command('factlens.restartEngine', async () => {
    await vscode.window.withProgress({ location: vscode.ProgressLocation.Window, title: 'Fact Lens: restarting the engine' }, () => e.restart());
    void vscode.window.showInformationMessage(`Fact Lens: engine restarted (${e.status.model?.name ?? 'no model'} on ${e.status.model?.backend ?? '?'}).`);
  });
  command('factlens.showLog', () => log.show());
  command('factlens.engineMenu', () => engineMenu(e));
  // Specificity beside the code: decorations, Problems and the status-bar summary follow the applied edits.
  const specificity = new SpecificityController(e);
  context.subscriptions.push(specificity);
  command('factlens.checkSpecificity', () => specificity.checkNow(true));
  command('factlens.specificity.revertEdit', (id) => specificity.revert(String(id)));
  command('factlens.specificity.showEditDiff', (id) => specificity.showEditDiff(String(id)));
  command('factlens.openSettings', () => vscode.commands.executeCommand('workbench.action.openSettings', '@ext:factlens.fact-lens'));

  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((ev) => {
      if (ev.affectsConfiguration('factlens.model.folder') || ev.affectsConfiguration('factlens.engine.backend')) {
        if (e.status.state === 'idle') return;
        e.loadModel().catch((err) => void vscode.window.showErrorMessage(`Fact Lens: could not load the model: ${errorMessage(err)}`));
      }
      if (ev.affectsConfiguration('factlens.codeLens.enabled')) lenses.refresh();
    }),
  );

  // Start the engine and load the model in the background, so the first trace is quick.
  if (vscode.workspace.getConfiguration('factlens').get<boolean>('engine.startOnActivation', true)) {
    e.ready().catch((err) => log.error(`the engine did not start: ${errorMessage(err)}`));
  }
  return { engine: e };
}

export async function deactivate(): Promise<void> {
  await engine?.dispose();
  engine = undefined;
}
