/**
 * Causal-trace section: a full three-kind trace, fast method vs the naive full-forward
 * reference, measured in the same process on the same prompts and noise. Reports time (wall
 * and process CPU) and work (token-layer block evaluations per corrupted row) as ratios.
 * Prompts: tinyworld's golden trace prompts (window 10, their stored noise, as golden.json) and
 * a 12-token prompt on the random 124M GPT-2-shaped model (default window and seeded noise).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { disposeModel, loadModel, type LoadedModel } from '../engine/model/load.js';
import { trace, type TraceOptions, type TraceResult } from '../engine/trace/index.js';
import { ensureGpt2Small } from './gpt2-small.js';
import type { BenchContext, Section, SectionResult, Table } from './types.js';
import { sig } from './util.js';
import { TINYWORLD } from '../test/helpers/golden.js';

interface Case {
  prompt: string;
  opts: TraceOptions;
}

function goldenCases(): Case[] {
  const file = path.join(TINYWORLD, 'golden-eval.json');
  if (fs.existsSync(file)) {
    const g = JSON.parse(fs.readFileSync(file, 'utf8')) as {
      noise_scale: number;
      trace: Array<{ prompt: string; subject: string; noise: number[][][]; window: number }>;
    };
    return g.trace.map((r) => ({ prompt: r.prompt, opts: { subject: r.subject, noise: g.noise_scale, noiseValues: r.noise, window: r.window } }));
  }
  // Without ../shared: the same prompts with seeded noise.
  return [
    ['The capital of France is', 'France'],
    ['Charlotte Bos was born in', 'Charlotte Bos'],
    ['Charlotte Smith is a citizen of', 'Charlotte Smith'],
    ['The mother tongue of Sarah Watanabe is', 'Sarah Watanabe'],
    ['The mother tongue of Donghyun Xu is', 'Donghyun Xu'],
    ['Piotr Pavlov works as a', 'Piotr Pavlov'],
    ['Chen Romero works as a', 'Chen Romero'],
  ].map(([prompt, subject]) => ({ prompt, opts: { subject, window: 10 } }));
}

interface Run {
  wallMs: number;
  cpuMs: number;
  result: TraceResult;
}

async function timed(m: LoadedModel, c: Case, method: 'fast' | 'naive'): Promise<Run> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await trace(m, c.prompt, { ...c.opts, method });
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { wallMs, cpuMs: (cpu.user + cpu.system) / 1000, result };
}

function maxDiff(a: TraceResult, b: TraceResult): number {
  let worst = 0;
  for (const k of a.kinds) a.scores[k]!.forEach((row, t) => row.forEach((v, l) => (worst = Math.max(worst, Math.abs(v - b.scores[k]![t][l])))));
  return worst;
}

async function compare(ctx: BenchContext, m: LoadedModel, label: string, cases: Case[], fastReps: number) {
  const rows: Array<Record<string, unknown>> = [];
  const cells: string[][] = [];
  let fastWall = 0;
  let naiveWall = 0;
  let fastCpu = 0;
  let naiveCpu = 0;
  let fastWork = 0;
  let naiveWork = 0;
  for (const c of cases) {
    await trace(m, c.prompt, { ...c.opts, kinds: ['hidden'] }); // warm-up (weight packing, caches)
    const fastRuns: Run[] = [];
    for (let i = 0; i < fastReps; i++) fastRuns.push(await timed(m, c, 'fast'));
    const fast = fastRuns.reduce((a, b) => (b.wallMs < a.wallMs ? b : a));
    ctx.log(`${label}: "${c.prompt}" fast ${fast.wallMs.toFixed(0)} ms; running naive`);
    const naive = await timed(m, c, 'naive');
    const diff = maxDiff(fast.result, naive.result);
    fastWall += fast.wallMs;
    naiveWall += naive.wallMs;
    fastCpu += fast.cpuMs;
    naiveCpu += naive.cpuMs;
    fastWork += fast.result.work.token_layers;
    naiveWork += naive.result.work.token_layers;
    rows.push({
      kind: 'trace',
      model: label,
      prompt: c.prompt,
      tokens: fast.result.ids.length,
      window: fast.result.window,
      fastWallMs: fast.wallMs,
      naiveWallMs: naive.wallMs,
      fastCpuMs: fast.cpuMs,
      naiveCpuMs: naive.cpuMs,
      fastTokenLayers: fast.result.work.token_layers,
      naiveTokenLayers: naive.result.work.token_layers,
      maxScoreDiff: diff,
    });
    cells.push([
      JSON.stringify(c.prompt),
      String(fast.result.ids.length),
      sig(fast.wallMs, 4),
      sig(naive.wallMs, 4),
      `${sig(naive.wallMs / fast.wallMs)}×`,
      `${sig(naive.cpuMs / fast.cpuMs)}×`,
      `${sig(naive.result.work.token_layers / fast.result.work.token_layers)}×`,
      diff.toExponential(1),
    ]);
  }
  cells.push([
    '**all**',
    '',
    sig(fastWall, 4),
    sig(naiveWall, 4),
    `**${sig(naiveWall / fastWall)}×**`,
    `**${sig(naiveCpu / fastCpu)}×**`,
    `**${sig(naiveWork / fastWork)}×**`,
    '',
  ]);
  rows.push({ kind: 'trace-total', model: label, fastWallMs: fastWall, naiveWallMs: naiveWall, fastCpuMs: fastCpu, naiveCpuMs: naiveCpu, fastTokenLayers: fastWork, naiveTokenLayers: naiveWork });
  const table: Table = {
    title: `Causal trace, three kinds, ${label} (backend ${m.backend})`,
    columns: ['prompt', 'tokens', 'fast ms', 'naive ms', 'time ratio (wall)', 'time ratio (CPU)', 'work ratio', 'max |Δscore|'],
    rows: cells,
  };
  return { rows, table };
}

export const traceSection: Section = {
  name: 'trace',
  title: 'Causal tracing: fast vs naive',
  expected: '~10 min',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const backend = ctx.options.backends?.[0];
    const out: SectionResult = {
      rows: [],
      tables: [],
      skipped: [],
      notes: [
        'Work = token-layer block evaluations per corrupted row (the clean and corrupted runs included); ' +
          'the naive method runs one full forward pass of the (samples+1)-row batch per restoration (rome-spec §1.12). ' +
          'Time ratios are naive ÷ fast, measured back to back in one process; fast is the best of its repeats, naive a single run.',
      ],
    };
    const tiny = await loadModel({ backend });
    try {
      const r = await compare(ctx, tiny, 'tinyworld', goldenCases(), 2);
      out.rows.push(...r.rows);
      out.tables.push(r.table);
    } finally {
      disposeModel(tiny);
    }
    const { dir } = ensureGpt2Small(ctx.log);
    const big = await loadModel({ dir, backend });
    try {
      // 12 tokens; random weights, so the answer is whatever the model predicts.
      const prompt = 'The Eiffel Tower in the city of Paris is located in the country of';
      const ids = big.tokenizer.encode(prompt);
      const cases: Case[] = [{ prompt: big.tokenizer.decode(ids.slice(0, 12)), opts: { subject: 'Eiffel Tower', samples: 10, seed: 1 } }];
      const r = await compare(ctx, big, 'GPT-2-small shape (124M, random weights)', cases, 1);
      out.rows.push(...r.rows);
      out.tables.push(r.table);
    } finally {
      disposeModel(big);
    }
    return out;
  },
};
