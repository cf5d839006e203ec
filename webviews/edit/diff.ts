/**
 * The edit view's pure parts (no DOM): whether an edit took and why, the changed words of a
 * generation, and the Vega-Lite spec of the top-5 before/after bars. The view renders them;
 * the tests check them directly.
 */
import type { Theme } from '../shared/theme.js';
import type { EditDiff, EditSummary, ProbeSide, PromptDiff } from './protocol.js';

export interface Verdict {
  took: boolean;
  /** One sentence: what the top prediction on the edit prompt is after the edit. */
  headline: string;
  /** The measured cause (for ROME: k·u ratio, v* target probability). */
  reason: string;
  /** What to try when it did not take. */
  advice: string;
}

const withSpace = (t: string) => (t.startsWith(' ') ? t : ` ${t}`);

/** Whether a next-token candidate is the first token of a target string. */
export function isTargetToken(token: string, target: string): boolean {
  return token.trim() !== '' && withSpace(target.trim()).startsWith(token);
}

export function formatP(p: number | null | undefined): string {
  if (p === null || p === undefined || !Number.isFinite(p)) return '–';
  if (p >= 0.01) return p.toFixed(3);
  if (p >= 1e-4) return p.toFixed(4);
  return p.toExponential(1);
}

const num = (x: unknown): number | undefined => (typeof x === 'number' && Number.isFinite(x) ? x : undefined);

/** ROME's measured diagnostics from a record's info. */
export function romeDiagnostics(e: EditSummary): { kRatio?: number; kDotU?: number; vStarProb?: number; deltaW?: number } {
  const kBar = num(e.info.k_bar_dot_u);
  const kBare = num(e.info.k_bare_dot_u);
  return {
    kRatio: kBar && kBare !== undefined ? kBare / kBar : undefined,
    kDotU: num(e.info.k_dot_u),
    // v*'s own success as the verdict measures it (edit/verdict.ts): exp(−NLL), the geometric
    // mean over the rewriting prompts; the arithmetic mean (target_prob_final) for older records.
    vStarProb: num(e.info.nll_final) !== undefined ? Math.exp(-num(e.info.nll_final)!) : num(e.info.target_prob_final),
    deltaW: num(e.info.delta_w_norm) ?? num(e.info.delta_norm),
  };
}

/**
 * The verdict: the edit took when the new target is the top prediction on the edit prompt
 * after the edit. The engine's own verdict (`took`, `reason`) is used when the record has one.
 */
export function verdictOf(diff: EditDiff): Verdict {
  const main = diff.prompts.find((p) => p.kind === 'edit') ?? diff.prompts[0];
  const top = main?.after.top[0];
  const pNew = main?.after.targets[0]?.prob;
  const took = diff.edit.took ?? (top ? isTargetToken(top.token, diff.targetNew) : false);
  const shown = (t: string) => JSON.stringify(t);
  const headline = top
    ? took
      ? `The edit took: ${shown(top.token)} is the top prediction on the edit prompt (p ${formatP(top.prob)}).`
      : `The edit did not take: ${shown(top.token)} is still the top prediction on the edit prompt (p ${formatP(top.prob)}; p(${diff.targetNew.trim()}) ${formatP(pNew)}).`
    : took
      ? 'The edit took.'
      : 'The edit did not take.';
  if (diff.edit.reason) return { took, headline, reason: diff.edit.reason, advice: took ? '' : adviceFor(diff.edit) };
  const d = romeDiagnostics(diff.edit);
  const parts: string[] = [];
  if (d.kRatio !== undefined) parts.push(`k·u ratio ${d.kRatio.toFixed(2)} (the edit prompt gets ${Math.round(d.kRatio * 100)}% of the change made for the templates)`);
  if (d.vStarProb !== undefined) parts.push(`v* gives the new target p ${formatP(d.vStarProb)} on the templates`);
  if (d.deltaW !== undefined) parts.push(`‖ΔW‖ ${d.deltaW.toFixed(2)}`);
  let reason = parts.join('; ');
  if (!took && diff.edit.method === 'rome') {
    if (d.vStarProb !== undefined && d.vStarProb < 0.5) reason = `v* did not reach the new target (p ${formatP(d.vStarProb)} on the templates, within the clamp radius)${d.kRatio !== undefined ? `; k·u ratio ${d.kRatio.toFixed(2)}` : ''}`;
    else if (d.kRatio !== undefined && d.kRatio < 0.9) reason = `the edit prompt's key gets only ${Math.round(d.kRatio * 100)}% of the change (k·u ratio ${d.kRatio.toFixed(2)}) although v* works on the templates (p ${formatP(d.vStarProb)})`;
  }
  return { took, headline, reason: reason || `method ${diff.edit.method}`, advice: took ? '' : adviceFor(diff.edit) };
}

