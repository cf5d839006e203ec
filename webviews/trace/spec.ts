/**
 * Vega-Lite specs for the three causal-tracing heatmaps, in the ROME paper's style: tokens
 * down, layers across, subject tokens starred, one colour family per kind (hidden states
 * purple, MLP green, attention red) whose floor is the corrupted run's probability.
 *
 * Pure functions of the trace result and the theme (no DOM): the view renders them with
 * vega's CSP-safe interpreter, the tests inspect them directly.
 */
import type { TraceKind, TraceResult } from '../../engine/protocol/trace.js';
import type { Theme } from '../shared/theme.js';

export const KIND_INFO: Record<TraceKind, { label: string; title: string; scheme: string; site: string }> = {
  hidden: { label: 'hidden states', title: 'single restored layer', scheme: 'purples', site: 'blocks.{l}.hook_resid_post' },
  mlp: { label: 'MLP', title: 'center of interval of restored MLP layers', scheme: 'greens', site: 'blocks.{l}.hook_mlp_out' },
  attn: { label: 'attention', title: 'center of interval of restored attention layers', scheme: 'reds', site: 'blocks.{l}.hook_attn_out' },
};

export interface Cell {
  /** Token index (row). */
  t: number;
  /** Layer (column). */
  l: number;
  /** Mean p(answer) with this restoration; null when not computed. */
  p: number | null;
}

/** A token as a label: quotes keep leading spaces visible; subject tokens get a star. */
export function tokenLabel(token: string, isSubject: boolean): string {
  const shown = token.replace(/\n/g, '\\n').replace(/\t/g, '\\t');
  return `${shown}${isSubject ? '*' : ''}`;
}

export function tokenLabels(r: Pick<TraceResult, 'tokens' | 'subject_range'>): string[] {
  const [a, b] = r.subject_range;
  return r.tokens.map((tok, i) => tokenLabel(tok, i >= a && i < b));
}

/** The cells of one kind, row by row. */
export function cellsOf(r: TraceResult, kind: TraceKind): Cell[] {
  const grid = r.scores[kind];
  if (!grid) return [];
  const out: Cell[] = [];
  grid.forEach((row, t) =>
    row.forEach((p, l) => {
      out.push({ t, l, p: typeof p === 'number' && Number.isFinite(p) ? p : null });
    }),
  );
  return out;
}

/**
 * [floor, top] of the colour scale: the engine's rule (quality.color_domain): from the corrupted
 * p to the largest of the peak score, the clean p and corrupted p + 0.1, the same for the three
 * charts, so a weak trace is drawn faint instead of stretched to look strong. A result without
 * a quality (recorded by an older engine) falls back to corrupted p … largest score.
 */
export function colorDomain(r: TraceResult, kind: TraceKind): [number, number] {
  if (r.quality) return r.quality.color_domain;
  const floor = r.corrupted_prob;
  let top = floor;
  for (const c of cellsOf(r, kind)) if (c.p !== null && c.p > top) top = c.p;
  if (top <= floor) top = floor + 1e-6;
  return [floor, top];
}

/** Layer interval restored around centre l for MLP/attention (as engine/trace/types windowLayers). */
export function windowRange(l: number, window: number, nLayer: number): [number, number] {
  const lo = Math.max(0, l - Math.floor(window / 2));
  const hi = Math.min(nLayer, l - Math.floor(window / 2) + window);
  return [lo, hi];
}

/** The text of a cell's tooltip: exact values, nothing rounded away. */
export function cellTooltip(r: TraceResult, kind: TraceKind, c: Cell): string {
  const [a, b] = r.subject_range;
  const L = r.scores[kind]?.[0]?.length ?? 0;
  const tok = JSON.stringify(r.tokens[c.t]);
  const where =
    kind === 'hidden'
      ? `layer ${c.l}`
      : (() => {
          const [lo, hi] = windowRange(c.l, r.window, L);
          return `layers ${lo}–${hi - 1} (centre ${c.l})`;
        })();
  const p = c.p === null ? 'not computed' : c.p.toPrecision(6);
  return [
    `restore ${KIND_INFO[kind].label} at token ${c.t} ${tok}${c.t >= a && c.t < b ? ' (subject)' : ''}, ${where}`,
    `p(${JSON.stringify(r.answer.token)}) = ${p}`,
    `clean ${r.clean_prob.toPrecision(6)} · corrupted ${r.corrupted_prob.toPrecision(6)}`,
  ].join('\n');
}

