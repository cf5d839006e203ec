/**
 * Fact Lens for VS Code: causal tracing of GPT-style models from the editor.
 *
 * - `.prompts` files (and CounterFact-style `.json` / `.jsonl`): highlighting, a "Trace"
 *   CodeLens per prompt, problems with line and column;
 * - "Fact Lens: Trace this prompt" (editor context menu, CodeLens, command palette; on any
 *   selection it asks for the subject);
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
import { TraceRunner } from './traceCommand.js';
import { TracePanel } from './tracePanel.js';
import { SpecificityController } from './specificity/controller.js';

let engine: EngineService | undefined;

export interface FactLensApi {
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
