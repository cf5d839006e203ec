/**
 * Entry of the edit-diff webview bundle (dist/webviews/edit.js). Wires <fl-edit-view> to the
 * host through the view's typed channel (webviews/edit/protocol.ts); the shown diff is kept
 * with vscode.setState, so the view comes back as it was after hiding or a window reload.
 */
import { HostConnection } from '../shared/connection.js';
import { readTheme, watchTheme } from '../shared/theme.js';
import { AddCheck, EDIT_VIEW, EditStatus, Revert, SaveModel, ShowDiff, TracePrompt, type EditViewState } from './protocol.js';
import { FlEditView } from './edit-view.js';

export { FlEditView } from './edit-view.js';

export function start(root: HTMLElement = document.body): FlEditView {
  const host = new HostConnection(EDIT_VIEW);
  const view = document.createElement('fl-edit-view');
  view.theme = readTheme();
  const saved = host.state as EditViewState | undefined;
  if (saved && typeof saved === 'object') view.state = saved;
  root.replaceChildren(view);
  watchTheme((t) => (view.theme = t));

  const save = () => (host.state = view.state);
  /** Runs one request with the buttons disabled; its message or error goes under them. */
  const run = <T>(what: string, p: Promise<T>, done?: (r: T) => void) => {
    view.busy = what;
    p.then(
      (r) => {
        view.busy = null;
        done?.(r);
      },
      (e: unknown) => {
        view.busy = null;
        view.notice = { text: e instanceof Error ? e.message : String(e), error: true };
      },
    );
  };

  view.addEventListener('fl-revert', (e) => run('revert', host.request(Revert, { id: (e as CustomEvent).detail.id })));
  view.addEventListener('fl-save', () => run('save', host.request(SaveModel, {}), (text) => (view.notice = { text, error: false })));
  view.addEventListener('fl-trace', (e) => {
    const { prompt, subject } = (e as CustomEvent).detail;
    run('trace', host.request(TracePrompt, { prompt, subject }));
  });
  view.addEventListener('fl-check', (e) => {
    const { id, prompt } = (e as CustomEvent).detail;
    run('check', host.request(AddCheck, { id, prompt }), (pd) => {
      const diff = view.state.diff;
      if (diff && diff.edit.id === id) {
        view.state = { diff: { ...diff, prompts: [...diff.prompts, pd] } };
        save();
      }
    });
  });

  host.on(ShowDiff, (m) => {
    view.notice = null;
    view.state = { diff: m.diff };
    save();
  });
  host.on(EditStatus, (m) => {
    const diff = view.state.diff;
    if (!diff || diff.edit.id !== m.id) return;
    view.state = { diff: { ...diff, status: m.status } };
    if (m.status === 'reverted') view.notice = { text: 'This edit was reverted: the model predicts as before it.', error: false };
    save();
  });
  host.ready();
  return view;
}

if (typeof document !== 'undefined' && !(globalThis as { __flNoAutostart?: boolean }).__flNoAutostart) {
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', () => start());
  else start();
}
