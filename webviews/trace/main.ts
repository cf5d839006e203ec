/**
 * Entry of the trace webview bundle (dist/webviews/trace.js). Wires <fl-trace-view> to the
 * host through the view's typed channel (webviews/trace/protocol.ts), state kept with
 * vscode.setState so the view comes back as it was when hidden and shown again (or after a
 * window reload, with the host's WebviewPanelSerializer).
 */
import { HostConnection } from '../shared/connection.js';
import { readTheme, watchTheme } from '../shared/theme.js';
import { Cancel, Export, Rerun, TRACE_VIEW, TraceError, TraceProgress, TraceResultNote, TraceStarted, type TraceViewState } from './protocol.js';
import { FlTraceView } from './trace-view.js';

export { FlTraceView } from './trace-view.js';
export { FlHeatmap } from './heatmap.js';

export function start(root: HTMLElement = document.body): FlTraceView {
  const host = new HostConnection(TRACE_VIEW);
  const view = document.createElement('fl-trace-view');
  view.theme = readTheme();
  const saved = host.state as TraceViewState | undefined;
  if (saved && typeof saved === 'object') view.state = saved;
  root.replaceChildren(view);
  watchTheme((t) => (view.theme = t));

  const save = () => (host.state = view.state);
  const failed = (e: unknown) => (view.notice = { text: e instanceof Error ? e.message : String(e), error: true });

  view.addEventListener('fl-rerun', (e) => {
    const { input, settings } = (e as CustomEvent).detail;
    host.request(Rerun, { input, settings }).catch(failed);
  });
  view.addEventListener('fl-cancel', (e) => {
    host.request(Cancel, { runId: (e as CustomEvent).detail.runId }).catch(failed);
  });
  view.addEventListener('fl-export', (e) => {
    const { format, data, fileName } = (e as CustomEvent).detail;
    host.request(Export, { format, data, fileName }).then((text) => (view.notice = { text, error: false }), failed);
  });

  host.on(TraceStarted, (m) => {
    view.running = { runId: m.runId, fraction: 0, message: 'starting…' };
    view.state = { ...view.state, input: m.input, settings: m.settings, error: undefined };
    view.notice = null;
    save();
  });
  host.on(TraceProgress, (m) => {
    if (view.running?.runId === m.runId) view.running = { runId: m.runId, fraction: m.fraction, message: m.message };
  });
  host.on(TraceResultNote, (m) => {
    view.running = null;
    view.state = { input: m.input, settings: m.settings, engine: m.engine, result: m.result };
    save();
  });
  host.on(TraceError, (m) => {
    view.running = null;
    view.state = { ...view.state, input: m.input, error: { code: m.code, message: m.message } };
    save();
  });
  host.ready();
  return view;
}

if (typeof document !== 'undefined' && !(globalThis as { __flNoAutostart?: boolean }).__flNoAutostart) {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => start());
  else start();
}
