/**
 * Edit section: seconds per ROME edit, cold (second-moment statistics and context templates
 * computed: the first edit at a layer) and cached (statistics read from the disk cache,
 * templates from memory), on the embedded tinyworld model and on the GPT-2-small-shaped
 * random model of the forward section; plus the cost of one v* optimisation step for each
 * way of computing it (suffix / blocks / full forward, fast vs stock gradient), measured in the
 * same process, as ratios.
 *
 * tinyworld runs with the engine's defaults, as a user's first edit would: no layer given, so
 * the cold edit includes the layer choice by causal tracing (then cached), and statistics over
 * 50·f tokens of its corpus (51k of ~352k). The random 124M model has no corpus of its own; it uses tinyworld's corpus.txt restricted to
 * 1,000 documents (~14k tokens) to bound the time: a real model would use 100,000 Wikipedia
 * articles, i.e. hours (rome-spec §6.1), which is why the cache matters.
 *
 * Caches go to a fresh temporary FACTLENS_CACHE_DIR, so "cold" really is cold. Edit timings are
 * wall-clock (one cold run by nature; best / median over the cached runs) and the v*-step
 * timings are CPU time per step (best / median over steps), less sensitive to a busy machine.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { disposeModel, loadModel, type LoadedModel } from '../engine/model/load.js';
import { probeBackends, selectBackend } from '../engine/runtime/backend.js';
import { computeEdit, romeEditParts } from '../engine/edit/index.js';
import { ensureGpt2Small } from './gpt2-small.js';
import type { BenchContext, Section, SectionResult, Table } from './types.js';
import { bm, median, sig } from './util.js';
import { TINYWORLD } from '../test/helpers/golden.js';

const CF_FILE = path.join(TINYWORLD, 'counterfact-dev.json');

interface Req {
  prompt: string;
  subject: string;
  target: string;
}

function requests(n: number): Req[] {
  const fallback: Req[] = [
    { prompt: '{} is located in the country of', subject: 'Paris', target: 'Japan' },
    { prompt: 'The capital of {} is', subject: 'France', target: 'Berlin' },
    { prompt: '{} was born in', subject: 'David Stan', target: 'Nairobi' },
    { prompt: 'The official language of {} is', subject: 'Germany', target: 'French' },
  ];
  try {
    const cf = JSON.parse(fs.readFileSync(CF_FILE, 'utf8')) as Array<{ requested_rewrite: { prompt: string; subject: string; target_new: { str: string } } }>;
    return cf.slice(0, n).map((c) => ({ prompt: c.requested_rewrite.prompt, subject: c.requested_rewrite.subject, target: c.requested_rewrite.target_new.str }));
  } catch {
    return fallback.slice(0, n);
  }
}

interface ModelPlan {
  id: string;
  label: string;
  dir?: string;
  /** Edit layer; absent: the engine's choice (causal tracing, timed as part of the cold edit). */
  layer?: number;
  corpus?: string;
  samples?: number;
  statsNote: string;
}

