/**
 * Compute section (issue #12's "Must show"), every figure a ratio taken in this one run:
 *  - weight products of the GPT-2-small shape (11 rows × 16 tokens) on the native and WASM
 *    backends, GFLOP/s against numpy's float32 matmul (bench/numpy_matmul.py, both its thread
 *    modes, the faster per shape);
 *  - the engine's whole forward (batch 11) against a plain float32 numpy GPT-2 doing the same
 *    forwards on the same checkpoint (bench/numpy_gpt2.py);
 *  - the fast 3-kind trace of a 12-token prompt against numpy running the naive trace's
 *    forwards (3·T·L + 1 forwards of the 11-row batch: what the naive method does);
 *  - `factlens trace "The capital of [France] is"` end to end (a child process, the real CLI)
 *    on native and on WASM, and on the build of the commit before this work (cli-trace.ts),
 *    built from git into a temporary folder;
 *  - the ceiling: the machine's float32 FMA peak (bench/fma-peak.c) beside the GFLOP/s that the
 *    forward and trace targets need, given the products the engine does and numpy's time.
 * numpy runs before and after the engine and the faster of the two is used (a slow numpy period
 * on a shared machine must not flatter the ratios). Machine load (load average, CPU pressure) is
 * recorded before and after.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs-core';
import { disposeModel, loadModel } from '../engine/model/load.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import { probeBackends, selectBackend, type BackendName } from '../engine/runtime/backend.js';
import { nativeThreads } from '../engine/runtime/native/ort.js';
import { trace } from '../engine/trace/index.js';
import { blockMacsPerToken } from '../engine/trace/fast.js';
import { tidyData } from '../engine/util/scope.js';
import type { DecoderConfig } from '../engine/model/decoder.js';
import { ensureGpt2Small, GPT2_SMALL } from './gpt2-small.js';
import type { BenchContext, Section, SectionResult } from './types.js';
import { cpuPressure, MB, measure, sig } from './util.js';
import { cliTraceComparison } from './cli-trace.js';
import { fmaPeak, type FmaPeak } from './fma-peak.js';

const ROOT = path.resolve(__dirname, '..');
const ROWS = 11;
const TOKENS = 16;

interface NpTiming {
  key: string;
  bestS: number;
  medianS: number;
}

function python(script: string, req: unknown, timeoutMs: number): unknown {
  const r = spawnSync('python3', [path.join(__dirname, script)], { input: JSON.stringify(req), encoding: 'utf8', maxBuffer: 64 * MB, timeout: timeoutMs });
  if (r.error) throw new Error(`python3 ${script} did not run: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`python3 ${script} exited with ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
  return JSON.parse(r.stdout);
}

function loadLine(): string {
  const p = cpuPressure();
  return `load average ${os.loadavg().map((x) => x.toFixed(2)).join(' / ')}${p ? `, CPU pressure (PSI some avg10) ${p.avg10}%` : ''}`;
}

async function run(ctx: BenchContext): Promise<SectionResult> {
  const out: SectionResult = { rows: [], tables: [], skipped: [], notes: [] };
  const loadBefore = loadLine();
  const wanted = (ctx.options.backends ?? ['native', 'wasm']) as BackendName[];
  const backends = probeBackends().filter((b) => wanted.includes(b.name) && b.available && b.name !== 'cpu').map((b) => b.name);
  for (const b of wanted) if (!backends.includes(b)) out.skipped.push({ what: `backend ${b}`, why: probeBackends().find((x) => x.name === b)?.reason ?? 'not available' });
  const { dir } = ensureGpt2Small(ctx.log);
  const { d, nLayer: L } = GPT2_SMALL;
  const m = TOKENS * ROWS;
  const weightShapes = [
    { what: 'qkv', k: d, n: 3 * d },
    { what: 'attention out', k: d, n: d },
    { what: 'MLP in', k: d, n: 4 * d },
    { what: 'MLP out', k: 4 * d, n: d },
  ];

  // numpy (its own process) before and after the engine, the faster of the two taken per case:
  // on a shared machine one slow numpy period would otherwise flatter every ratio below.
  const promptIds = Array.from({ length: 12 }, (_, i) => (i * 7919 + 13) % 50000);
  const numpyRound = (when: string) => {
    ctx.log(`numpy (${when}): weight products and GPT-2 forwards ...`);
    const np = python(
      'numpy_matmul.py',
      { shapes: weightShapes.map((s) => ({ key: s.what, batch: 1, m, k: s.k, n: s.n, transB: false })), minTimeS: 0.3, minReps: 5, maxReps: 200, modeBudgetS: 30 },
      180_000,
    ) as { numpy: string; modes: Record<string, NpTiming[]> };
    const npg = python(
      'numpy_gpt2.py',
      { dir, cases: [{ key: `${ROWS}x${TOKENS}`, b: ROWS, t: TOKENS }, { key: `${ROWS}x12`, b: ROWS, t: 12 }], minTimeS: 2, minReps: 3, maxReps: 20, check: { ids: promptIds } },
      600_000,
    ) as { numpy: string; blas: string; cases: NpTiming[]; check: { logits_first8: number[]; argmax: number } };
    return { np, npg };
  };
  const rounds = [numpyRound('before the engine')];
  const { np, npg } = rounds[0];

  // The ceiling, measured right after numpy before and after the engine (nothing else of ours
  // runs then); the higher reading per thread count is the machine's (a neighbour only lowers it).
  const peakThreads = Math.max(2, nativeThreads());
  const peaks = [fmaPeak(peakThreads)];

  interface EngineRun {
    backend: string;
    products: Array<{ what: string; shape: number[]; flops: number; bestMs: number; medianMs: number }>;
    forward: { bestMs: number; medianMs: number; flops: number };
    trace: { tokens: number; ms: number; firstMs: number; forwards: number; blockFlops: number };
  }
  const runs: EngineRun[] = [];
  for (const backend of backends) {
    await selectBackend(backend);
    const model = await loadModel({ dir, backend });
    try {
      // Weight products: the engine's tf.matMul on [176, k]·[k, n] weights of the loaded model's shape.
      const products: EngineRun['products'] = [];
      for (const s of weightShapes) {
        const x = tf.randomNormal([m, s.k]) as tf.Tensor2D;
        const w = tf.randomNormal([s.k, s.n], 0, 0.02) as tf.Tensor2D;
        const t = measure(() => tf.tidy(() => void tf.matMul(x, w)), { warmup: 2, minReps: 10, maxReps: 200, budgetMs: 1500 });
        tf.dispose([x, w]);
        products.push({ what: s.what, shape: [m, s.k, s.n], flops: 2 * m * s.k * s.n, bestMs: t.bestMs, medianMs: t.medianMs });
      }

      // Whole forward, batch 11 × 16 tokens (logits of each row's last position, read back).
      const rowsIds = Array.from({ length: ROWS }, (_, r) => Array.from({ length: TOKENS }, (_, i) => (r * 7919 + i * 104729 + 13) % 50000));
      const batch = padBatch(rowsIds);
      const f = measure(() => void tidyData(() => forward(model, batch).logits!), { warmup: 1, minReps: 3, maxReps: 10, budgetMs: 4000 });
      // Parity with the numpy model on the same checkpoint (a fast wrong forward is no result).
      const mine = tidyData(() => forward(model, padBatch([promptIds])).logits!);
      const diff = Math.max(...npg.check.logits_first8.map((v, i) => Math.abs(v - mine[i])));
      out.notes.push(`${backend}: logits of the 12-token prompt vs the numpy GPT-2, first 8: max |Δ| ${diff.toExponential(1)}.`);

      // Fast 3-kind trace of a 12-token prompt vs numpy running the naive trace's forwards.
      // The trace section's 12-token prompt (random weights: the answer is whatever the model predicts).
      const ids = model.tokenizer.encode('The Eiffel Tower in the city of Paris is located in the country of');
      const prompt = model.tokenizer.decode(ids.slice(0, 12));
      // The first trace in the process builds what later ones reuse (onnxruntime sessions for each
      // block-graph variant, arenas); numpy's figure is a warm best, so the ratio is taken on the
      // second, identical trace and the first is reported beside it.
      const t0 = performance.now();
      await trace(model, prompt, { subject: 'Eiffel Tower', samples: 10, seed: 1 });
      const firstMs = performance.now() - t0;
      const t1 = performance.now();
      const res = await trace(model, prompt, { subject: 'Eiffel Tower', samples: 10, seed: 1 });
      const traceMs = performance.now() - t1;
      runs.push({
        backend,
        products,
        forward: { bestMs: f.bestMs, medianMs: f.medianMs, flops: forwardFlops(model.config, ROWS, TOKENS) },
        // Block products only (attention scores and the unembedding left out): a lower bound.
        trace: { tokens: res.ids.length, ms: traceMs, firstMs, forwards: res.kinds.length * res.ids.length * L + 1, blockFlops: res.work.token_layers * 10 * 2 * blockMacsPerToken(model.config) },
      });
    } finally {
      disposeModel(model);
    }
  }
  rounds.push(numpyRound('after the engine'));
  peaks.push(fmaPeak(peakThreads));
  const okPeaks = peaks.filter((p): p is Extract<FmaPeak, { ok: true }> => p.ok);
  const peak: FmaPeak = okPeaks.length
    ? { ok: true, threads: okPeaks[0].threads, gflops: okPeaks[0].threads.map((_, i) => Math.max(...okPeaks.map((p) => p.gflops[i]))) }
    : peaks[0];
  const npBest = (key: string) => Math.min(...rounds.flatMap((r) => Object.values(r.np.modes).map((ts) => ts.find((t) => t.key === key)?.bestS ?? Infinity)));
  const npCase = (key: string) => {
    const cs = rounds.map((r) => r.npg.cases.find((c) => c.key === key)!);
    return { bestS: Math.min(...cs.map((c) => c.bestS)), medianS: Math.min(...cs.map((c) => c.medianS)), each: cs.map((c) => c.bestS) };
  };
  const npForward = npCase(`${ROWS}x${TOKENS}`);
  const npForward12 = npCase(`${ROWS}x12`);
  out.notes.push(
    `numpy before / after the engine, best ms: forward ${ROWS}×${TOKENS} ${npForward.each.map((x) => sig(x * 1000)).join(' / ')}, ` +
      `${ROWS}×12 ${npForward12.each.map((x) => sig(x * 1000)).join(' / ')}; the faster is used for every ratio.`,
  );
  const ceiling: Array<{ backend: string; what: string; flops: number; allowedMs: number; engineMs: number }> = [];

  const productRows: string[][] = [];
  const forwardRows: string[][] = [];
  const traceRows: string[][] = [];
  for (const r of runs) {
    const { backend } = r;
    let flopsAll = 0;
    let engAll = 0;
    let npAll = 0;
    for (const p of r.products) {
      const npS = npBest(p.what);
      flopsAll += p.flops;
      engAll += p.bestMs / 1000;
      npAll += npS;
      productRows.push([backend, `${p.what} ${p.shape[0]}×${p.shape[1]}·${p.shape[1]}×${p.shape[2]}`, sig(p.flops / (p.bestMs / 1000) / 1e9), sig(p.flops / npS / 1e9), `${sig(npS / (p.bestMs / 1000))}×`]);
      out.rows.push({ kind: 'weight-product', backend, shape: p.shape, engineBestMs: p.bestMs, engineMedianMs: p.medianMs, numpyBestS: npS });
    }
    productRows.push([backend, '**all four**', sig(flopsAll / engAll / 1e9), sig(flopsAll / npAll / 1e9), `**${sig(npAll / engAll)}×**`]);

    const f = r.forward;
    forwardRows.push([backend, `${ROWS}×${TOKENS}`, sig(f.bestMs), sig(npForward.bestS * 1000), `**${sig((npForward.bestS * 1000) / f.bestMs)}×**`, `${sig((npForward.medianS * 1000) / f.medianMs)}×`]);
    ceiling.push({ backend, what: `forward ${ROWS}×${TOKENS} at 1.5× numpy`, flops: f.flops, allowedMs: (npForward.bestS * 1000) / 1.5, engineMs: f.bestMs });
    out.rows.push({ kind: 'forward-vs-numpy', backend, b: ROWS, t: TOKENS, engineBestMs: f.bestMs, engineMedianMs: f.medianMs, numpyBestS: npForward.bestS, numpyMedianS: npForward.medianS });

    const t = r.trace;
    const npTraceMs = t.forwards * npForward12.bestS * 1000;
    traceRows.push([backend, String(t.tokens), sig(t.ms, 4), sig(t.firstMs, 4), `${t.forwards} × ${sig(npForward12.bestS * 1000)} = ${sig(npTraceMs, 4)}`, `**${sig(npTraceMs / t.ms)}×** (first: ${sig(npTraceMs / t.firstMs)}×)`]);
    ceiling.push({ backend, what: 'fast 12-token trace at 8× numpy (block products only)', flops: t.blockFlops, allowedMs: npTraceMs / 8, engineMs: t.ms });
    out.rows.push({ kind: 'trace-vs-numpy-naive', backend, tokens: t.tokens, traceMs: t.ms, firstTraceMs: t.firstMs, numpyForwards: t.forwards, numpyForwardBestS: npForward12.bestS });
  }
  out.tables.push({
    title: `Weight products, GPT-2-small shape, ${ROWS}×${TOKENS} rows (GFLOP/s, best)`,
    columns: ['backend', 'product', 'engine GFLOP/s', 'numpy GFLOP/s', 'engine ÷ numpy'],
    rows: productRows,
    notes: [`numpy ${np.numpy}: per shape the fastest of its 1-thread and default-thread modes, before and after the engine. Native products use ${nativeThreads()} threads above 4 MFLOP, spin-waiting off.`],
  });
  out.tables.push({
    title: 'Whole forward, GPT-2-small shape (124M, random weights), vs a plain float32 numpy GPT-2',
    columns: ['backend', 'rows × tokens', 'engine ms (best)', 'numpy ms (best)', 'speed vs numpy (best)', '(median)'],
    rows: forwardRows,
    notes: [`numpy ${npg.numpy} (${npg.blas}, default threads): bench/numpy_gpt2.py on the same checkpoint.`],
  });
  out.tables.push({
    title: 'Fast 3-kind trace (10 samples) of a 12-token prompt vs numpy running the naive trace’s forwards',
    columns: ['backend', 'tokens', 'engine ms (second trace)', 'engine ms (first trace in the process)', 'numpy ms (forwards × best forward of 11×12)', 'speed vs numpy'],
    rows: traceRows,
  });

  const npGemmBest = Math.max(...weightShapes.map((sh) => (2 * m * sh.k * sh.n) / npBest(sh.what) / 1e9));
  if (!peak.ok) out.skipped.push({ what: 'FMA ceiling', why: peak.why });
  else {
    const top = peak.gflops[peak.threads.indexOf(peakThreads)];
    out.rows.push({ kind: 'fma-peak', threads: peak.threads, gflops: peak.gflops, numpyGemmBestGflops: npGemmBest });
    out.tables.push({
      title: `The ceiling: what each target needs against the machine's float32 FMA peak (${peakThreads} threads)`,
      columns: ['backend', 'target', 'GFLOP the engine does', 'time the target allows (ms)', 'GFLOP/s needed', 'share of the FMA peak', 'engine GFLOP/s now'],
      rows: ceiling.map((x) => [
        x.backend,
        x.what,
        sig(x.flops / 1e9, 4),
        sig(x.allowedMs, 4),
        sig(x.flops / (x.allowedMs / 1000) / 1e9),
        `**${Math.round((100 * x.flops) / (x.allowedMs / 1000) / 1e9 / top)}%**`,
        sig(x.flops / (x.engineMs / 1000) / 1e9),
      ]),
      notes: [
        `FMA peak (bench/fma-peak.c: independent AVX2 FMA chains, best of 5, before and after the engine): ${peak.threads.map((t, i) => `${t} thread${t > 1 ? 's' : ''} ${peak.gflops[i]} GFLOP/s`).join(', ')}. ` +
          `numpy's best matmul on the weight shapes above: ${sig(npGemmBest)} GFLOP/s (${Math.round((100 * npGemmBest) / top)}% of the peak). ` +
          'GFLOP counts the matrix products the engine does (the forward\'s top block runs for the last position only; the trace counts its block products alone), ' +
          'so the share of the peak is what every product, with nothing else taking time, would have to reach.',
      ],
    });
    out.rows.push(...ceiling.map((x) => ({ kind: 'ceiling', ...x, peakGflops: top })));
  }

  // The CLI end to end, as a user runs it (the same measurement as the 'cli' section).
  const cli = cliTraceComparison(ctx, backends, 2);
  out.rows.push(...cli.rows);
  out.skipped.push(...cli.skipped);
  out.tables.push(cli.table);
  out.notes.push(`Machine load: before ${loadBefore}; after ${loadLine()}. Runs were niced by the caller when so noted in the README.`);
  return out;
}

/**
 * FLOPs of the products in the engine's forward of b rows × t tokens with the last position's
 * logits: every block in full but the top one, which makes keys/values for every position and
 * the rest for the last (runtime/forward.ts); attention scores and values; the unembedding.
 */
function forwardFlops(c: DecoderConfig, b: number, t: number): number {
  const per = blockMacsPerToken(c);
  const kvPer = c.dModel * 2 * c.nKvHead * c.headDim;
  const attn = (queries: number) => 2 * 2 * b * c.nHead * queries * t * c.headDim;
  const lower = (c.nLayer - 1) * (2 * b * t * per + attn(t));
  const top = 2 * b * t * kvPer + 2 * b * (per - kvPer) + attn(1);
  return lower + top + 2 * b * c.dModel * c.vocabSize;
}

export const computeSection: Section = {
  name: 'compute',
  title: 'Compute: native products vs WASM vs numpy',
  expected: '~10 min',
  run,
};
