/**
 * What the specificity checks look like in the editor (pure; no `vscode` import, so the unit
 * tests run it directly): the after-line text, the hover, the Problems entry of a check, and
 * the status-bar summary. Check results come from the engine's `specificity/check`.
 */
import type { AppliedEditSummary, SpecificityCheck, SpecificityCheckResult } from '../../engine/protocol.js';

/** A probability as the decorations show it: 99.9%, 64.0%, 0.12%, <0.01%. */
export function percent(p: number): string {
  const x = p * 100;
  if (x >= 10) return `${x.toFixed(1)}%`;
  if (x >= 0.01) return `${x.toPrecision(2)}%`;
  return '<0.01%';
}

/** A token as shown inline: its text without the leading space ("Paris"), quoted when blank. */
export function shownToken(token: string): string {
  const t = token.trim();
  return t ? t : JSON.stringify(token);
}

/** `Paris 99.9% → Tokyo 64.0%` */
export function decorationText(c: SpecificityCheck): string {
  return `${shownToken(c.before.token)} ${percent(c.before.prob)} → ${shownToken(c.after.token)} ${percent(c.after.prob)}`;
}

const quote = (label: string) => `'${label}'`;

function editsNamed(ids: readonly string[], edits: readonly AppliedEditSummary[]): AppliedEditSummary[] {
  return ids.map((id) => edits.find((e) => e.id === id)).filter((e): e is AppliedEditSummary => !!e);
}

export type ProblemKind = 'collateral' | 'not-reached';

export interface SpecificityProblem {
  kind: ProblemKind;
  severity: 'warning' | 'information';
  message: string;
  /** The edits concerned: the quick fixes offer to revert each one or show its diff. */
  edits: AppliedEditSummary[];
}

/**
 * The Problems entry of a check, if any: an unrelated prompt whose top-1 changed is a Warning
 * naming the applied edit(s); a prompt about an edited subject that did not move to the new
 * target is Information.
 */
export function problemOf(c: SpecificityCheck, edits: readonly AppliedEditSummary[]): SpecificityProblem | null {
  const named = editsNamed(c.edits, edits);
  const labels = named.map((e) => quote(e.label)).join(', ') || 'the applied edits';
  if (c.verdict === 'collateral') {
    const who = named.length === 1 ? `edit ${labels}` : named.length > 1 ? `one of the edits ${labels}` : labels;
    return {
      kind: 'collateral',
      severity: 'warning',
      message: `${who} changed this answer: ${JSON.stringify(c.before.token)} → ${JSON.stringify(c.after.token)}`,
      edits: named,
    };
  }
  if (c.verdict === 'not-reached') {
    const targets = [...new Set(named.map((e) => JSON.stringify(` ${e.target.trim()}`)))].join(' or ');
    return {
      kind: 'not-reached',
      severity: 'information',
      message: `the edit ${labels} does not reach this phrasing: it answers ${JSON.stringify(c.after.token)}${targets ? `, not ${targets}` : ''}`,
      edits: named,
    };
  }
  return null;
}

/** Markdown of the hover: top-5 before and after side by side, and the applied edits. */
export function hoverMarkdown(c: SpecificityCheck, edits: readonly AppliedEditSummary[]): string {
  const esc = (s: string) => s.replace(/[\\`*_{}[\]()#+\-.!|<>]/g, (x) => `\\${x}`);
  const tok = (t: string) => `\`${JSON.stringify(t).replace(/`/g, "'")}\``;
  const n = Math.max(c.before.top.length, c.after.top.length, 1);
  const rows: string[] = ['| # | before | | after | |', '|---:|---|---:|---|---:|'];
  for (let i = 0; i < Math.min(5, n); i++) {
    const b = c.before.top[i];
    const a = c.after.top[i];
    rows.push(`| ${i + 1} | ${b ? tok(b.token) : ''} | ${b ? percent(b.prob) : ''} | ${a ? tok(a.token) : ''} | ${a ? percent(a.prob) : ''} |`);
  }
  const verdict = {
    unchanged: 'unchanged by the applied edits',
    collateral: '**changed** by an edit about another subject',
    moved: 'moved to the new target',
    'not-reached': 'about an edited subject, but the edit does not reach it',
  }[c.verdict];
  const applied = edits.length
    ? edits.map((e) => `- ${esc(e.label)} (${e.method.toUpperCase()}${e.targetTrue ? `, was ${esc(e.targetTrue)}` : ''})`).join('\n')
    : '- none';
  return [`**Fact Lens specificity**: ${verdict}`, '', ...rows, '', `Applied edits:`, applied].join('\n');
}

/** `specificity 23/24 unchanged`: prompts that do not ask an edited fact and kept their top-1 token, of all such prompts. */
export function statusText(r: Pick<SpecificityCheckResult, 'unchanged' | 'others'>): string {
  return `specificity ${r.unchanged}/${r.others} unchanged`;
}
