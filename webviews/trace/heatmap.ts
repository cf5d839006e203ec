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
  private resize: ResizeObserver | null = null;
  private drawnWidth = 0;

  static override styles = css`
    :host {
      display: block;
      position: relative;
      min-width: 0;
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

  override connectedCallback(): void {
    super.connectedCallback();
    // Redraw when the panel's width changes, so the chart keeps filling its column.
    this.resize = new ResizeObserver(() => {
      if (this.view && Math.abs(this.clientWidth - this.drawnWidth) > 8) void this.draw();
    });
    this.resize.observe(this);
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.resize?.disconnect();
    this.resize = null;
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
        // Cells as wide as the element allows: the chart is drawn once at the default cell
        // width, then again with the width left for cells (element width − axes and legend).
        const nLayer = this.result.scores[this.kind]![0]?.length ?? 1;
        const width = this.clientWidth;
        let cellWidth = 22;
        let view: View | null = null;
        let holder: HTMLDivElement | null = null;
        for (let pass = 0; pass < 2; pass++) {
          const spec = heatmapSpec(this.result, this.kind, this.theme, { cellWidth });
          // A fresh holder per render: vega's renderer reuses an <svg> it finds in its
          // container, so two views must never share one.
          const next = document.createElement('div');
          next.className = 'holder';
          const v = await renderSpec(spec, next, 'svg', this.tooltipHandler);
          if (seq !== this.renderSeq) {
            v.finalize();
            return;
          }
          view?.finalize();
          view = v;
          holder = next;
          const svgWidth = Number(next.querySelector('svg')?.getAttribute('width')) || 0;
          const extra = svgWidth - nLayer * cellWidth;
          const fit = Math.floor((width - extra) / nLayer);
          if (!width || svgWidth <= 0 || Math.abs(fit - cellWidth) < 2) break;
          cellWidth = Math.max(16, Math.min(72, fit));
        }
        if (!view || !holder) return;
        this.drawnWidth = width;
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
    el.classList.add('visible');
    // Inside the view: right of and below the pointer, flipped to the left / above where it
    // would cross the window's edge (it would be clipped, or cover the legend).
    const host = this.getBoundingClientRect();
    const w = el.offsetWidth;
    const h = el.offsetHeight;
    const margin = 4;
    let x = event.clientX + 12;
    let y = event.clientY + 12;
    if (x + w > window.innerWidth - margin) x = event.clientX - 12 - w;
    if (y + h > window.innerHeight - margin) y = event.clientY - 12 - h;
    x = Math.max(margin, Math.min(x, window.innerWidth - margin - w));
    y = Math.max(margin, y);
    el.style.left = `${x - host.left}px`;
    el.style.top = `${y - host.top}px`;
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
