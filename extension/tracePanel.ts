/**
 * The trace webview panel: one panel, reused, beside the editor. The host posts the trace
 * lifecycle (started, progress, result, error) and answers the view's requests (re-run,
 * cancel, export). The view keeps its own state (vscode.setState), so hiding and showing the
 * panel, or reloading the window (WebviewPanelSerializer), brings it back as it was.
 */
import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import { webviewHtml } from '../webviews/html.js';
import {
  isViewToHost,
  type HostToView,
  type TraceInput,
  type TraceSettings,
  type ViewRequest,
  type ViewToHost,
} from '../webviews/protocol.js';

export const TRACE_VIEW_TYPE = 'factlens.trace';

export interface TracePanelHandlers {
  rerun(input: TraceInput, settings: TraceSettings): void;
  cancel(runId: number): void;
}

export class TracePanel implements vscode.Disposable {
  private panel: vscode.WebviewPanel | null = null;
  private ready = false;
  private queue: HostToView[] = [];
  private readonly subs: vscode.Disposable[] = [];

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly handlers: TracePanelHandlers,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.subs.push(
      vscode.window.registerWebviewPanelSerializer(TRACE_VIEW_TYPE, {
        deserializeWebviewPanel: async (panel) => {
          // The view restores its own state from getState(); give it its page back.
          this.adopt(panel);
        },
      }),
    );
  }

  get visible(): boolean {
    return !!this.panel;
  }

  /** Opens (or reveals) the panel, beside the active editor. */
  show(title?: string): void {
    if (this.panel) {
      if (title) this.panel.title = title;
      this.panel.reveal(this.panel.viewColumn ?? vscode.ViewColumn.Beside, true);
      return;
    }
    const panel = vscode.window.createWebviewPanel(
      TRACE_VIEW_TYPE,
      title ?? 'Causal trace',
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      { enableScripts: true, localResourceRoots: [vscode.Uri.joinPath(this.context.extensionUri, 'dist', 'webviews')] },
    );
    this.adopt(panel);
  }

  private adopt(panel: vscode.WebviewPanel): void {
    this.panel?.dispose();
    this.panel = panel;
    this.ready = false;
    panel.iconPath = vscode.Uri.joinPath(this.context.extensionUri, 'media', 'icon.png');
    panel.webview.options = { enableScripts: true, localResourceRoots: [vscode.Uri.joinPath(this.context.extensionUri, 'dist', 'webviews')] };
    const scriptUri = panel.webview.asWebviewUri(vscode.Uri.joinPath(this.context.extensionUri, 'dist', 'webviews', 'trace.js'));
    panel.webview.html = webviewHtml({
      title: 'Causal trace',
      scriptUri: scriptUri.toString(),
      cspSource: panel.webview.cspSource,
      nonce: randomBytes(18).toString('base64url'),
    });
    const subs = [
      panel.webview.onDidReceiveMessage((m: unknown) => this.onMessage(panel, m)),
      // Hidden panels lose their page; the view posts 'ready' again when shown.
      panel.onDidChangeViewState(() => {
        if (!panel.visible) this.ready = false;
      }),
    ];
    panel.onDidDispose(() => {
      subs.forEach((s) => s.dispose());
      if (this.panel === panel) {
        this.panel = null;
        this.ready = false;
        this.queue = [];
      }
    });
  }

  /** Posts a message, queued until the view says it is ready. */
  post(m: HostToView): void {
    if (!this.panel) return;
    if (!this.ready) {
      // A hidden or loading view: progress is moot by the time it shows; the rest waits.
      if (m.type !== 'trace/progress') this.queue.push(m);
      return;
    }
    void this.panel.webview.postMessage(m);
  }

  private onMessage(panel: vscode.WebviewPanel, m: unknown): void {
    if (!isViewToHost(m)) {
      this.log.warn(`trace view: ignored a malformed message ${JSON.stringify(m)?.slice(0, 200)}`);
      return;
    }
    const msg = m as ViewToHost;
    if (msg.type === 'ready') {
      this.ready = true;
      const q = this.queue.splice(0);
      for (const x of q) void panel.webview.postMessage(x);
      return;
    }
    void this.handle(msg).then(
      (message) => this.reply(msg.requestId, true, message),
      (e: unknown) => this.reply(msg.requestId, false, e instanceof Error ? e.message : String(e)),
    );
  }

  private reply(requestId: number, ok: boolean, message?: string): void {
    this.post({ type: 'reply', requestId, ok, ...(message ? { message } : {}) });
  }

  private async handle(m: ViewRequest): Promise<string | undefined> {
    switch (m.type) {
      case 'rerun':
        this.handlers.rerun(m.input, m.settings);
        return undefined;
      case 'cancel':
        this.handlers.cancel(m.runId);
        return undefined;
      case 'export':
        return this.export(m.format, m.fileName, m.data);
    }
  }

  private async export(format: 'svg' | 'png', fileName: string, data: string): Promise<string | undefined> {
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
    this.log.info(`exported ${target.fsPath} (${bytes.length} bytes)`);
    return `Saved ${vscode.workspace.asRelativePath(target)}`;
  }

  dispose(): void {
    this.panel?.dispose();
    for (const s of this.subs) s.dispose();
  }
}
