/**
 * One webview panel of one view protocol (webviews/<view>/protocol.ts): the page (the view's
 * bundle under a strict nonce CSP, webviews/html.ts, a fresh nonce from `crypto` per page),
 * the ready handshake (notifications wait until the page says it listens; transient ones are
 * dropped instead), typed request handlers with one correlated reply per request, and
 * restoring the panel after a window reload (WebviewPanelSerializer; the view restores its
 * own state from vscode.getState). The trace panel and the edit panel are both instances.
 */
import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';
import { webviewHtml } from '../webviews/html.js';
import {
  isViewToHost,
  type AnyNotification,
  type AnyRequest,
  type HostToView,
  type NotificationsOf,
  type ParamsOf,
  type RequestsOf,
  type ResultOf,
  type ViewProtocol,
} from '../webviews/shared/channel.js';

export interface WebviewHostOptions {
  /** Title of a new panel (and of the page). */
  title: string;
  /** Called when VS Code restores the panel after a reload (before the page has loaded). */
  onRestore?: () => void;
}

type Handler<Q extends AnyRequest> = (params: ParamsOf<Q>) => Promise<ResultOf<Q>> | ResultOf<Q>;

export class WebviewHost<V extends ViewProtocol<AnyRequest, AnyNotification>> implements vscode.Disposable {
  private panel: vscode.WebviewPanel | null = null;
  private ready = false;
  private queue: HostToView<V>[] = [];
  private readonly handlers = new Map<string, (params: unknown) => unknown>();
  private readonly subs: vscode.Disposable[] = [];
  private readonly disposed = new vscode.EventEmitter<void>();
  /** The panel was closed by the user (or disposed). */
  readonly onDidDispose = this.disposed.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    readonly view: V,
    private readonly opts: WebviewHostOptions,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.subs.push(
      vscode.window.registerWebviewPanelSerializer(view.viewType, {
        deserializeWebviewPanel: async (panel) => {
          this.adopt(panel);
          opts.onRestore?.();
        },
      }),
    );
  }

  get visible(): boolean {
    return !!this.panel;
  }

  /** Handles one request type of the view; the handler's value (or error) is the reply. */
  onRequest<Q extends RequestsOf<V>>(type: Q, handler: Handler<Q>): void {
    this.handlers.set(type.type, handler as (params: unknown) => unknown);
  }

  /** Opens (or reveals) the panel beside the active editor. */
  show(title?: string): void {
    if (this.panel) {
      if (title) this.panel.title = title;
      this.panel.reveal(this.panel.viewColumn ?? vscode.ViewColumn.Beside, true);
      return;
    }
    const panel = vscode.window.createWebviewPanel(
      this.view.viewType,
      title ?? this.opts.title,
      { viewColumn: vscode.ViewColumn.Beside, preserveFocus: true },
      this.webviewOptions(),
    );
    this.adopt(panel);
  }

  /** Sends a notification, queued until the page is ready (transient ones are dropped then). */
  notify<N extends NotificationsOf<V>>(type: N, params: ParamsOf<N>): void {
    if (!this.panel) return;
    const m = { ...params, type: type.type } as HostToView<V>;
    if (!this.ready) {
      if (!type.transient) this.queue.push(m);
      return;
    }
    void this.panel.webview.postMessage(m);
  }

  private webviewOptions(): vscode.WebviewOptions {
    return { enableScripts: true, localResourceRoots: [vscode.Uri.joinPath(this.context.extensionUri, 'dist', 'webviews')] };
  }

  private adopt(panel: vscode.WebviewPanel): void {
    this.panel?.dispose();
    this.panel = panel;
    this.ready = false;
    panel.iconPath = vscode.Uri.joinPath(this.context.extensionUri, 'media', 'icon.png');
    panel.webview.options = this.webviewOptions();
    const scriptUri = panel.webview.asWebviewUri(vscode.Uri.joinPath(this.context.extensionUri, 'dist', 'webviews', this.view.script));
    panel.webview.html = webviewHtml({
      title: this.opts.title,
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
        this.disposed.fire();
      }
    });
  }

  private onMessage(panel: vscode.WebviewPanel, m: unknown): void {
    if (!isViewToHost(this.view, m)) {
      this.log.warn(`${this.view.viewType}: ignored a malformed message ${JSON.stringify(m)?.slice(0, 200)}`);
      return;
    }
    if ((m as { type: string }).type === 'ready') {
      this.ready = true;
      for (const x of this.queue.splice(0)) void panel.webview.postMessage(x);
      return;
    }
    const { type, requestId, ...params } = m as { type: string; requestId: number };
    const handler = this.handlers.get(type);
    const reply = (ok: boolean, value: unknown) =>
      void panel.webview.postMessage(ok ? { type: 'reply', requestId, ok, result: value } : { type: 'reply', requestId, ok, message: value });
    if (!handler) {
      reply(false, `${this.view.viewType}: no handler for ${type}`);
      return;
    }
    Promise.resolve()
      .then(() => handler(params))
      .then(
        (result) => reply(true, result),
        (e: unknown) => {
          const message = e instanceof Error ? e.message : String(e);
          this.log.warn(`${this.view.viewType}: ${type} failed: ${message}`);
          reply(false, message);
        },
      );
  }

  dispose(): void {
    this.panel?.dispose();
    for (const s of this.subs) s.dispose();
    this.disposed.dispose();
  }
}
