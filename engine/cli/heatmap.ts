/**
 * Causal-trace heatmaps in the terminal: tokens down, layers across, each cell shaded from the
 * corrupted probability (floor) to the kind's maximum, in the paper's families (hidden =
 * purple, MLP = green, attention = red) when colour is allowed, else with shade characters.
 * Subject tokens are starred and the peak cell is marked.
 */
import type { TraceKind, TraceResult } from '../trace/types.js';

const SHADES = [' ', '░', '▒', '▓', '█'];

/** xterm-256 ramps from light to dark per family. */
const RAMPS: Record<TraceKind, number[]> = {
  hidden: [255, 189, 147, 141, 99, 93, 55],
  mlp: [255, 194, 157, 120, 77, 34, 22],
  attn: [255, 224, 217, 210, 203, 160, 88],
};

const TITLES: Record<TraceKind, string> = {
  hidden: 'single restored layer (hidden state)',
  mlp: 'restored MLP window',
  attn: 'restored attention window',
};

export function renderHeatmap(r: TraceResult, kind: TraceKind, color: boolean): string {
  const scores = r.scores[kind];
  if (!scores) return '';
  const floor = r.corrupted_prob;
  let max = -Infinity;
  let peak = { t: 0, l: 0 };
  scores.forEach((row, t) =>
    row.forEach((v, l) => {
      if (v > max) {
        max = v;
        peak = { t, l };
      }
    }),
  );
  // Shading follows the result's colour scale (quality.color_domain): full shade is the clean p,
  // so a weak trace is drawn faint rather than stretched.
  const [lo, hi] = r.quality.color_domain;
  const span = Math.max(hi - lo, 1e-9);
  const labels = r.tokens.map((tok, t) => {
    const star = t >= r.subject_range[0] && t < r.subject_range[1] ? '*' : ' ';
    return `${JSON.stringify(tok)}${star}`;
  });
  const width = Math.max(...labels.map((l) => l.length));
  const L = scores[0].length;
  const lines: string[] = [];
  const win = kind === 'hidden' ? '' : ` (window ${r.window}, centred at each layer)`;
  lines.push(`${TITLES[kind]}${win}: p(${JSON.stringify(r.answer.token)}) from ${fmt(floor)} (corrupted) to ${fmt(max)}`);
  lines.push(`${' '.repeat(width)}  ${Array.from({ length: L }, (_, l) => String(l).padStart(2)).join(' ')}   layer`);
  scores.forEach((row, t) => {
    const cells = row.map((v, l) => {
      const x = Math.max(0, Math.min(1, (v - lo) / span));
      const mark = t === peak.t && l === peak.l ? '◆' : ' ';
      if (color) {
        const ramp = RAMPS[kind];
        const c = ramp[Math.min(ramp.length - 1, Math.round(x * (ramp.length - 1)))];
        const fg = x > 0.55 ? 231 : 16;
        return `\x1b[48;5;${c}m\x1b[38;5;${fg}m${mark === '◆' ? '◆ ' : '  '}\x1b[0m`;
      }
      const s = SHADES[Math.min(SHADES.length - 1, Math.round(x * (SHADES.length - 1)))];
      return mark === '◆' ? '◆◆' : s + s;
    });
    lines.push(`${labels[t].padStart(width)}  ${cells.join(' ')}`);
  });
  lines.push(`peak ${fmt(max)} at token ${JSON.stringify(r.tokens[peak.t])} (${peak.t}), layer ${peak.l} ◆`);
  return lines.join('\n') + '\n';
}

function fmt(p: number): string {
  return p.toFixed(3);
}

/** The trace's quality verdict in one line: what it shows, or why it shows nothing. */
export function qualityLine(r: TraceResult): string {
  const q = r.quality;
  if (q.verdict === 'ok') {
    const p = q.peak;
    const peak = p ? `, peak indirect effect +${(100 * p.effect).toFixed(1)}% ± ${(100 * p.stderr).toFixed(1)}% (${p.kind}, layer ${p.layer})` : '';
    return `quality: ok — total effect ${(100 * q.total_effect).toFixed(1)}%${peak}`;
  }
  const label = q.verdict === 'weak' ? 'WEAK TRACE' : 'MEANINGLESS TRACE';
  return `quality: ${label} — ${q.reasons.join('; ')}`;
}

export function renderTrace(r: TraceResult, color: boolean): string {
  const out: string[] = [];
  out.push(`prompt: ${JSON.stringify(r.prompt)}   subject: ${JSON.stringify(r.subject)} (tokens ${r.subject_range[0]}–${r.subject_range[1] - 1}, starred)`);
  out.push(
    `answer: ${JSON.stringify(r.answer.token)}  clean p=${fmt(r.clean_prob)}  corrupted p=${fmt(r.corrupted_prob)}  ` +
      `noise ν=${r.noise_scale.toPrecision(4)} × ${r.samples} samples`,
  );
  out.push(qualityLine(r));
  out.push(`backend ${r.backend} · ${r.elapsed_ms} ms · ${Math.round(r.work.token_layers)} token-layer evaluations (naive: ${r.work.naive_token_layers}; the top block counts its key/value projections as a fraction)`);
  out.push('');
  for (const k of r.kinds) out.push(renderHeatmap(r, k, color));
  return out.join('\n');
}
