/**
 * The trace webview panel: one panel, reused, beside the editor — an instance of the generic
 * webview host with the trace view's protocol. The host notifies the trace lifecycle
 * (started, progress, result, error) and answers the view's requests (re-run, cancel,
 * export). The view keeps its own state (vscode.setState), so hiding and showing the panel,
 * or reloading the window, brings it back as it was.
 */
import * as vscode from 'vscode';
import { Cancel, Export, Rerun, TRACE_VIEW, type ExportFormat, type TraceInput, type TraceSettings, type TraceView } from '../webviews/trace/protocol.js';
import { WebviewHost } from './webviewHost.js';

export const TRACE_VIEW_TYPE = TRACE_VIEW.viewType;

export interface TracePanelHandlers {
  rerun(input: TraceInput, settings: TraceSettings): void;
  cancel(runId: number): void;
}

export class TracePanel extends WebviewHost<TraceView> {
  constructor(context: vscode.ExtensionContext, handlers: TracePanelHandlers, private readonly logChannel: vscode.LogOutputChannel) {
    super(context, TRACE_VIEW, { title: 'Causal trace' }, logChannel);
    this.onRequest(Rerun, (p) => handlers.rerun(p.input, p.settings));
    this.onRequest(Cancel, (p) => handlers.cancel(p.runId));
    this.onRequest(Export, (p) => this.export(p.format, p.fileName, p.data));
  }

  private async export(format: ExportFormat, fileName: string, data: string): Promise<string> {
    const base = vscode.workspace.workspaceFolders?.[0]?.uri ?? vscode.Uri.file(process.env.HOME ?? '/');
    const target = await vscode.window.showSaveDialog({
      defaultUri: vscode.Uri.joinPath(base, fileName),
      filters: format === 'svg' ? { 'SVG image': ['svg'] } : { 'PNG image': ['png'] },
      title: `Export the trace as ${format.toUpperCase()}`,
    });
    if (!target) return 'Export cancelled';
    let bytes: Uint8Array;
    if (format === 'svg') {
      if (!data.trimStart().startsWith('<svg')) throw new Error('the view sent no SVG');
      bytes = Buffer.from(data, 'utf8');
    } else {
      const m = /^data:image\/png;base64,(.*)$/s.exec(data);
      if (!m) throw new Error('the view sent no PNG');
      bytes = Buffer.from(m[1], 'base64');
    }
    await vscode.workspace.fs.writeFile(target, bytes);
    this.logChannel.info(`exported ${target.fsPath} (${bytes.length} bytes)`);
    return `Saved ${vscode.workspace.asRelativePath(target)}`;
  }
}