/** Escapes a string as a vega expression string literal. */
function exprString(s: string): string {
  return JSON.stringify(s).replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

export interface SpecOptions {
  /** Cell size in px (default 22 × 20). */
  cellWidth?: number;
  cellHeight?: number;
  /** Give the chart a solid background (exports); otherwise transparent. */
  background?: string;
}

/**
 * The Vega-Lite spec of one heatmap. Data are inlined; labels come from an array literal
 * in `labelExpr`, so repeated tokens ("the" twice) keep separate rows.
 */
export function heatmapSpec(r: TraceResult, kind: TraceKind, theme: Theme, opts: SpecOptions = {}): Record<string, unknown> {
  const info = KIND_INFO[kind];
  const labels = tokenLabels(r);
  const [a, b] = r.subject_range;
  const nLayer = r.scores[kind]?.[0]?.length ?? 0;
  const cw = opts.cellWidth ?? 22;
  const ch = opts.cellHeight ?? 20;
  const domain = colorDomain(r, kind);
  const labelArray = `[${labels.map(exprString).join(',')}]`;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    description: `Impact of restoring ${info.label} after corrupted input`,
    background: opts.background ?? 'transparent',
    padding: 4,
    width: Math.max(1, nLayer) * cw,
    height: Math.max(1, labels.length) * ch,
    title: {
      text: `Restoring ${info.label}`,
      subtitle: `p(${JSON.stringify(r.answer.token)}) after corrupting the subject`,
      anchor: 'start',
    },
    data: { values: cellsOf(r, kind).filter((c) => c.p !== null) },
    mark: { type: 'rect', tooltip: true },
    encoding: {
      x: {
        field: 'l',
        type: 'ordinal',
        title: info.title,
        sort: 'ascending',
        scale: { domain: Array.from({ length: nLayer }, (_, i) => i) },
        axis: { labelAngle: 0, labelExpr: `datum.value % ${nLayer > 24 ? 4 : nLayer > 12 ? 2 : 1} === 0 ? datum.value : ''` },
      },
      y: {
        field: 't',
        type: 'ordinal',
        title: null,
        scale: { domain: labels.map((_, i) => i) },
        axis: {
          labelExpr: `${labelArray}[datum.value]`,
          labelFontWeight: { expr: `datum.value >= ${a} && datum.value < ${b} ? 'bold' : 'normal'` },
          labelLimit: 220,
        },
      },
      color: {
        field: 'p',
        type: 'quantitative',
        title: `p(${JSON.stringify(r.answer.token)})`,
        scale: { scheme: info.scheme, domain, clamp: true, nice: false },
        legend: { gradientLength: Math.max(60, Math.min(labels.length * ch, 200)), format: '.3~f' },
      },
    },
    config: themeConfig(theme),
  };
}

/** Vega config from the VS Code theme: fonts and text colours, nothing hard-coded. */
export function themeConfig(theme: Theme): Record<string, unknown> {
  const text = { labelColor: theme.foreground, titleColor: theme.foreground, labelFont: theme.fontFamily, titleFont: theme.fontFamily };
  return {
    font: theme.fontFamily,
    view: { stroke: null },
    title: { color: theme.foreground, subtitleColor: theme.descriptionForeground, font: theme.fontFamily, subtitleFont: theme.fontFamily, fontSize: theme.fontSize + 1, subtitleFontSize: theme.fontSize - 1 },
    axis: { ...text, labelFontSize: theme.fontSize - 1, titleFontSize: theme.fontSize - 1, titleFontWeight: 'normal', domainColor: theme.border, tickColor: theme.border, grid: false },
    legend: { ...text, labelFontSize: theme.fontSize - 2, titleFontSize: theme.fontSize - 1, titleFontWeight: 'normal' },
    rect: theme.highContrast ? { stroke: theme.border, strokeWidth: 0.5 } : {},
  };
}

/** The three heatmaps side by side as one figure (the export), each with its own colour scale. */
export function figureSpec(r: TraceResult, theme: Theme, opts: SpecOptions = {}): Record<string, unknown> {
  const kinds = (['hidden', 'mlp', 'attn'] as TraceKind[]).filter((k) => r.scores[k]);
  const panels = kinds.map((k) => {
    const { $schema: _s, config: _c, background: _b, padding: _p, ...rest } = heatmapSpec(r, k, theme, opts);
    return rest;
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    background: opts.background ?? 'transparent',
    padding: 12,
    title: { text: r.prompt, subtitle: `answer ${JSON.stringify(r.answer.token)} · clean ${r.clean_prob.toFixed(4)} · corrupted ${r.corrupted_prob.toFixed(4)}`, anchor: 'start' },
    hconcat: panels,
    spacing: 28,
    resolve: { scale: { color: 'independent' }, legend: { color: 'independent' } },
    config: themeConfig(theme),
  };
}
