/**
 * The fast causal trace. Two facts make most of the naive trace redundant:
 *  - a restoration at token t leaves every earlier position as in the corrupted run (causal
 *    attention), so only positions t.. are recomputed, attending to the corrupted run's cached
 *    keys/values for positions < t;
 *  - it leaves every layer below its first change as in the corrupted run, so it starts from
 *    the cached corrupted residual stream at that layer.
 * Restorations of one token that agree on all changes up to layer j have identical states at
 * layer j, so they form a prefix tree: each distinct prefix is computed once (e.g. the shared
 * lower layers of overlapping MLP windows), and every distinct node of a layer goes through
 * the block in one batched call.
 */
import * as tf from '@tensorflow/tfjs-core';
import { attentionBias, block, embed, finalNorm, selectRows, type KV } from '../runtime/decoder-forward.js';
import { padBatch } from '../runtime/batch.js';
import { chainHooks, site, type Hook } from '../runtime/sites.js';
import { interventionHook, type Intervention } from '../runtime/interventions.js';
import type { Job } from '../util/jobs.js';
import { disposeAll, scoped } from '../util/scope.js';
import { answerProbsAsync, noiseTensor, type Mod, type Prepared, type Restoration } from './prepare.js';
import { vocabQueryAsync } from '../runtime/vocab.js';
import { assembleColumns, assembleRows, type RowPiece } from '../runtime/assemble-rows.js';
import { sampleMean } from './stats.js';
import type { RawTrace } from './naive.js';
import type { DecoderConfig } from '../model/decoder.js';

/** Rows × tokens per batched block call; bounds memory on large models. */
const MAX_BATCH_TOKENS = 4096;

interface Cache {
  /** Corrupted residual stream entering block j (j = L: the final one, before ln_f): [n, T, d]. */
  hIn: tf.Tensor3D[];
  kv: KV[];
  /** Corrupted module outputs [n, T, d] by site name (only those a severed path freezes). */
  frozen: Map<string, tf.Tensor3D>;
  /** Clean activations [T, d] by site name. */
  clean: Map<string, tf.Tensor2D>;
}

function modSite(m: Mod): string {
  if (m.site === 'resid_pre') return site.residPre(m.layer);
  return m.site === 'mlp_out' ? site.mlpOut(m.layer) : site.attnOut(m.layer);
}

function cleanSite(m: Mod): string {
  // The clean input of block j is the clean output of block j − 1.
  if (m.site === 'resid_pre') return site.residPost(m.layer - 1);
  return modSite(m);
}

/** Clean run (one row) and corrupted run (n rows, block by block), keeping what restorations reuse. */
async function buildCache(
  p: Prepared,
  restorationList: Restoration[],
): Promise<{ cache: Cache; answerId: number; greedyId: number; cleanProb: number; corrupted: { mean: number; stderr: number } }> {
  const m = p.model;
  const L = m.config.nLayer;
  const T = p.ids.length;
  const n = p.samples;
  const built = scoped(() => {
    const cleanSites = new Set<string>();
    const frozenSites = new Set<string>();
    for (const r of restorationList) {
      for (const x of r.mods) {
        if (x.source === 'clean') cleanSites.add(cleanSite(x));
        else frozenSites.add(modSite(x));
      }
    }
    // Clean run.
    const reads = new Map<string, tf.Tensor3D>();
    const cleanBatch = padBatch([p.ids]);
    const ids1 = tf.tensor2d(cleanBatch.ids, [1, T], 'int32');
    const pos1 = tf.tensor2d(cleanBatch.positions, [1, T], 'int32');
    const bias = attentionBias([new Array(T).fill(1)], 0, T);
    const readClean = interventionHook([...cleanSites].map((s) => ({ site: s, op: 'read' as const })), reads);
    let h = embed(m, ids1, pos1, readClean);
    for (let l = 0; l < L; l++) h = block(m, l, h, bias, undefined, readClean).h;
    const cleanRow = selectRows(tf.reshape(finalNorm(m, h), [T, -1]) as tf.Tensor2D, [T - 1]);
    const clean = new Map<string, tf.Tensor2D>();
    for (const [s, x] of reads) clean.set(s, tf.reshape(x, [T, -1]) as tf.Tensor2D);

    // Corrupted run, block by block.
    const batch = padBatch(Array.from({ length: n }, () => p.ids));
    const ids = tf.tensor2d(batch.ids, [n, T], 'int32');
    const pos = tf.tensor2d(batch.positions, [n, T], 'int32');
    const positions = Array.from({ length: p.range[1] - p.range[0] }, (_, i) => p.range[0] + i);
    const noiseHook = interventionHook([{ site: site.embed, op: 'add', positions, value: noiseTensor(p) }]);
    const frozen = new Map<string, tf.Tensor3D>();
    const readFrozen = interventionHook([...frozenSites].map((s) => ({ site: s, op: 'read' as const })), frozen);
    let hc = embed(m, ids, pos, noiseHook);
    const hIn: tf.Tensor3D[] = [];
    const kv: KV[] = [];
    for (let l = 0; l < L; l++) {
      hIn.push(hc);
      const r = block(m, l, hc, bias, undefined, readFrozen);
      kv.push(r.kv);
      hc = r.h;
    }
    hIn.push(hc);
    const last = tf.reshape(tf.slice(finalNorm(m, hc), [0, T - 1, 0], [n, 1, -1]), [n, -1]) as tf.Tensor2D;
    return { cache: { hIn, kv, frozen, clean }, cleanRow, last };
  });
  try {
    // The answer: the expected token, or the clean run's most likely one.
    const q = await vocabQueryAsync(m, built.cleanRow, [p.expectedId ?? 0]);
    const answerId = p.expectedId ?? q.argmax[0];
    const cleanProb = Math.exp(p.expectedId === null ? q.maxLogprob[0] : q.logprob[0]);
    const corrupted = sampleMean(await answerProbsAsync(m, built.last, answerId), 0, n);
    return { cache: built.cache, answerId, greedyId: q.argmax[0], cleanProb, corrupted };
  } finally {
    tf.dispose([built.cleanRow, built.last]);
  }
}

