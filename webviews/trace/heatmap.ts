/**
 * <fl-heatmap>: one causal-tracing heatmap (hidden / mlp / attn), rendered with vega from the
 * Vega-Lite spec in spec.ts. Vega runs through its CSP-safe expression interpreter
 * (`ast: true` + vega-interpreter), so the view's CSP needs no 'unsafe-eval'.
 */
import { LitElement, css, html, type PropertyValues } from 'lit';
import type { Item, View } from 'vega';
import { renderSpec } from '../shared/vega.js';
import type { TraceKind, TraceResult } from '../../engine/protocol/trace.js';
import type { Theme } from '../shared/theme.js';
import { cellTooltip, heatmapSpec, KIND_INFO, type Cell } from './spec.js';

export { renderSpec } from '../shared/vega.js';

export class FlHeatmap extends LitElement {
  static override properties = {
    result: { attribute: false },
    kind: { reflect: true },
    theme: { attribute: false },
    error: { state: true },
  };

  declare result?: TraceResult;
  declare kind: TraceKind;
  declare theme?: Theme;
  declare error?: string;

  private view: View | null = null;
  private renderSeq = 0;
  private tooltipEl: HTMLElement | null = null;

  static override styles = css`
    :host {
      display: inline-block;
      position: relative;
      vertical-align: top;
      margin: 0 24px 16px 0;
    }
    .chart svg {
      display: block;
    }
    .tooltip {
      position: absolute;
      z-index: 10;
      pointer-events: none;
      white-space: pre;
      padding: 4px 8px;
      font-size: var(--vscode-font-size, 13px);
      font-family: var(--vscode-editor-font-family, monospace);
      color: var(--vscode-editorHoverWidget-foreground, var(--vscode-foreground));
      background: var(--vscode-editorHoverWidget-background, #252526);
      border: 1px solid var(--vscode-editorHoverWidget-border, #454545);
      border-radius: 3px;
      display: none;
    }
    .tooltip.visible {
      display: block;
    }
    .error {
      color: var(--vscode-errorForeground, #f48771);
    }
  `;

  constructor() {
    super();
    this.kind = 'hidden';
  }

  override render() {
    return html`<div class="chart" part="chart" role="img" aria-label=${`Causal trace: ${KIND_INFO[this.kind]?.label ?? this.kind}`}></div>
      <div class="tooltip" role="tooltip"></div>
      ${this.error ? html`<div class="error">${this.error}</div>` : null}`;
  }

  protected override updated(changed: PropertyValues<this>): void {
    if (changed.has('result') || changed.has('kind') || changed.has('theme')) void this.draw();
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.view?.finalize();
    this.view = null;
  }

  /** Resolves when the current chart has been drawn (tests and exports wait on it). */
  rendered: Promise<void> = Promise.resolve();

  private draw(): Promise<void> {
    const seq = ++this.renderSeq;
    this.rendered = (async () => {
      const container = this.renderRoot.querySelector<HTMLElement>('.chart');
      this.tooltipEl = this.renderRoot.querySelector<HTMLElement>('.tooltip');
      if (!container || !this.result || !this.theme || !this.result.scores[this.kind]) return;
      try {
        const spec = heatmapSpec(this.result, this.kind, this.theme);
        // A fresh holder per render: vega's renderer reuses an <svg> it finds in its
        // container, so two views must never share one.
        const holder = document.createElement('div');
        holder.className = 'holder';
        const view = await renderSpec(spec, holder, 'svg', this.tooltipHandler);
        if (seq !== this.renderSeq) {
          view.finalize();
          return;
        }
        this.view?.finalize();
        container.replaceChildren(holder);
        this.view = view;
        this.error = undefined;
        this.dispatchEvent(new CustomEvent('fl-rendered', { bubbles: true, composed: true, detail: { kind: this.kind } }));
      } catch (e) {
        this.error = `Could not draw the ${this.kind} chart: ${(e as Error).message}`;
      }
    })();
    return this.rendered;
  }

  /** Tooltips with exact values, themed like VS Code's hovers. */
  private readonly tooltipHandler = (_h: unknown, event: MouseEvent, item: Item | null | undefined, value: unknown) => {
    const el = this.tooltipEl;
    if (!el) return;
    const datum = (item?.datum ?? null) as Cell | null;
    if (value == null || value === '' || !datum || typeof datum.t !== 'number' || !this.result) {
      el.classList.remove('visible');
      return;
    }
    el.textContent = cellTooltip(this.result, this.kind, datum);
    const host = this.getBoundingClientRect();
    el.style.left = `${event.clientX - host.left + 12}px`;
    el.style.top = `${event.clientY - host.top + 12}px`;
    el.classList.add('visible');
  };

  /** The chart as standalone SVG, on the theme's background. */
  async toSVG(): Promise<string> {
    return (await this.exportView()).toSVG();
  }

  /** The chart as a PNG data URL (2× for crisp text). */
  async toPNG(): Promise<string> {
    return (await this.exportView()).toImageURL('png', 2);
  }

  private async exportView(): Promise<View> {
    if (!this.result || !this.theme) throw new Error('nothing to export yet');
    const spec = heatmapSpec(this.result, this.kind, this.theme, { background: this.theme.background });
    return renderSpec(spec, null);
  }
}

if (!customElements.get('fl-heatmap')) customElements.define('fl-heatmap', FlHeatmap);

declare global {
  interface HTMLElementTagNameMap {
    'fl-heatmap': FlHeatmap;
  }
}
