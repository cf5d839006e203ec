/**
 * <fl-trace-view>: the whole trace panel — header (prompt, answer, probabilities, backend,
 * time), controls to re-run with other samples / noise / window, export, a progress bar while
 * a trace runs, and the three heatmaps. It knows nothing of VS Code: it renders a
 * TraceViewState and raises DOM events (`fl-rerun`, `fl-cancel`, `fl-export`) that main.ts
 * turns into messages to the host.
 */
import { LitElement, css, html, nothing } from 'lit';
import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-textfield/index.js';
import '@vscode-elements/elements/dist/vscode-progress-bar/index.js';
import type { TraceKind } from '../../engine/protocol/trace.js';
import type { ExportFormat, TraceSettings, TraceViewState } from './protocol.js';
import { DEFAULT_SETTINGS } from './protocol.js';
import type { Theme } from '../shared/theme.js';
import { FlHeatmap, renderSpec } from './heatmap.js';
import { figureSpec, KIND_INFO } from './spec.js';

export interface RunningState {
  runId: number;
  fraction: number;
  message: string;
}

/** Probabilities as the paper prints them, keeping tiny values legible. */
export function formatProb(p: number): string {
  if (!Number.isFinite(p)) return String(p);
  if (p >= 0.001) return p.toFixed(4);
  return p.toExponential(2);
}

export function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

export class FlTraceView extends LitElement {
  static override properties = {
    state: { attribute: false },
    running: { attribute: false },
    theme: { attribute: false },
    notice: { attribute: false },
  };

  declare state: TraceViewState;
  declare running: RunningState | null;
  declare theme?: Theme;
  /** A short message under the controls (export saved, validation errors). */
  declare notice: { text: string; error: boolean } | null;

