/**
 * Specificity section: how long a 200-prompt tinyworld `.prompts` file takes to update after an
 * edit (issue: under 2 s), batched (engine/specificity/check.ts: one padded forward per chunk
 * for "after", "before" from the per-model-hash cache) against the one-prompt-at-a-time
 * baseline (a `predict` per prompt, on the edited model, plus one on the unedited view when
 * "before" is not cached), measured in the same run on the same model. The edit is a real ROME
 * edit (layer 3, 1,000-document statistics in a temporary cache; its time is not part of the
 * update). The file is written as `.prompts` text from the model's facts.jsonl (every 28th
 * fact, so all relations appear) and read back through formats/check-prompts.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { disposeModel, loadModel, defaultModelDir } from '../engine/model/load.js';
import { probeBackends, selectBackend } from '../engine/runtime/backend.js';
import { predict } from '../engine/predict.js';
import { uneditedView } from '../engine/predict-batch.js';
import { applyEdit, computeEdit, revertAllEdits } from '../engine/edit/index.js';
import { BeforeCache, checkSpecificity } from '../engine/specificity/check.js';
import { checkFilePrompts } from '../formats/check-prompts.js';
import { formatPromptLine } from '../formats/prompt-file.js';
import type { BenchContext, Section, SectionResult } from './types.js';
import { bm, measure, sig } from './util.js';
import { fillTemplate } from '../formats/template.js';

const N_PROMPTS = 200;

/** A 200-line prompt file from the model's own facts (one in every 28, across all relations). */
export function factsPromptFile(dir: string, n = N_PROMPTS): string {
  const facts = fs
    .readFileSync(path.join(dir, 'facts.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { subject: string; prompt: string; object: string });
  const stride = Math.max(1, Math.floor(facts.length / n));
  const lines: string[] = ['# every ' + stride + 'th fact of tinyworld/facts.jsonl'];
  for (let i = 0; i < facts.length && lines.length <= n; i += stride) {
    const f = facts[i];
    lines.push(formatPromptLine(fillTemplate(f.prompt, f.subject), f.subject, f.object));
  }
  return lines.join('\n') + '\n';
}

async function run(ctx: BenchContext): Promise<SectionResult> {
  const out: SectionResult = { rows: [], tables: [], skipped: [], notes: [] };
  // What users get by default: native where onnxruntime loads, else wasm (--backends wasm for the other).
  const wanted = ctx.options.backends ?? ['native', 'wasm'];
  const backend = probeBackends().find((b) => wanted.includes(b.name) && b.available && b.name !== 'cpu')?.name;
  if (!backend) {
    out.skipped.push({ what: 'specificity section', why: `no usable backend among ${wanted.join(', ')}` });
    return out;
  }
  await selectBackend(backend);
  const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'factlens-bench-spec-'));
  const prevCache = process.env.FACTLENS_CACHE_DIR;
  process.env.FACTLENS_CACHE_DIR = cache;
  const model = await loadModel({ backend });
  try {
    const file = checkFilePrompts(factsPromptFile(defaultModelDir()), 'prompts');
    const prompts = file.prompts.map((p) => ({ prompt: p.prompt, subject: p.subject }));
    ctx.log(`specificity: ${prompts.length} prompts; computing a ROME edit`);
    const rec = await computeEdit(
      model,
      { prompt: 'The capital of {} is', subject: 'France', target: 'Tokyo', layers: [3] },
      { onProgress: (f, m) => ctx.log(`edit ${(f * 100).toFixed(0)}% ${m}`) },
      { statsSamples: 1000 },
    );
    applyEdit(model, rec);
    const texts = prompts.map((p) => p.prompt);
    const base = uneditedView(model);
    const opts = { warmup: 1, minReps: 3, maxReps: 3, budgetMs: 20_000 };
    let last = checkSpecificity(model, prompts, { cache: new BeforeCache() });
    // Warm: "before" cached (the state after any edit but the first check of a file).
    const warmCache = new BeforeCache();
    checkSpecificity(model, prompts, { cache: warmCache });
    const warm = measure(() => void (last = checkSpecificity(model, prompts, { cache: warmCache })), opts);
    // The same without starting at the edited layer: the "after" pass from the embedding.
    const warmFull = measure(() => void checkSpecificity(model, prompts, { cache: warmCache, fullAfter: true }), opts);
    const cold = measure(() => void checkSpecificity(model, prompts, { cache: new BeforeCache() }), opts);
    const afterOne = measure(() => texts.forEach((p) => predict(model, p, 5)), opts);
    const bothOne = measure(() => texts.forEach((p) => (predict(base, p, 5), predict(model, p, 5))), opts);
    const rows = [
      { what: '"before" cached (every update after the first)', batched: warm, single: afterOne },
      { what: '"before" cached, "after" from the embedding (no kept states)', batched: warmFull, single: afterOne },
      { what: '"before" not cached (first check of a file)', batched: cold, single: bothOne },
    ];
    for (const r of rows) {
      out.rows.push({
        kind: 'specificity-update',
        model: model.name,
        backend: model.backend,
        prompts: prompts.length,
        case: r.what,
        batchedBestMs: r.batched.bestMs,
        batchedMedianMs: r.batched.medianMs,
        batchedCpuMedianMs: r.batched.cpuMedianMs,
        singleBestMs: r.single.bestMs,
        singleMedianMs: r.single.medianMs,
        singleCpuMedianMs: r.single.cpuMedianMs,
        speedup: r.single.medianMs / r.batched.medianMs,
        cpuSpeedup: r.single.cpuMedianMs / r.batched.cpuMedianMs,
      });
    }
    out.tables.push({
      title: `Specificity update of a ${prompts.length}-prompt tinyworld file after a ROME edit (${model.backend}; ms, best / median)`,
      columns: ['case', 'batched: wall', 'batched: CPU (median)', 'one at a time: wall', 'one at a time: CPU (median)', 'speed-up (wall / CPU, median)'],
      rows: rows.map((r) => [
        r.what,
        bm(r.batched.bestMs, r.batched.medianMs),
        sig(r.batched.cpuMedianMs),
        bm(r.single.bestMs, r.single.medianMs),
        sig(r.single.cpuMedianMs),
        `${sig(r.single.medianMs / r.batched.medianMs)}× / ${sig(r.single.cpuMedianMs / r.batched.cpuMedianMs)}×`,
      ]),
      notes: [
        `The edit (France → Tokyo, layer 3) left ${last.unchanged}/${last.others} other prompts unchanged; ` +
          `${last.checks.filter((c) => c.verdict === 'moved').length}/${last.total - last.others} prompts of the edited fact moved to the new target.`,
      ],
    });
    out.notes.push(
      'Batched: checkSpecificity (the engine\'s specificity/check) — prompts sorted by length, packed into padded forward passes of at most 4,096 tokens (128 rows), logits at each row\'s last token; "before" answers come from the per-model-hash cache when present, and the "after" pass starts at the lowest edited layer from the unedited residual streams kept there (the blocks below are the unedited model\'s). ' +
        'Baseline: one predict() per prompt on the edited model (and one on the unedited view when "before" is not cached), in the same process. ' +
        'CPU is the process\'s CPU time per update (the WASM backend is single-threaded): on a shared machine it is what an update costs on an idle core, while wall time also counts the time spent waiting for a core.',
    );
  } finally {
    revertAllEdits(model);
    disposeModel(model);
    if (prevCache === undefined) delete process.env.FACTLENS_CACHE_DIR;
    else process.env.FACTLENS_CACHE_DIR = prevCache;
    fs.rmSync(cache, { recursive: true, force: true });
  }
  return out;
}

export const specificitySection: Section = {
  name: 'specificity',
  title: 'Specificity checks: a 200-prompt file after an edit',
  expected: '~1–2 min (one ROME edit with 1,000-document statistics, then the timed updates)',
  run,
};
