/**
 * <fl-edit-view>: the edit-diff panel — what the edit is (method, layer, subject, true → new
 * target), whether it took and why, the measured diagnostics (k·u, ‖ΔW‖, v* probability,
 * timings), and per prompt (the edit prompt, a record's paraphrase and neighbourhood prompts,
 * check prompts the user adds): p(new) and p(true) before → after, the top-5 tokens before and
 * after as paired bars, and the greedy generations with the changed words marked. It knows
 * nothing of VS Code: it renders an EditViewState and raises DOM events (`fl-revert`,
 * `fl-save`, `fl-trace`, `fl-check`) that main.ts turns into requests to the host.
 */
import { LitElement, css, html, nothing, type PropertyValues } from 'lit';
import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-textfield/index.js';
import type { View } from 'vega';
import type { Theme } from '../shared/theme.js';
import { renderSpec } from '../shared/vega.js';
import { changedWords, formatP, romeDiagnostics, topSpec, verdictOf } from './diff.js';
import type { EditDiff, EditViewState, PromptDiff, PromptKind } from './protocol.js';

const KIND_LABEL: Record<PromptKind, string> = {
  edit: 'edit prompt',
  paraphrase: 'paraphrase',
  neighborhood: 'neighbourhood (should not change)',
  check: 'check prompt',
};

const secs = (x: unknown) => (typeof x !== 'number' ? null : x >= 10 ? `${x.toFixed(0)} s` : x >= 1 ? `${x.toFixed(1)} s` : `${(x * 1000).toFixed(0)} ms`);

export class FlEditView extends LitElement {
  static override properties = {
    state: { attribute: false },
    theme: { attribute: false },
    notice: { attribute: false },
    busy: { attribute: false },
  };

  declare state: EditViewState;
  declare theme?: Theme;
  declare notice: { text: string; error: boolean } | null;
  /** A request in flight (buttons disabled). */
  declare busy: string | null;

  private views: View[] = [];
  private renderedFor: unknown = null;

  constructor() {
    super();
    this.state = {};
    this.notice = null;
    this.busy = null;
  }

  static override styles = css`
    :host {
      display: block;
      padding: 8px 16px 24px;
      color: var(--vscode-foreground);
      font-family: var(--vscode-font-family);
      font-size: var(--vscode-font-size);
    }
    h1 {
      font-size: 1.3em;
      font-weight: 600;
      margin: 4px 0 4px;
    }
    .mono,
    .template,
    .token {
      font-family: var(--vscode-editor-font-family, monospace);
      white-space: pre-wrap;
    }
    .subject {
      color: var(--vscode-textLink-foreground);
      text-decoration: underline dotted;
    }
    .new {
      color: var(--vscode-charts-green, var(--vscode-foreground));
      font-weight: 600;
    }
    .badge {
      font-size: 0.75em;
      padding: 1px 6px;
      border-radius: 8px;
      border: 1px solid var(--vscode-panel-border, currentColor);
      vertical-align: middle;
      margin-left: 6px;
    }
    .badge.reverted {
      color: var(--vscode-descriptionForeground);
    }
    .meta {
      color: var(--vscode-descriptionForeground);
      margin: 2px 0 8px;
    }
    dl.facts {
      display: flex;
      flex-wrap: wrap;
      gap: 4px 18px;
      margin: 0 0 10px;
    }
    dl.facts div {
      display: flex;
      gap: 6px;
      align-items: baseline;
    }
    dt {
      color: var(--vscode-descriptionForeground);
    }
    dd {
      margin: 0;
      font-variant-numeric: tabular-nums;
    }
    .verdict {
      border-left: 4px solid var(--vscode-charts-green, #89d185);
      padding: 6px 10px;
      margin: 8px 0 10px;
      background: var(--vscode-textBlockQuote-background, transparent);
    }
    .verdict.bad {
      border-left-color: var(--vscode-errorForeground, #f85149);
    }
    .verdict .reason,
    .verdict .advice {
      display: block;
      margin-top: 2px;
    }
    .verdict .advice {
      color: var(--vscode-descriptionForeground);
    }
    .actions {
      display: flex;
      flex-wrap: wrap;
      gap: 8px;
      padding: 8px 0 10px;
      border-bottom: 1px solid var(--vscode-panel-border, transparent);
      margin-bottom: 8px;
    }
    .notice {
      margin: 0 0 8px;
      color: var(--vscode-descriptionForeground);
    }
    .notice.error {
      color: var(--vscode-errorForeground);
    }
    section.prompt {
      padding: 8px 0 12px;
      border-bottom: 1px solid var(--vscode-panel-border, transparent);
    }
    section.prompt h2 {
      font-size: 1.05em;
      font-weight: 600;
      margin: 0 0 6px;
    }
    .kind {
      font-weight: normal;
      color: var(--vscode-descriptionForeground);
      margin-left: 8px;
    }
    .row {
      display: flex;
      flex-wrap: wrap;
      gap: 12px 32px;
      align-items: flex-start;
    }
    table {
      border-collapse: collapse;
      font-variant-numeric: tabular-nums;
    }
    th,
    td {
      text-align: left;
      padding: 2px 10px 2px 0;
    }
    th {
      color: var(--vscode-descriptionForeground);
      font-weight: normal;
    }
    .gen {
      margin-top: 6px;
    }
    .gen div {
      margin: 2px 0;
    }
    .gen .label {
      display: inline-block;
      width: 4em;
      color: var(--vscode-descriptionForeground);
    }
    mark {
      background: var(--vscode-editor-findMatchHighlightBackground, rgba(234, 92, 0, 0.33));
      color: inherit;
    }
    .add-check {
      display: flex;
      gap: 8px;
      align-items: center;
      margin-top: 12px;
    }
    .add-check vscode-textfield {
      flex: 1;
      max-width: 40em;
    }
    .empty {
      color: var(--vscode-descriptionForeground);
      padding: 24px 0;
    }
  `;

