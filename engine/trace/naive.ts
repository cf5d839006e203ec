/**
 * The naive causal trace (rome-spec §1.12): one full forward pass of the (samples + 1)-row
 * batch per restoration, row 0 clean and the others corrupted, restored values copied from
 * row 0 of the same batch. Slow, and kept as the reference the fast method is tested against.
 */
import * as tf from '@tensorflow/tfjs-core';
import { forward } from '../runtime/forward.js';
import { padBatch } from '../runtime/batch.js';
import { chainHooks, hookOnSites, site, type Hook } from '../runtime/sites.js';
import { interventionHook } from '../runtime/interventions.js';
import type { Job } from '../util/jobs.js';
import { disposeAll } from '../util/scope.js';
import { answerProbsAsync, noiseTensor, type Mod, type Prepared, type Restoration } from './prepare.js';
import { vocabQueryAsync } from '../runtime/vocab.js';
import { sampleMean } from './stats.js';

export interface RawTrace {
  answerId: number;
  /** The clean run's greedy prediction (answerId unless an expected answer was given). */
  greedyId: number;
  cleanProb: number;
  corruptedProb: number;
  /** Standard error of corruptedProb across the samples. */
  corruptedStderr: number;
  /** One score per restoration, in the order given, and its standard error across the samples. */
  scores: number[];
  stderr: number[];
  /** Token-layer block evaluations per corrupted row. */
  tokenLayers: number;
}

function siteOf(m: Mod): string {
  if (m.site === 'resid_pre') return site.residPost(m.layer - 1);
  return m.site === 'mlp_out' ? site.mlpOut(m.layer) : site.attnOut(m.layer);
}

export async function traceNaive(p: Prepared, restorationList: Restoration[], job: Job): Promise<RawTrace> {
  const m = p.model;
  const n = p.samples;
  const T = p.ids.length;
  const L = m.config.nLayer;
  const d = m.config.dModel;
  const rows = Array.from({ length: n }, (_, i) => i + 1);
  const batch = padBatch(Array.from({ length: n + 1 }, () => p.ids));
  const noise = noiseTensor(p);
  const positions = Array.from({ length: p.range[1] - p.range[0] }, (_, i) => p.range[0] + i);
  const noiseHook = interventionHook([{ site: site.embed, op: 'add', rows, positions, value: noise }]);
  const needsCorrupted = restorationList.some((r) => r.mods.some((x) => x.source === 'corrupted'));

  // The run with nothing restored: clean row 0 gives the answer, rows 1.. the corrupted baseline,
  // and (for severed paths) the corrupted module outputs to freeze.
  const frozenSites = new Set<string>();
  for (const r of restorationList) for (const x of r.mods) if (x.source === 'corrupted') frozenSites.add(siteOf(x));
  const reads = new Map<string, tf.Tensor3D>();
  // Final-normalised last rows (clean first); probabilities come from the fused vocabulary
  // query, read asynchronously (WebGPU reads only asynchronously).
  const lastRows = tf.tidy(() => {
    const readHook = needsCorrupted
      ? interventionHook([...frozenSites].map((s) => ({ site: s, op: 'read' as const })), reads)
      : undefined;
    const res = forward(m, batch, { hook: chainHooks(noiseHook, readHook), logitsAt: 'none' });
    for (const t of reads.values()) tf.keep(t);
    return tf.reshape(tf.slice(res.hidden!, [0, T - 1, 0], [n + 1, 1, d]), [n + 1, d]) as tf.Tensor2D;
  });
  const cleanRow = tf.slice(lastRows, [0, 0], [1, d]) as tf.Tensor2D;
  const q = await vocabQueryAsync(m, cleanRow, [p.expectedId ?? 0]);
  const answerId = p.expectedId ?? q.argmax[0];
  const all = await answerProbsAsync(m, lastRows, answerId);
  tf.dispose([cleanRow, lastRows]);
  const cleanProb = all[0];
  const corrupted = sampleMean(all, 1, n);

  const scores: number[] = [];
  const stderr: number[] = [];
  for (let i = 0; i < restorationList.length; i++) {
    const r = restorationList[i];
    const t = r.token;
    const restore: Hook = hookOnSites((s, x) => {
      for (const mod of r.mods) {
        if (siteOf(mod) !== s) continue;
        const value =
          mod.source === 'clean'
            ? tf.reshape(tf.slice(x, [0, t, 0], [1, 1, d]), [d])
            : tf.reshape(tf.slice(reads.get(s)!, [1, t, 0], [n, 1, d]), [n, d]);
        x = interventionHook([{ site: s, op: 'replace', rows, positions: [t], value }])(s, x);
      }
      return x;
    }, r.mods.map(siteOf));
    const last = tf.tidy(() => {
      const res = forward(m, batch, { hook: chainHooks(noiseHook, restore), logitsAt: 'none' });
      return tf.reshape(tf.slice(res.hidden!, [1, T - 1, 0], [n, 1, d]), [n, d]) as tf.Tensor2D;
    });
    const score = sampleMean(await answerProbsAsync(m, last, answerId));
    last.dispose();
    scores.push(score.mean);
    stderr.push(score.stderr);
    await job.checkpoint((i + 1) / restorationList.length, `naive trace: ${i + 1}/${restorationList.length} restorations`);
  }
  noise.dispose();
  disposeAll(reads);
  return {
    answerId,
    greedyId: q.argmax[0],
    cleanProb,
    corruptedProb: corrupted.mean,
    corruptedStderr: corrupted.stderr,
    scores,
    stderr,
    tokenLayers: (restorationList.length + 1) * T * L,
  };
}