  constructor() {
    super();
    this.state = {};
    this.running = null;
    this.notice = null;
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
      font-size: 1.35em;
      font-weight: 600;
      margin: 4px 0 6px;
      font-family: var(--vscode-editor-font-family, monospace);
      word-break: break-word;
    }
    .subject {
      color: var(--vscode-textLink-foreground);
      text-decoration: underline dotted;
    }
    .answer-token {
      color: var(--vscode-charts-green, var(--vscode-foreground));
      font-family: var(--vscode-editor-font-family, monospace);
      white-space: pre;
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
    .controls {
      display: flex;
      flex-wrap: wrap;
      align-items: flex-end;
      gap: 8px 12px;
      padding: 8px 0 10px;
      border-top: 1px solid var(--vscode-panel-border, transparent);
      border-bottom: 1px solid var(--vscode-panel-border, transparent);
      margin-bottom: 12px;
    }
    .controls label {
      display: flex;
      flex-direction: column;
      gap: 2px;
      color: var(--vscode-descriptionForeground);
    }
    .controls vscode-textfield {
      width: 7em;
    }
    .spacer {
      flex: 1;
    }
    .notice {
      margin: -4px 0 10px;
      color: var(--vscode-descriptionForeground);
    }
    .notice.error,
    .error-box {
      color: var(--vscode-errorForeground);
    }
    .error-box {
      border: 1px solid var(--vscode-inputValidation-errorBorder, var(--vscode-errorForeground));
      background: var(--vscode-inputValidation-errorBackground, transparent);
      padding: 8px 12px;
      margin: 8px 0 12px;
      white-space: pre-wrap;
    }
    .progress {
      margin: 0 0 12px;
      color: var(--vscode-descriptionForeground);
    }
    .charts {
      /* The charts share the panel's width: side by side in equal columns, one per row when narrow. */
      display: grid;
      grid-template-columns: repeat(auto-fit, minmax(300px, 1fr));
      gap: 16px 24px;
      align-items: start;
    }
    .quality {
      border: 1px solid var(--vscode-inputValidation-warningBorder, var(--vscode-editorWarning-foreground, currentColor));
      background: var(--vscode-inputValidation-warningBackground, transparent);
      color: var(--vscode-foreground);
      padding: 8px 12px;
      margin: 8px 0 12px;
    }
    .quality.meaningless {
      border-color: var(--vscode-inputValidation-errorBorder, var(--vscode-errorForeground, currentColor));
      background: var(--vscode-inputValidation-errorBackground, transparent);
    }
    .quality ul {
      margin: 4px 0 0;
      padding-left: 20px;
    }
    /* A focus ring of the theme's focus colour (high-contrast themes: their contrast border), so a
       focused button stays readable in every theme. */
    vscode-button:focus-visible,
    vscode-textfield:focus-within {
      outline: 1px solid var(--vscode-contrastActiveBorder, var(--vscode-focusBorder));
      outline-offset: 2px;
    }
    .charts.stale {
      opacity: 0.45;
    }
    .empty {
      color: var(--vscode-descriptionForeground);
      margin-top: 24px;
    }
  `;

  override render() {
    const { input, result, engine, error } = this.state;
    const settings = this.state.settings ?? DEFAULT_SETTINGS;
    const running = this.running;
    if (!input && !result) {
      return html`<p class="empty">Run “Fact Lens: Trace this prompt” on a prompt to see its causal trace here.</p>`;
    }
    return html`
      <header>
        <h1 class="prompt" title=${input?.source ?? ''}>${this.renderPrompt(input?.prompt ?? result?.prompt ?? '', input?.subject ?? result?.subject ?? '')}</h1>
        ${result
          ? html`<dl class="facts">
              <div><dt>answer</dt><dd class="answer-token" data-field="answer">${JSON.stringify(result.answer.token)}</dd></div>
              <div><dt>clean p</dt><dd data-field="clean">${formatProb(result.clean_prob)}</dd></div>
              <div><dt>corrupted p</dt><dd data-field="corrupted">${formatProb(result.corrupted_prob)}</dd></div>
              <div><dt>model</dt><dd data-field="model">${engine?.model ?? '?'}</dd></div>
              <div><dt>backend</dt><dd data-field="backend">${result.backend}</dd></div>
              <div><dt>time</dt><dd data-field="time">${formatMs(result.elapsed_ms)}</dd></div>
              <div><dt>samples</dt><dd data-field="samples">${result.samples}</dd></div>
              <div><dt>noise</dt><dd data-field="noise" title=${result.noise_source}>${result.noise_scale.toPrecision(4)}</dd></div>
              <div><dt>window</dt><dd data-field="window">${result.window}</dd></div>
              ${input?.expect ? html`<div><dt>expected</dt><dd data-field="expect">${input.expect}</dd></div>` : nothing}
            </dl>`
          : nothing}
      </header>
      <div class="controls">
        <label>samples<vscode-textfield id="samples" type="number" min="1" max="500" .value=${String(settings.samples)}></vscode-textfield></label>
        <label>noise<vscode-textfield id="noise" placeholder="3sigma" .value=${String(settings.noise)}></vscode-textfield></label>
        <label>window<vscode-textfield id="window" type="number" min="0" max="200" placeholder="auto" .value=${settings.window > 0 ? String(settings.window) : ''}></vscode-textfield></label>
        <vscode-button id="rerun" ?disabled=${!!running || !input} @click=${this.onRerun}>Re-run</vscode-button>
        ${running ? html`<vscode-button id="cancel" secondary @click=${this.onCancel}>Cancel</vscode-button>` : nothing}
        <span class="spacer"></span>
        <vscode-button id="export-svg" secondary ?disabled=${!result} @click=${() => this.onExport('svg')}>Export SVG</vscode-button>
        <vscode-button id="export-png" secondary ?disabled=${!result} @click=${() => this.onExport('png')}>Export PNG</vscode-button>
      </div>
      ${this.notice ? html`<div class="notice ${this.notice.error ? 'error' : ''}" role="status">${this.notice.text}</div>` : nothing}
      ${running
        ? html`<div class="progress" role="status">
            <vscode-progress-bar .value=${running.fraction} max="1" ?indeterminate=${running.fraction <= 0}></vscode-progress-bar>
            ${running.message || 'tracing…'} ${running.fraction > 0 ? `(${Math.round(running.fraction * 100)}%)` : ''}
          </div>`
        : nothing}
      ${error ? html`<div class="error-box" role="alert" data-code=${error.code}>${error.message}</div>` : nothing}
      ${result?.quality && result.quality.verdict !== 'ok'
        ? html`<div class="quality ${result.quality.verdict}" role="alert" data-verdict=${result.quality.verdict}>
            <strong>${result.quality.verdict === 'weak' ? 'Weak trace' : 'This trace shows nothing'}</strong>: the colours are drawn on the
            scale from corrupted to clean p, not stretched.
            <ul>
              ${result.quality.reasons.map((r) => html`<li>${r}</li>`)}
            </ul>
          </div>`
        : nothing}
      ${result
        ? html`<div class="charts ${running || error ? 'stale' : ''}" data-prompt=${result.prompt} data-subject=${result.subject}>
            ${(['hidden', 'mlp', 'attn'] as TraceKind[])
              .filter((k) => result.scores[k])
              .map((k) => html`<fl-heatmap kind=${k} .result=${result} .theme=${this.theme} title=${`Restoring ${KIND_INFO[k].label}`}></fl-heatmap>`)}
          </div>`
        : nothing}
    `;
  }

  private renderPrompt(prompt: string, subject: string) {
    const at = subject ? prompt.indexOf(subject) : -1;
    if (at < 0) return prompt;
    return html`${prompt.slice(0, at)}<span class="subject">${subject}</span>${prompt.slice(at + subject.length)}`;
  }

  /** The settings in the controls, validated; null (and a notice) when one is invalid. */
  readSettings(): TraceSettings | null {
    const val = (id: string) => (this.renderRoot.querySelector(`#${id}`) as HTMLInputElement | null)?.value?.trim() ?? '';
    const samples = Number(val('samples'));
    // An empty window is the engine's default for the model's depth (sent as 0).
    const window = val('window') === '' ? 0 : Number(val('window'));
    const noiseText = val('noise') || '3sigma';
    const noise = noiseText === '3sigma' || noiseText === '3σ' ? '3sigma' : Number(noiseText);
    const problems: string[] = [];
    if (!Number.isInteger(samples) || samples < 1 || samples > 500) problems.push('samples must be a whole number from 1 to 500');
    if (!Number.isInteger(window) || window < 0) problems.push('window must be a whole number of layers (empty: the default)');
    if (noise !== '3sigma' && (!Number.isFinite(noise) || noise < 0)) problems.push('noise must be "3sigma" or a non-negative number');
    if (problems.length) {
      this.notice = { text: problems.join('; '), error: true };
      return null;
    }
    return { samples, window, noise };
  }