  override render() {
    const diff = this.state.diff;
    if (!diff) return html`<div class="empty">No edit to show yet: run "Fact Lens: Edit fact…" on a prompt line.</div>`;
    const e = diff.edit;
    const v = verdictOf(diff);
    const d = romeDiagnostics(e);
    const [before, after] = e.request.prompt.split('{}');
    const reverted = diff.status === 'reverted';
    const layer = e.layers.length === 1 ? `layer ${e.layers[0]}` : `layers ${e.layers.join(', ')}`;
    return html`
      <h1>
        <span data-field="method">${e.method.toUpperCase()}</span> edit:
        <span class="subject">${e.request.subject}</span>: <span class="token" data-field="target-true">${diff.targetTrue}</span> →
        <span class="token new" data-field="target-new">${diff.targetNew}</span>
        <span class="badge ${reverted ? 'reverted' : ''}" data-field="status">${reverted ? 'reverted' : 'applied'}</span>
      </h1>
      <div class="template">${before}<span class="subject">${e.request.subject}</span>${after ?? ''}</div>
      <div class="meta">${diff.model.name} · ${diff.model.backend} · ${layer}${e.info.layer_source ? ` (${e.info.layer_source})` : ''}</div>
      <dl class="facts">
        ${d.kDotU !== undefined ? html`<div><dt>k·u</dt><dd data-field="k-dot-u">${d.kDotU.toFixed(3)}</dd></div>` : nothing}
        ${d.kRatio !== undefined ? html`<div><dt>k·u ratio (prompt / templates)</dt><dd data-field="k-ratio">${d.kRatio.toFixed(2)}</dd></div>` : nothing}
        ${d.vStarProb !== undefined ? html`<div><dt>v* p(new)</dt><dd data-field="v-star-p">${formatP(d.vStarProb)}</dd></div>` : nothing}
        ${d.deltaW !== undefined ? html`<div><dt>‖ΔW‖</dt><dd data-field="delta-w">${d.deltaW.toFixed(3)}</dd></div>` : nothing}
        ${this.timing('statistics', e.info.seconds_stats, e.info.stats_cached === 1 ? ' (cached)' : '')}
        ${this.timing('templates', e.info.seconds_templates, e.info.templates_cached === 1 ? ' (cached)' : '')}
        ${this.timing('v*', e.info.seconds_v)}
        ${this.timing('edit', e.info.seconds_total)}
        ${this.timing('total', diff.seconds)}
      </dl>
      <div class="verdict ${v.took ? 'ok' : 'bad'}" data-field="verdict" data-took=${v.took ? 'yes' : 'no'}>
        <strong>${v.headline}</strong>
        <span class="reason">Measured: ${v.reason}.</span>
        ${v.advice ? html`<span class="advice">${v.advice}</span>` : nothing}
      </div>
      <div class="actions">
        <vscode-button id="revert" ?disabled=${reverted || !!this.busy} @click=${() => this.fire('fl-revert', { id: e.id })}>Revert</vscode-button>
        <vscode-button id="save" secondary ?disabled=${reverted || !!this.busy} @click=${() => this.fire('fl-save', {})}>Save edited model…</vscode-button>
        <vscode-button id="trace" secondary ?disabled=${!!this.busy} @click=${() => this.fire('fl-trace', { prompt: e.request.prompt.replace('{}', e.request.subject), subject: e.request.subject })}
          >Trace this prompt${reverted ? '' : ' (after the edit)'}</vscode-button
        >
      </div>
      ${this.notice ? html`<div class="notice ${this.notice.error ? 'error' : ''}" data-field="notice">${this.notice.text}</div>` : nothing}
      ${diff.prompts.map((p, i) => this.promptSection(diff, p, i))}
      <div class="add-check">
        <vscode-textfield id="check" placeholder="Add a check prompt, e.g. ${e.request.subject} is known for" @keydown=${(ev: KeyboardEvent) => ev.key === 'Enter' && this.addCheck()}></vscode-textfield>
        <vscode-button id="add-check" secondary ?disabled=${!!this.busy} @click=${() => this.addCheck()}>Add check prompt</vscode-button>
      </div>
    `;
  }

