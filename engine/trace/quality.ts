/**
 * Whether a causal trace shows anything (the `quality` of every trace result). A trace means
 * something only if the model predicts the answer, corrupting the subject lowers its
 * probability markedly, and the largest restored effect stands out of the samples' noise.
 * Each failed check is a reason in words, for the CLI line and the panel's banner.
 */
import type { TraceKind, TraceQuality } from './types.js';

/** Total effect (clean − corrupted p) below which a trace is weak. */
export const MIN_TOTAL_EFFECT = 0.1;
/** A peak indirect effect within this many standard errors of its cell is noise. */
export const NOISE_STDERRS = 2;
/** Corrupted p at or above this: the noise does not hide the subject from the model. */
export const MAX_CORRUPTED_PROB = 0.5;

export interface QualityInput {
  answer: string;
  clean_prob: number;
  corrupted_prob: number;
  /** The expected answer's first token when one was given, and whether greedy decoding picks it. */
  expected?: { token: string; predicted: boolean; greedy: string };
  samples: number;
  scores: Partial<Record<TraceKind, number[][]>>;
  stderr: Partial<Record<TraceKind, number[][]>>;
  tokens: string[];
}

const pct = (p: number) => `${(100 * p).toFixed(1)}%`;

export function traceQuality(r: QualityInput): TraceQuality {
  const reasons: string[] = [];
  let verdict: TraceQuality['verdict'] = 'ok';
  const fail = (level: 'weak' | 'meaningless', why: string) => {
    reasons.push(why);
    if (level === 'meaningless' || verdict === 'ok') verdict = level;
  };
  const totalEffect = r.clean_prob - r.corrupted_prob;
  if (r.expected && !r.expected.predicted) {
    fail('meaningless', `the model does not predict the expected answer ${JSON.stringify(r.expected.token)} (it predicts ${JSON.stringify(r.expected.greedy)})`);
  }
  if (r.clean_prob <= r.corrupted_prob) {
    fail(
      'meaningless',
      `clean p(${JSON.stringify(r.answer)}) ${pct(r.clean_prob)} is not above the corrupted ${pct(r.corrupted_prob)}: corrupting the subject does not remove the answer`,
    );
  } else if (totalEffect < MIN_TOTAL_EFFECT) {
    fail('weak', `total effect ${pct(totalEffect)} (clean − corrupted p) is below ${pct(MIN_TOTAL_EFFECT)}`);
  }
  if (r.corrupted_prob >= MAX_CORRUPTED_PROB) {
    fail(
      'weak',
      `the corrupted runs still give p(${JSON.stringify(r.answer)}) ${pct(r.corrupted_prob)}: the noise does not hide the subject (a larger noise scale may)`,
    );
  }
  // The peak indirect effect over every kind, and the standard error of that cell.
  let peak: TraceQuality['peak'] = null;
  for (const [kind, grid] of Object.entries(r.scores) as Array<[TraceKind, number[][]]>) {
    grid.forEach((row, t) =>
      row.forEach((v, l) => {
        const effect = v - r.corrupted_prob;
        if (!peak || effect > peak.effect) peak = { kind, token: t, layer: l, effect, stderr: r.stderr[kind]?.[t]?.[l] ?? 0 };
      }),
    );
  }
  if (peak) {
    const p: NonNullable<TraceQuality['peak']> = peak;
    if (r.samples < 2) {
      fail('weak', 'one corrupted sample: the noise of the samples cannot be judged');
    } else if (p.effect <= NOISE_STDERRS * p.stderr) {
      fail(
        'weak',
        `the largest indirect effect, ${p.effect >= 0 ? '+' : ''}${pct(p.effect)} (${p.kind} at ${JSON.stringify(r.tokens[p.token])}, layer ${p.layer}), ` +
          `is within ${NOISE_STDERRS} standard errors (±${pct(p.stderr)}) of the samples' noise`,
      );
    }
  }
  // The colour scale: from the corrupted p to the largest of the peak score, the clean p and
  // corrupted p + MIN_TOTAL_EFFECT. Full colour means "restored to the clean p" (or beyond), so
  // a trace whose scores move by 0.01 is drawn faint instead of stretched over the whole ramp.
  const low = r.corrupted_prob;
  const peakScore = peak ? low + (peak as NonNullable<TraceQuality['peak']>).effect : low;
  const high = Math.max(peakScore, r.clean_prob, low + MIN_TOTAL_EFFECT);
  return { verdict, reasons, total_effect: totalEffect, peak, color_domain: [low, high] };
}