interface Node {
  /** Restorations sharing this prefix. */
  members: number[];
  /** Prefix key of the parent at the previous layer, or null: start from the corrupted cache. */
  parent: string | null;
  /** This node's own changes at this layer. */
  mods: Mod[];
}

/** Replacement interventions for the nodes of one batched call at one site kind. */
function nodeInterventions(nodes: Node[], layerMods: (n: Node) => Mod[], t: number, n: number, cache: Cache): Intervention[] {
  const out: Intervention[] = [];
  const bySite = new Map<string, { cleanRows: number[]; frozenRows: number[]; cleanKey: string }>();
  nodes.forEach((node, k) => {
    for (const mod of layerMods(node)) {
      const s = modSite(mod);
      const entry = bySite.get(s) ?? { cleanRows: [], frozenRows: [], cleanKey: cleanSite(mod) };
      bySite.set(s, entry);
      const rows = Array.from({ length: n }, (_, i) => k * n + i);
      (mod.source === 'clean' ? entry.cleanRows : entry.frozenRows).push(...rows);
    }
  });
  for (const [s, { cleanRows, frozenRows, cleanKey }] of bySite) {
    if (cleanRows.length) {
      const value = tf.reshape(tf.slice(cache.clean.get(cleanKey)!, [t, 0], [1, -1]), [-1]);
      out.push({ site: s, op: 'replace', rows: cleanRows, positions: [0], value });
    }
    if (frozenRows.length) {
      const corrupted = tf.reshape(tf.slice(cache.frozen.get(s)!, [0, t, 0], [n, 1, -1]), [n, -1]);
      out.push({ site: s, op: 'replace', rows: frozenRows, positions: [0], value: tf.tile(corrupted, [frozenRows.length / n, 1]) });
    }
  }
  return out;
}

/**
 * Multiply-adds of one block's weight products per token (q, k, v, output, MLP): the unit a
 * token-layer of `tokenLayers` stands for.
 */
export function blockMacsPerToken(c: DecoderConfig): number {
  const q = c.nHead * c.headDim;
  const kv = 2 * c.nKvHead * c.headDim;
  return c.dModel * (q + kv) + q * c.dModel + c.dModel * c.dMlp * (c.gatedMlp ? 3 : 2);
}