  private timing(label: string, x: unknown, note = '') {
    const s = secs(x);
    return s ? html`<div><dt>${label}</dt><dd data-field="time-${label.replace(/\W/g, '')}">${s}${note}</dd></div>` : nothing;
  }

  private promptSection(diff: EditDiff, p: PromptDiff, i: number) {
    const [bNew, bTrue] = p.before.targets;
    const [aNew, aTrue] = p.after.targets;
    const gen = p.before.generation !== null && p.after.generation !== null ? changedWords(p.before.generation, p.after.generation) : null;
    return html`
      <section class="prompt" data-kind=${p.kind} data-index=${i}>
        <h2><span class="mono">${p.prompt}</span><span class="kind">${KIND_LABEL[p.kind]}</span></h2>
        <div class="row">
          <table>
            <tr><th></th><th>before</th><th>after</th></tr>
            <tr data-field="p-new"><th>p(${diff.targetNew})</th><td>${formatP(bNew?.prob)}</td><td>${formatP(aNew?.prob)}</td></tr>
            <tr data-field="p-true"><th>p(${diff.targetTrue})</th><td>${formatP(bTrue?.prob)}</td><td>${formatP(aTrue?.prob)}</td></tr>
            <tr data-field="top1">
              <th>top token</th><td class="token">${JSON.stringify(p.before.top[0]?.token ?? '')}</td><td class="token" data-field="after-top">${JSON.stringify(p.after.top[0]?.token ?? '')}</td>
            </tr>
          </table>
          <div class="chart" data-index=${i}></div>
        </div>
        ${gen
          ? html`<div class="gen">
              <div><span class="label">before</span><span class="mono">${p.prompt}</span><span class="mono" data-field="gen-before">${p.before.generation}</span></div>
              <div>
                <span class="label">after</span><span class="mono">${p.prompt}</span><span class="mono" data-field="gen-after"
                  >${gen.map((w) => (w.changed ? html`<mark>${w.text}</mark>` : w.text))}</span
                >
              </div>
            </div>`
          : nothing}
      </section>
    `;
  }

  private addCheck(): void {
    const field = this.renderRoot.querySelector('vscode-textfield#check') as (HTMLElement & { value: string }) | null;
    const prompt = field?.value.trim();
    if (!prompt || !this.state.diff) return;
    this.fire('fl-check', { id: this.state.diff.edit.id, prompt });
    if (field) field.value = '';
  }

  private fire(name: string, detail: unknown): void {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  protected override updated(changed: PropertyValues): void {
    if (this.theme && (changed.has('theme') || this.renderedFor !== this.state.diff?.prompts)) void this.renderCharts();
  }

  private async renderCharts(): Promise<void> {
    const diff = this.state.diff;
    const theme = this.theme;
    if (!diff || !theme) return;
    this.renderedFor = diff.prompts;
    for (const v of this.views.splice(0)) v.finalize();
    const holders = [...this.renderRoot.querySelectorAll<HTMLElement>('.chart[data-index]')];
    for (const holder of holders) {
      const p = diff.prompts[Number(holder.dataset.index)];
      if (!p) continue;
      holder.replaceChildren();
      try {
        this.views.push(await renderSpec(topSpec(p, theme), holder, 'svg'));
      } catch (e) {
        holder.textContent = `chart failed: ${(e as Error).message}`;
      }
    }
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    for (const v of this.views.splice(0)) v.finalize();
  }
}

if (!customElements.get('fl-edit-view')) customElements.define('fl-edit-view', FlEditView);

declare global {
  interface HTMLElementTagNameMap {
    'fl-edit-view': FlEditView;
  }
}
