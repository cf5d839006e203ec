/**
 * The status-bar item: engine state, backend and model. Clicking it offers model selection,
 * engine restart and the engine log.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { EngineService, EngineStatus } from './engine.js';

export function statusText(s: EngineStatus): { text: string; tooltip: string; error: boolean } {
  const m = s.model;
  const lines: string[] = [];
  let text: string;
  let error = false;
  switch (s.state) {
    case 'idle':
      text = '$(circle-outline) Fact Lens';
      lines.push('Engine not started (it starts on the first trace).');
      break;
    case 'starting':
      text = '$(sync~spin) Fact Lens: starting';
      lines.push('Starting the engine…');
      break;
    case 'loading':
      text = '$(sync~spin) Fact Lens: loading model';
      lines.push('Loading the model…');
      break;
    case 'restarting':
    case 'crashed':
      text = `$(sync~spin) Fact Lens: ${s.state}`;
      lines.push(`Engine ${s.state}${s.detail ? `: ${s.detail}` : ''}`);
      break;
    case 'failed':
    case 'error':
    case 'stopped':
      text = `$(error) Fact Lens: ${s.state === 'stopped' ? 'stopped' : 'engine error'}`;
      error = s.state !== 'stopped';
      lines.push(s.error ?? s.detail ?? `Engine ${s.state}`);
      break;
    case 'ready':
      text = m ? `$(pulse) ${m.name} · ${m.backend}` : '$(pulse) Fact Lens: ready';
      break;
    default:
      text = 'Fact Lens';
  }
  if (m) {
    lines.push(
      `Model: ${m.name} (${m.modelType}, ${m.nLayer} layers, d=${m.dModel}, ${(m.parameterCount / 1e6).toFixed(1)}M parameters)`,
      `Folder: ${m.dir}`,
      `Backend: ${m.backend}`,
    );
  }
  if (s.info) {
    lines.push(`Engine ${s.info.engineVersion} (pid ${s.info.pid}, protocol ${s.info.protocolVersion})`);
  }
  lines.push('', 'Click: select model, restart engine, show log');
  return { text, tooltip: lines.join('\n'), error };
}

export class EngineStatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('factlens.engine', vscode.StatusBarAlignment.Right, 100);
  private readonly sub: vscode.Disposable;

  constructor(engine: EngineService) {
    this.item.name = 'Fact Lens engine';
    this.item.command = 'factlens.engineMenu';
    this.update(engine.status);
    this.sub = engine.onDidChangeStatus((s) => this.update(s));
    this.item.show();
  }

  private update(s: EngineStatus): void {
    const { text, tooltip, error } = statusText(s);
    this.item.text = text;
    this.item.tooltip = tooltip;
    this.item.backgroundColor = error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    this.item.accessibilityInformation = { label: `Fact Lens engine: ${tooltip.split('\n')[0]}` };
  }

  dispose(): void {
    this.sub.dispose();
    this.item.dispose();
  }
}

/** The menu behind the status-bar item. */
export async function engineMenu(engine: EngineService): Promise<void> {
  const items: Array<vscode.QuickPickItem & { action: string }> = [
    { label: '$(database) Select model…', description: engine.status.model?.name, action: 'model' },
    { label: '$(debug-restart) Restart engine', description: engine.status.info ? `pid ${engine.status.info.pid}` : undefined, action: 'restart' },
    { label: '$(output) Show engine log', action: 'log' },
    { label: '$(settings-gear) Settings', action: 'settings' },
  ];
  const pick = await vscode.window.showQuickPick(items, { title: 'Fact Lens engine', placeHolder: statusText(engine.status).tooltip.split('\n')[0] });
  if (!pick) return;
  await vscode.commands.executeCommand(
    { model: 'factlens.selectModel', restart: 'factlens.restartEngine', log: 'factlens.showLog', settings: 'factlens.openSettings' }[pick.action]!,
  );
}

/** "Select model": the embedded model, recent folders, or a folder picked from disk. */
export async function selectModel(context: vscode.ExtensionContext, engine: EngineService): Promise<void> {
  const cfg = vscode.workspace.getConfiguration('factlens');
  const current = (cfg.get<string>('model.folder') ?? '').trim();
  const recent = context.globalState.get<string[]>('factlens.recentModels', []).filter((d) => d !== current);
  type Item = vscode.QuickPickItem & { dir: string | null };
  const items: Item[] = [
    { label: '$(package) tinyworld (embedded)', description: current ? undefined : 'current', detail: '8-layer GPT-2 that knows 5,604 facts; ships with the extension', dir: '' },
    ...(current ? [{ label: `$(folder) ${path.basename(current)}`, description: 'current', detail: current, dir: current }] : []),
    ...recent.map((d) => ({ label: `$(folder) ${path.basename(d)}`, detail: d, dir: d })),
    { label: '$(folder-opened) Choose a model folder…', detail: 'A Hugging Face checkpoint folder: config.json, *.safetensors, tokenizer', dir: null },
  ];
  const pick = await vscode.window.showQuickPick(items, { title: 'Fact Lens: select model' });
  if (!pick) return;
  let dir = pick.dir;
  if (dir === null) {
    const chosen = await vscode.window.showOpenDialog({ canSelectFolders: true, canSelectFiles: false, openLabel: 'Use this model', title: 'Model folder' });
    if (!chosen?.[0]) return;
    dir = chosen[0].fsPath;
  }
  if (dir) await context.globalState.update('factlens.recentModels', [dir, ...recent.filter((d) => d !== dir)].slice(0, 8));
  if (dir === current) {
    await engine.loadModel();
    return;
  }
  // The configuration listener loads it (factlens.model.folder changed).
  const target = vscode.workspace.workspaceFolders ? vscode.ConfigurationTarget.Workspace : vscode.ConfigurationTarget.Global;
  await cfg.update('model.folder', dir, target);
}
