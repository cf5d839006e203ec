/**
 * The verdict on an edit (issue #15): did it take — is the new target the model's greedy answer
 * on the edit prompt once the edit is applied (every target token the argmax, teacher forced;
 * for a one-token target: the top next token) — and, when not, the measured cause and what to
 * try, from the record's own diagnostics.
 *
 * The check applies the record on top of the model's current edits, probes the edit prompt in
 * one forward, and reverts it: the weights afterwards are rebuilt from the originals plus the
 * remaining edits (state.ts), exactly as before.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { LoadedModel } from '../model/load.js';
import { forward } from '../runtime/forward.js';
import { padBatch } from '../runtime/batch.js';
import { applyEdit, revertEdit } from './apply.js';
import type { EditRecord, EditRequest } from './types.js';
import { fillTemplate } from '../../formats/template.js';

export interface EditVerdict {
  took: boolean;
  /** Why it did not take and what to try (absent when it took). */
  reason?: string;
  /** The edit prompt's top next token after the edit, and its probability. */
  top: string;
  topProb: number;
  /** P(target) after the edit (all target tokens, teacher forced). */
  targetProb: number;
}

const withSpace = (t: string) => (t.startsWith(' ') ? t : ` ${t}`);

function filledPrompt(r: EditRequest): string {
  return fillTemplate(r.prompt, r.subject.trim());
}

/** Greedy check of each request on the model as it is now (one batched forward). */
export function greedyCheck(model: LoadedModel, requests: EditRequest[]): Array<Omit<EditVerdict, 'reason'>> {
  const tok = model.tokenizer;
  const rows: number[][] = [];
  const pairs: Array<[number, number]> = [];
  const layout: Array<{ first: number; target: number[] }> = [];
  for (const r of requests) {
    const p = tok.encode(filledPrompt(r));
    const t = tok.encode(withSpace(r.target));
    layout.push({ first: pairs.length, target: t });
    const row = rows.length;
    rows.push([...p, ...t.slice(0, -1)]);
    for (let j = 0; j < t.length; j++) pairs.push([row, p.length - 1 + j]);
  }
  const V = model.config.vocabSize;
  const lpT = tf.tidy(() => tf.logSoftmax(forward(model, padBatch(rows, 'right'), { logitsAt: pairs }).logits!));
  const lp = lpT.dataSync() as Float32Array;
  lpT.dispose();
  return layout.map(({ first, target }) => {
    let took = true;
    let sum = 0;
    let top0 = 0;
    for (let j = 0; j < target.length; j++) {
      const o = (first + j) * V;
      let best = 0;
      for (let i = 1; i < V; i++) if (lp[o + i] > lp[o + best]) best = i;
      if (j === 0) top0 = best;
      if (best !== target[j]) took = false;
      sum += lp[o + target[j]];
    }
    return { took, top: tok.tokenToString(top0), topProb: Math.exp(lp[first * V + top0]), targetProb: Math.exp(sum) };
  });
}

const n = (x: unknown, digits = 2): string => (typeof x === 'number' ? x.toPrecision(digits) : String(x));

/** The measured cause of a miss and what to try, from the record's diagnostics. */
export function missReason(rec: EditRecord, v: Omit<EditVerdict, 'reason'>): string {
  const i = rec.info;
  const seen = `the edit prompt now gives ${JSON.stringify(v.top)} (p ${n(v.topProb)}), P(${rec.request.target.trim()}) ${n(v.targetProb)}`;
  if (rec.method === 'rome') {
    // v*'s own success: exp(−NLL), the geometric mean of the target tokens' probabilities over
    // the rewriting prompts (the arithmetic mean, target_prob_final, is lifted by the easy later
    // tokens of a multi-token target).
    const pStar = Math.exp(-Number(i.nll_final));
    const clamp = Number(i.clamp_norm_factor);
    const atClamp = Number(i.delta_norm) >= 0.999 * clamp * Number(i.target_init_norm);
    if (pStar < 0.5) {
      return (
        `${seen}: v* itself reaches only p ${n(pStar)} for the target on the rewriting prompts after ${i.v_steps} steps` +
        (Number(i.v_steps_grown) === 1 ? ' (already retried with more steps)' : '') +
        (atClamp ? `, with δ at the clamp radius (${n(clamp)}‖v₀‖)` : '') +
        `; try a larger clamp (--clamp ${n(2 * (clamp || 4))}) or more v* steps (--v-steps ${2 * Number(i.v_steps || 20)})`
      );
    }
    const ratio = Number(i.k_bare_dot_u) / Number(i.k_bar_dot_u);
    if (i.formula === 'consistent' && ratio < 0.9) {
      return (
        `${seen}: v* works on the templates (p ${n(pStar)}) but the edit prompt's key gets only ${n(ratio)} of the change ` +
        `(k_bare·u / k̄·u); try --formula subject-keys (every template key gets the full change) or --formula reference`
      );
    }
    return (
      `${seen}: v* works on the templates (p ${n(pStar)}) but the change at layer ${rec.layers[0]} does not carry to the ` +
      `edit prompt; try another layer (--layer ${Math.max(0, rec.layers[0] - 1)} or ${rec.layers[0] + 1}) or a larger clamp`
    );
  }
  if (rec.method === 'memit') {
    return (
      `${seen}: the z targets reach p ${n(i.z_target_prob_mean)} on average, and the residual left per layer is ` +
      `${i.residual_norms}; try a smaller λ (mom2UpdateWeight, now ${n(i.lambda, 4)}) or a wider layer range`
    );
  }
  return (
    `${seen}: fine-tuning ended at loss ${n(i.loss_final, 3)} after ${i.adam_steps} steps` +
    (rec.method === 'ft-l' ? ` within the L∞ radius ε ${n(i.epsilon)}; try a larger --epsilon` : '; try more steps or another --layer')
  );
}

/**
 * Applies the record, checks every request it carries, reverts it, and returns the verdict
 * (a batch took when every request took; its reason lists the ones that did not).
 */
export function editVerdict(model: LoadedModel, rec: EditRecord): EditVerdict {
  const reqs = rec.requests?.length ? rec.requests : [rec.request];
  applyEdit(model, rec, { force: true });
  let checks: Array<Omit<EditVerdict, 'reason'>>;
  try {
    checks = greedyCheck(model, reqs);
  } finally {
    revertEdit(model, rec.id);
  }
  const first = checks[0];
  if (checks.every((c) => c.took)) return { ...first, took: true };
  if (reqs.length === 1) return { ...first, took: false, reason: missReason(rec, first) };
  const missed = checks.map((c, k) => ({ c, k })).filter((x) => !x.c.took);
  const list = missed
    .slice(0, 5)
    .map(({ c, k }) => `#${k} ${reqs[k].subject} → ${reqs[k].target.trim()} (top ${JSON.stringify(c.top)}, P ${n(c.targetProb)})`)
    .join('; ');
  return {
    ...first,
    took: false,
    reason: `${missed.length} of ${reqs.length} edits did not take: ${list}${missed.length > 5 ? '; …' : ''}. ${missReason(rec, missed[0].c)}`,
  };
}

/** Sets `took`/`reason` on the record (and the after-edit probe in its info); returns it. */
export function attachVerdict(model: LoadedModel, rec: EditRecord): EditRecord {
  const v = editVerdict(model, rec);
  rec.took = v.took;
  if (v.reason) rec.reason = v.reason;
  else delete rec.reason;
  rec.info.after_top = v.top;
  rec.info.after_top_prob = v.topProb;
  rec.info.after_target_prob = v.targetProb;
  return rec;
}