  private onRerun = () => {
    const settings = this.readSettings();
    if (!settings || !this.state.input) return;
    this.notice = null;
    this.dispatchEvent(new CustomEvent('fl-rerun', { detail: { input: this.state.input, settings } }));
  };

  private onCancel = () => {
    if (this.running) this.dispatchEvent(new CustomEvent('fl-cancel', { detail: { runId: this.running.runId } }));
  };

  private async onExport(format: ExportFormat) {
    const r = this.state.result;
    if (!r || !this.theme) return;
    try {
      const data = await exportFigure(this.state, this.theme, format);
      const stem = `trace-${(this.state.input?.subject ?? r.subject).replace(/[^\p{L}\p{N}]+/gu, '-').replace(/^-|-$/g, '') || 'prompt'}`;
      this.dispatchEvent(new CustomEvent('fl-export', { detail: { format, data, fileName: `${stem}.${format}` } }));
    } catch (e) {
      this.notice = { text: `Export failed: ${(e as Error).message}`, error: true };
    }
  }

  /** The heatmap elements (tests wait on their `rendered`). */
  get heatmaps(): FlHeatmap[] {
    return [...this.renderRoot.querySelectorAll('fl-heatmap')];
  }
}

/** The three heatmaps as one figure: SVG text, or a PNG data URL. */
export async function exportFigure(state: TraceViewState, theme: Theme, format: ExportFormat): Promise<string> {
  if (!state.result) throw new Error('nothing to export yet');
  const view = await renderSpec(figureSpec(state.result, theme, { background: theme.background }), null);
  try {
    return format === 'svg' ? await view.toSVG() : await view.toImageURL('png', 2);
  } finally {
    view.finalize();
  }
}

if (!customElements.get('fl-trace-view')) customElements.define('fl-trace-view', FlTraceView);

declare global {
  interface HTMLElementTagNameMap {
    'fl-trace-view': FlTraceView;
  }
}
