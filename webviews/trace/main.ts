/**
 * Entry of the trace webview bundle (dist/webviews/trace.js). Wires <fl-trace-view> to the
 * host: typed messages in and out (webviews/protocol.ts), state kept with vscode.setState so
 * the view comes back as it was when hidden and shown again (or after a window reload, with
 * the host's WebviewPanelSerializer).
 */
import type { HostToView, TraceViewState, ViewRequest, ViewToHost } from '../protocol.js';
import { isHostToView } from '../protocol.js';
import { readTheme, watchTheme } from '../shared/theme.js';
import { FlTraceView } from './trace-view.js';

export { FlTraceView } from './trace-view.js';
export { FlHeatmap } from './heatmap.js';

interface VsCodeApi {
  postMessage(msg: ViewToHost): void;
  getState(): unknown;
  setState(s: unknown): void;
}

declare function acquireVsCodeApi(): VsCodeApi;

/** Outside VS Code (the component tests), a stand-in that records messages. */
function api(): VsCodeApi {
  if (typeof acquireVsCodeApi === 'function') return acquireVsCodeApi();
  let state: unknown = (globalThis as { __flInitialState?: unknown }).__flInitialState;
  const sent: ViewToHost[] = [];
  (globalThis as { __flSent?: ViewToHost[] }).__flSent = sent;
  return {
    postMessage: (m) => sent.push(m),
    getState: () => state,
    setState: (s) => (state = s),
  };
}

export function start(root: HTMLElement = document.body): FlTraceView {
  const vscode = api();
  const view = document.createElement('fl-trace-view');
  view.theme = readTheme();
  const saved = vscode.getState() as TraceViewState | undefined;
  if (saved && typeof saved === 'object') view.state = saved;
  root.replaceChildren(view);
  watchTheme((t) => (view.theme = t));

  let nextRequest = 1;
  const pending = new Map<number, ViewRequest['type']>();
  const send = (m: ViewRequest) => {
    pending.set(m.requestId, m.type);
    vscode.postMessage(m);
  };
  const save = () => vscode.setState(view.state);

  view.addEventListener('fl-rerun', (e) => {
    const { input, settings } = (e as CustomEvent).detail;
    send({ type: 'rerun', requestId: nextRequest++, input, settings });
  });
  view.addEventListener('fl-cancel', (e) => {
    send({ type: 'cancel', requestId: nextRequest++, runId: (e as CustomEvent).detail.runId });
  });
  view.addEventListener('fl-export', (e) => {
    const { format, data, fileName } = (e as CustomEvent).detail;
    send({ type: 'export', requestId: nextRequest++, format, data, fileName });
  });

  const onMessage = (m: HostToView) => {
    switch (m.type) {
      case 'trace/started':
        view.running = { runId: m.runId, fraction: 0, message: 'starting…' };
        view.state = { ...view.state, input: m.input, settings: m.settings, error: undefined };
        view.notice = null;
        break;
      case 'trace/progress':
        if (view.running?.runId === m.runId) view.running = { runId: m.runId, fraction: m.fraction, message: m.message };
        return;
      case 'trace/result':
        view.running = null;
        view.state = { input: m.input, settings: m.settings, engine: m.engine, result: m.result };
        break;
      case 'trace/error':
        view.running = null;
        view.state = { ...view.state, input: m.input, error: { code: m.code, message: m.message } };
        break;
      case 'reply': {
        const kind = pending.get(m.requestId);
        pending.delete(m.requestId);
        if (kind === 'export' || !m.ok) view.notice = m.message ? { text: m.message, error: !m.ok } : null;
        return;
      }
    }
    save();
  };
  window.addEventListener('message', (ev: MessageEvent) => {
    if (isHostToView(ev.data)) onMessage(ev.data);
  });
  vscode.postMessage({ type: 'ready' });
  return view;
}

if (typeof document !== 'undefined' && !(globalThis as { __flNoAutostart?: boolean }).__flNoAutostart) {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => start());
  else start();
}