export async function traceFast(p: Prepared, restorationList: Restoration[], job: Job): Promise<RawTrace> {
  const m = p.model;
  const L = m.config.nLayer;
  const T = p.ids.length;
  const n = p.samples;
  const { cache, answerId, greedyId, cleanProb, corrupted } = await buildCache(p, restorationList);
  const corruptedProb = corrupted.mean;
  const stderr = new Array<number>(restorationList.length).fill(NaN);
  const scores = new Array<number>(restorationList.length).fill(NaN);
  let tokenLayers = 2 * T * L; // the clean and the corrupted run
  // The key/value projections' share of a block's matmul work per token.
  const c = m.config;
  const kvShare = (c.dModel * 2 * c.nKvHead * c.headDim) / blockMacsPerToken(c);
  const totalWork = restorationList.length;
  let done = 0;

  // Restorations that provably change nothing get the corrupted baseline without a pass:
  //  - before the subject, clean and corrupted runs are identical (attention is causal);
  //  - the final residual at a token other than the last is never read.
  //  - nor is the top block's output at a token other than the last, so restoring only module
  //    outputs of the top block there changes nothing either;
  //  - the noise is added to the subject's embeddings only, so restoring the clean input of
  //    block 0 at a token after the subject puts back the value the corrupted run already has.
  const noop = (r: Restoration) =>
    r.token < p.range[0] ||
    (r.token >= p.range[1] && r.mods.every((x) => x.site === 'resid_pre' && x.layer === 0 && x.source === 'clean')) ||
    (r.token !== T - 1 &&
      r.mods.every((x) => (x.site === 'resid_pre' && x.layer === L) || (x.site !== 'resid_pre' && x.layer === L - 1)));
  restorationList.forEach((r, i) => {
    if (noop(r)) {
      scores[i] = corruptedProb;
      stderr[i] = corrupted.stderr;
      done++;
    }
  });

  try {
    for (let t = 0; t < T; t++) {
      const mine = restorationList.map((r, i) => ({ r, i })).filter(({ r, i }) => r.token === t && Number.isNaN(scores[i]));
      if (mine.length === 0) continue;
      const first = new Map(mine.map(({ r, i }) => [i, Math.min(...r.mods.map((x) => x.layer))]));
      const key = (r: Restoration, j: number) =>
        r.mods
          .filter((x) => x.layer <= j)
          .map((x) => `${x.layer}:${x.site}:${x.source}`)
          .sort()
          .join('|');
      const Tq = T - t;
      const bias = attentionBias([new Array(T).fill(1)], t, Tq);
      // The single query at position t of a shortcut start.
      const bias1 = attentionBias([new Array(T).fill(1)], t, 1);
      // The previous layer's output for every node, one tensor, node k in rows [k·n, (k+1)·n).
      let prev: { out: tf.Tensor3D; block: Map<string, number> } | null = null;
      for (let j = 0; j <= L; j++) {
        const active = mine.filter(({ i }) => first.get(i)! <= j);
        if (active.length === 0) continue;
        const nodes = new Map<string, Node>();
        for (const { r, i } of active) {
          const k = key(r, j);
          const node = nodes.get(k);
          if (node) node.members.push(i);
          else nodes.set(k, { members: [i], parent: first.get(i)! < j ? key(r, j - 1) : null, mods: r.mods.filter((x) => x.layer === j) });
        }
        // A chain whose first changes are module outputs (MLP / attention windows) alters
        // block j only at position t: later positions' inputs, keys and values are still the
        // corrupted run's, so their block-j outputs are cache.hIn[j + 1]. Such a node runs
        // block j for position t alone (past keys and values as below) and takes the rest
        // from the cache: ~1/(T − t) of the block. (The top block runs in its own way below.)
        const startsShort = (nd: Node) =>
          nd.parent === null && j < L - 1 && Tq > 1 && nd.mods.length > 0 && nd.mods.every((q) => q.site !== 'resid_pre');
        const entries = [...nodes.entries()];
        const shortStarts = entries.filter(([, nd]) => startsShort(nd));
        const ordered = [...shortStarts, ...entries.filter(([, nd]) => !startsShort(nd))];
        const nShort = shortStarts.length;
        const list = ordered.map(([, nd]) => nd);
        const outs: tf.Tensor3D[] = [];
        const groups: Array<{ from: number; to: number; short: boolean }> = [
          { from: 0, to: nShort, short: true },
          { from: nShort, to: list.length, short: false },
        ];
        for (const g of groups) {
          const perCall = Math.max(1, Math.floor(MAX_BATCH_TOKENS / (n * (g.short ? 1 : Tq))));
          for (let c = g.from; c < g.to; c += perCall) {
            const chunkNodes = list.slice(c, Math.min(g.to, c + perCall));
            const prevOut = prev?.out;
            const prevBlock = prev?.block;
            // Every group of n rows shares the corrupted keys/values of positions < t.
            const pastKv = (): KV | undefined =>
              t === 0
                ? undefined
                : {
                    k: tf.slice(cache.kv[j].k, [0, 0, 0, 0], [n, -1, t, -1]) as tf.Tensor4D,
                    v: tf.slice(cache.kv[j].v, [0, 0, 0, 0], [n, -1, t, -1]) as tf.Tensor4D,
                  };
            const result = g.short
              ? scoped(() => {
                  const pieces: RowPiece[] = chunkNodes.flatMap(() => Array.from({ length: n }, (_, r) => ({ src: 0, row: r, pos: t })));
                  const x = assembleRows([cache.hIn[j]], pieces, 1);
                  const iv = nodeInterventions(chunkNodes, (nd) => nd.mods, t, n, cache);
                  const head = block(m, j, x, bias1, pastKv(), chainHooks(interventionHook(iv))).h;
                  // Position t from the block, the later ones from the cache, written once each.
                  const out = assembleColumns([
                    { sources: [head], pieces: pieces.map((_, i) => ({ src: 0, row: i, pos: 0 })), length: 1 },
                    { sources: [cache.hIn[j + 1]], pieces: pieces.map((p) => ({ src: 0, row: p.row, pos: t + 1 })), length: Tq - 1 },
                  ]);
                  return { out, lastRows: undefined };
                })
              : scoped(() => {
                  // Inputs in one assembly (runtime/assemble-rows.ts): a node continues its parent's
                  // rows of the previous output, or starts from the corrupted cache at this layer.
                  // (After the top block only the last position is left: see lastOnly below.)
                  const sources = prevOut ? [prevOut, cache.hIn[j]] : [cache.hIn[j]];
                  const cacheSrc = sources.length - 1;
                  const cachePos = j === L ? T - 1 : t;
                  const pieces: RowPiece[] = [];
                  for (const node of chunkNodes) {
                    const from = node.parent === null ? -1 : prevBlock!.get(node.parent)! * n;
                    for (let r = 0; r < n; r++) pieces.push(from < 0 ? { src: cacheSrc, row: r, pos: cachePos } : { src: 0, row: from + r, pos: 0 });
                  }
                  let x = assembleRows(sources, pieces, j === L ? 1 : Tq);
                  // Restored block inputs (hidden-state restorations) at position t = local 0.
                  const residIv = nodeInterventions(chunkNodes, (nd) => nd.mods.filter((q) => q.site === 'resid_pre'), t, n, cache);
                  if (residIv.length) x = interventionHook(residIv)(site.residPre(j), x);
                  if (j === L) {
                    const lastRows = tf.reshape(tf.slice(finalNorm(m, x), [0, x.shape[1] - 1, 0], [-1, 1, -1]), [x.shape[0], -1]) as tf.Tensor2D;
                    return { out: undefined, lastRows };
                  }
                  // The top block runs for the last position only: its output elsewhere is never read.
                  // Module-output changes of the top block at token t < T − 1 therefore act on nothing
                  // and are dropped (at t = T − 1 the last position is position t).
                  const lastOnly = j === L - 1;
                  const blockIv =
                    lastOnly && Tq > 1 ? [] : nodeInterventions(chunkNodes, (nd) => nd.mods.filter((q) => q.site !== 'resid_pre'), t, n, cache);
                  const hook: Hook | undefined = blockIv.length ? interventionHook(blockIv) : undefined;
                  return { out: block(m, j, x, bias, pastKv(), chainHooks(hook), lastOnly).h, lastRows: undefined };
                });
            if (j === L) {
              const probs = await answerProbsAsync(m, result.lastRows!, answerId);
              result.lastRows!.dispose();
              chunkNodes.forEach((node, k) => {
                const cell = sampleMean(probs, k * n, n);
                for (const member of node.members) {
                  scores[member] = cell.mean;
                  stderr[member] = cell.stderr;
                }
                done += node.members.length;
              });
            } else {
              // The top block: one full evaluation for the last position plus the key/value
              // projections of the others; a shortcut start: one position.
              tokenLayers += chunkNodes.length * (g.short ? 1 : j === L - 1 ? 1 + (Tq - 1) * kvShare : Tq);
              outs.push(result.out!);
            }
            await job.checkpoint(done / totalWork, `trace: token ${t + 1}/${T}, layer ${Math.min(j + 1, L)}/${L}`);
          }
        }
        if (prev) prev.out.dispose();
        prev = null;
        if (j < L) {
          const out = outs.length === 1 ? outs[0] : (tf.tidy(() => tf.concat(outs, 0)) as tf.Tensor3D);
          if (outs.length > 1) disposeAll(outs);
          prev = { out, block: new Map(ordered.map(([k], idx) => [k, idx])) };
        }
      }
      if (prev) prev.out.dispose();
      tf.dispose([bias, bias1]);
    }
  } finally {
    disposeAll(cache);
  }
  return { answerId, greedyId, cleanProb, corruptedProb, corruptedStderr: corrupted.stderr, scores, stderr, tokenLayers };
}