async function run(ctx: BenchContext): Promise<SectionResult> {
  const out: SectionResult = { rows: [], tables: [], skipped: [], notes: [] };
  const wanted = ctx.options.backends ?? ['native', 'wasm'];
  const backend = probeBackends().find((b) => wanted.includes(b.name) && b.available && b.name !== 'cpu')?.name;
  if (!backend) {
    out.skipped.push({ what: 'edit section', why: `no usable backend among ${wanted.join(', ')} (cpu is ~45× slower than wasm: skipped)` });
    return out;
  }
  await selectBackend(backend);
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-bench-edit-'));
  const prevCache = process.env.FACTLENS_CACHE_DIR;
  process.env.FACTLENS_CACHE_DIR = cache;
  const tiny = undefined;
  const plans: ModelPlan[] = [
    // The engine's defaults, as a user's first edit: the layer chosen by causal tracing (cold:
    // traced here, then cached) and statistics over 50·f tokens of the model's corpus.
    { id: 'tinyworld', label: 'tinyworld (19M, 8 layers, d 256)', dir: tiny, statsNote: 'its corpus.txt: the default 50·f tokens' },
  ];
  try {
    const g = ensureGpt2Small(ctx.log);
    plans.push({
      id: 'gpt2-small-random',
      label: 'GPT-2-small-shaped random (124M, 12 layers, d 768)',
      dir: g.dir,
      layer: 4,
      corpus: path.join(path.resolve(__dirname, '..', 'engine', 'assets', 'tinyworld'), 'corpus.txt'),
      samples: 1000,
      statsNote: "tinyworld's corpus.txt, 1,000 documents (bounded; see notes)",
    });
  } catch (e) {
    out.skipped.push({ what: 'gpt2-small-random', why: `could not build the checkpoint: ${(e as Error).message}` });
  }

  const editRows: string[][] = [];
  const stepRows: string[][] = [];
  const trajRows: string[][] = [];
  try {
    for (const plan of plans) {
      let model: LoadedModel | null = null;
      try {
        model = await loadModel({ dir: plan.dir, backend });
        ctx.log(`${plan.id}: loaded on ${model.backend}`);
        const reqs = requests(4);
        const timings: Array<Record<string, number>> = [];
        let layer = plan.layer ?? -1;
        for (let i = 0; i < reqs.length; i++) {
          const t0 = performance.now();
          const rec = await computeEdit(
            model,
            { ...reqs[i], ...(plan.layer !== undefined ? { layers: [plan.layer] } : {}), corpus: plan.corpus },
            { onProgress: (f, msg) => ctx.log(`${plan.id} edit ${i + 1}: ${(f * 100).toFixed(0)}% ${msg}`) },
            { statsSamples: plan.samples },
          );
          const wall = (performance.now() - t0) / 1000;
          const n = rec.info;
          layer = n.layer as number;
          const row = {
            wall,
            layerChoice: (n.seconds_layer as number) ?? 0,
            stats: n.seconds_stats as number,
            templates: n.seconds_templates as number,
            keys: n.seconds_keys as number,
            v: n.seconds_v as number,
            steps: n.v_steps as number,
            tokens: n.stats_tokens as number,
            statsCached: n.stats_cached as number,
          };
          timings.push(row);
          out.rows.push({ kind: 'rome-edit', model: plan.id, backend: model.backend, layer, phase: i === 0 ? 'cold' : 'cached', ...row });
          if (i === 0) {
            trajRows.push([plan.id, `${reqs[0].subject} → ${reqs[0].target}`, String(n.loss_trajectory), sig(n.k_dot_u as number, 4), sig(n.delta_w_norm as number, 4)]);
          }
          ctx.log(`${plan.id} edit ${i + 1}: ${wall.toFixed(1)} s (stats ${row.stats.toFixed(1)} s, v* ${row.v.toFixed(1)} s)`);
        }
        const cold = timings[0];
        const warm = timings.slice(1);
        const w = (k: string) => warm.map((t) => t[k]);
        editRows.push([
          plan.label,
          plan.layer !== undefined ? String(layer) : `${layer} (traced)`,
          `${sig(cold.wall)} (${plan.layer === undefined ? `layer choice ${sig(cold.layerChoice)}, ` : ''}stats ${sig(cold.stats)}, templates ${sig(cold.templates)}, keys ${sig(cold.keys)}, v* ${sig(cold.v)})`,
          bm(Math.min(...w('wall')), median(w('wall'))),
          bm(Math.min(...w('stats')), median(w('stats'))),
          bm(Math.min(...w('keys')), median(w('keys'))),
          bm(Math.min(...w('v')), median(w('v'))),
          `${cold.tokens.toLocaleString('en')} tokens (${plan.statsNote})`,
        ]);

        // One v* optimisation, 6 steps, per way of computing a step: CPU ms per gradient step.
        // On the 124M model the full-forward modes are skipped: recording the whole forward on
        // the tape (WASM copies every saved input) exceeds the 4 GB WASM heap and aborts the
        // backend for the rest of the process.
        const big = plan.id !== 'tinyworld';
        const modes: Array<{ label: string; vForward: 'suffix' | 'blocks' | 'full'; fastGrad: boolean }> = [
          { label: 'suffix + fast gradient (default)', vForward: 'suffix', fastGrad: true },
          { label: 'suffix + stock gradient', vForward: 'suffix', fastGrad: false },
          { label: 'blocks ≥ l + fast gradient', vForward: 'blocks', fastGrad: true },
          ...(big
            ? []
            : [
                { label: 'full forward + fast gradient', vForward: 'full' as const, fastGrad: true },
                { label: 'full forward + stock gradient (plain tfjs)', vForward: 'full' as const, fastGrad: false },
              ]),
        ];
        if (big) out.skipped.push({ what: `${plan.id}: full-forward v* modes`, why: 'the tape of a full forward exceeds the 4 GB WASM heap (measured: backend abort)' });
        const perMode: Array<{ label: string; best: number; med: number }> = [];
        for (const mode of modes) {
          const cpu: number[] = [];
          let c = process.cpuUsage();
          await romeEditParts(
            model,
            { ...reqs[0], layers: [layer], corpus: plan.corpus },
            {},
            {
              statsSamples: plan.samples,
              vForward: mode.vForward,
              fastGrad: mode.fastGrad,
              hparams: { vNumGradSteps: 6 },
              onStep: (s) => {
                const d = process.cpuUsage(c);
                // Step 0 includes setup (the δ-free forward, weight transposes); the last step is forward-only.
                if (s.step >= 1 && s.step <= 4) cpu.push((d.user + d.system) / 1000);
                c = process.cpuUsage();
              },
            },
          );
          perMode.push({ label: mode.label, best: Math.min(...cpu), med: median(cpu) });
          out.rows.push({ kind: 'v-step', model: plan.id, backend: model.backend, mode: mode.vForward, fastGrad: mode.fastGrad, cpuBestMs: Math.min(...cpu), cpuMedianMs: median(cpu), samplesMs: cpu });
          ctx.log(`${plan.id} v* step, ${mode.label}: ${median(cpu).toFixed(0)} ms CPU`);
        }
        const base = perMode[0].med;
        for (const p of perMode) stepRows.push([plan.id, p.label, bm(p.best, p.med), `${sig(p.med / base, 2)}×`]);
      } catch (e) {
        out.skipped.push({ what: plan.id, why: (e as Error).message.split('\n')[0] });
      } finally {
        if (model) disposeModel(model);
      }
    }
  } finally {
    if (prevCache === undefined) delete process.env.FACTLENS_CACHE_DIR;
    else process.env.FACTLENS_CACHE_DIR = prevCache;
    fs.rmSync(cache, { recursive: true, force: true });
  }

  out.notes.push(
    'Cold = the first edit in a fresh cache folder: for tinyworld (engine defaults, no layer given) it chooses the layer by causal tracing over 40 facts, computes the second-moment statistics (forward passes up to the layer over 50·f corpus tokens, Σ kkᵀ) and samples the 21 context templates; the 124M model is given its layer. Cached = later edits in the same process (the engine process of the extension): layer choice, statistics and templates from the caches. "keys" includes the float64 Cholesky factorisation of C (computed once per layer and statistics, then read from the cache beside them).',
    'The v* optimisation runs 20 steps unless the loss drops below 0.05 (rome-spec §2.7); on these models the weight-decay term alone is ≥ 0.2 once δ reaches the clamp radius, so all 20 steps run (the last one forward-only). For models without reference hyperparameters a v* that misses its target (exp(−NLL) < 0.5) is run again with 40 steps (the random 124M model always misses).',
    'The 124M model is random (the forward section\'s checkpoint): its timings are representative of GPT-2 small, its edits are not meaningful. Its statistics use 1,000 documents to bound the time; the full tinyworld corpus would take ~25× longer cold.',
    'v* step modes: "suffix" runs blocks l+1… on the positions from each row\'s subject on, with cached keys/values of earlier positions (the default); "blocks ≥ l" runs blocks l… on every position; "full forward" runs the whole model. "fast gradient" = frozen-weight products with cached Wᵀ + BatchMatMul gradient without transposed matmuls (engine/edit/fastgrad.ts); "stock" = tfjs\'s gradients. All give the same loss to float32 rounding (test/edit.test.ts). Step 0 (setup) and the last (forward-only) step are excluded.',
  );
  const tables: Table[] = [
    {
      title: `Seconds per ROME edit (${backend})`,
      columns: ['Model', 'Layer', 'Cold edit s (parts)', 'Cached edit s best / median', 'stats s', 'keys s', 'v* s', 'Statistics over'],
      rows: editRows,
    },
    {
      title: 'CPU ms per v* gradient step, by method (same process); time relative to the default',
      columns: ['Model', 'Step computed as', 'CPU ms best / median', 'Relative time (median)'],
      rows: stepRows,
    },
    {
      title: 'v* loss trajectory of the cold edit (total loss per step), k·u and ‖ΔW‖ (the model\'s default formula)',
      columns: ['Model', 'Edit', 'Loss per step', 'k·u', '‖ΔW‖'],
      rows: trajRows,
    },
  ];
  out.tables.push(...tables);
  return out;
}

export const editSection: Section = {
  name: 'edit',
  title: 'ROME edit time',
  expected: '~5–10 min on an idle 2-core machine (the 124M model\'s cold edit and v* step modes dominate), 2–3× that when busy',
  run,
};