function adviceFor(e: EditSummary): string {
  if (e.method !== 'rome') return 'Try ROME or another layer, or more optimisation steps.';
  const d = romeDiagnostics(e);
  if (d.vStarProb !== undefined && d.vStarProb < 0.5) return 'Try a later layer, MEMIT over a range of layers, or FT.';
  if (d.kRatio !== undefined && d.kRatio < 0.9) {
    return e.request.formula === 'reference'
      ? 'Try a prompt with words before the subject, another layer, or FT.'
      : 'Try the reference formula (the bare prompt\'s own key), a prompt with words before the subject, or FT.';
  }
  return 'Try another layer, MEMIT, or FT.';
}

export interface WordPiece {
  text: string;
  changed: boolean;
}

/** The words of `after` (whitespace kept), marked where they are not in the longest common word sequence with `before`. */
export function changedWords(before: string, after: string): WordPiece[] {
  const a = before.split(/(\s+)/).filter((w) => w !== '');
  const b = after.split(/(\s+)/).filter((w) => w !== '');
  const n = a.length;
  const m = b.length;
  const lcs: number[][] = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i][j] = a[i] === b[j] ? lcs[i + 1][j + 1] + 1 : Math.max(lcs[i + 1][j], lcs[i][j + 1]);
  const out: WordPiece[] = [];
  let i = 0;
  for (let j = 0; j < m; j++) {
    while (i < n && a[i] !== b[j] && lcs[i + 1][j] >= lcs[i][j + 1]) i++;
    const same = i < n && a[i] === b[j];
    if (same) i++;
    const changed = !same && b[j].trim() !== '';
    const last = out[out.length - 1];
    if (last && last.changed === changed) last.text += b[j];
    else out.push({ text: b[j], changed });
  }
  return out;
}

/** The rows of the paired top-5 bars: every token in either top list, with p before and after. */
export function topRows(before: ProbeSide, after: ProbeSide, k = 5): Array<{ token: string; side: 'before' | 'after'; prob: number }> {
  const tokens: string[] = [];
  for (const c of [...after.top.slice(0, k), ...before.top.slice(0, k)]) if (!tokens.includes(c.token)) tokens.push(c.token);
  const p = (side: ProbeSide, t: string) => side.top.find((c) => c.token === t)?.prob ?? 0;
  return tokens.flatMap((token) => [
    { token, side: 'before' as const, prob: p(before, token) },
    { token, side: 'after' as const, prob: p(after, token) },
  ]);
}

/** Vega-Lite: the top-5 tokens before and after, as paired horizontal bars. */
export function topSpec(pd: PromptDiff, theme: Theme): Record<string, unknown> {
  const rows = topRows(pd.before, pd.after).map((r) => ({ ...r, label: JSON.stringify(r.token) }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    background: 'transparent',
    width: 260,
    height: { step: 22 },
    data: { values: rows },
    mark: { type: 'bar', tooltip: true },
    encoding: {
      y: { field: 'label', type: 'nominal', sort: null, title: null },
      yOffset: { field: 'side', sort: ['before', 'after'] },
      x: { field: 'prob', type: 'quantitative', title: 'p(next token)', scale: { domain: [0, 1] } },
      color: {
        field: 'side',
        type: 'nominal',
        sort: ['before', 'after'],
        scale: { domain: ['before', 'after'], range: [theme.descriptionForeground, theme.highContrast ? theme.foreground : '#3794ff'] },
        legend: { orient: 'top', title: null },
      },
      tooltip: [
        { field: 'label', title: 'token' },
        { field: 'side', title: 'model' },
        { field: 'prob', title: 'p', format: '.4f' },
      ],
    },
    config: {
      font: theme.fontFamily,
      axis: { labelColor: theme.foreground, titleColor: theme.foreground, domainColor: theme.border, tickColor: theme.border, gridColor: theme.border, labelFontSize: theme.fontSize - 1 },
      legend: { labelColor: theme.foreground, titleColor: theme.foreground },
      view: { stroke: null },
    },
  };
}
