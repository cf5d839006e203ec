/**
 * Threads section: the native backend's products and whole forward with onnxruntime's intra-op
 * pool at 1 and at 2 threads (FACTLENS_NATIVE_THREADS, read per call), interleaved in one run,
 * on the GPT-2-small shape; and the process CPU time per wall second with spin-waiting off, to
 * show the pool does not hold a core between products.
 */
import * as tf from '@tensorflow/tfjs-core';
import { disposeModel, loadModel } from '../engine/model/load.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import { probeBackends } from '../engine/runtime/backend.js';
import { tidyData } from '../engine/util/scope.js';
import { ensureGpt2Small, GPT2_SMALL } from './gpt2-small.js';
import type { BenchContext, Section, SectionResult } from './types.js';
import { measure, sig, type Timing } from './util.js';

async function run(ctx: BenchContext): Promise<SectionResult> {
  const out: SectionResult = { rows: [], tables: [], skipped: [], notes: [] };
  const native = probeBackends().find((b) => b.name === 'native')!;
  if (!native.available) {
    out.skipped.push({ what: 'threads section', why: `native backend unavailable: ${native.reason}` });
    return out;
  }
  const { dir } = ensureGpt2Small(ctx.log);
  const m = await loadModel({ dir, backend: 'native' });
  const prev = process.env.FACTLENS_NATIVE_THREADS;
  const d = GPT2_SMALL.d;
  const cases: Array<{ what: string; fn: () => void }> = [
    ...[
      ['MLP in 176×768·768×3072', 176, d, 4 * d],
      ['MLP out 176×3072·3072×768', 176, 4 * d, d],
      ['qkv 16×768·768×2304', 16, d, 3 * d],
    ].map(([what, r, k, n]) => {
      const x = tf.keep(tf.randomNormal([r as number, k as number]));
      const w = tf.keep(tf.randomNormal([k as number, n as number]));
      return { what: what as string, fn: () => tf.tidy(() => void tf.matMul(x, w)) };
    }),
    { what: 'whole forward 11×16', fn: () => void tidyData(() => forward(m, padBatch(Array.from({ length: 11 }, (_, r) => Array.from({ length: 16 }, (_, i) => (r * 31 + i * 7) % 50000)))).logits!) },
    { what: 'whole forward 1×16', fn: () => void tidyData(() => forward(m, padBatch([Array.from({ length: 16 }, (_, i) => (i * 7) % 50000)])).logits!) },
  ];
  const rows: string[][] = [];
  try {
    for (const c of cases) {
      const t: Record<string, Timing[]> = { '1': [], '2': [] };
      // Interleaved: 1 thread, 2 threads, three rounds.
      for (let round = 0; round < 3; round++) {
        for (const threads of ['1', '2']) {
          process.env.FACTLENS_NATIVE_THREADS = threads;
          t[threads].push(measure(c.fn, { warmup: 1, minReps: 3, maxReps: 30, budgetMs: 800 }));
        }
      }
      const best = (k: string) => Math.min(...t[k].map((x) => x.bestMs));
      const cpu = (k: string) => t[k].reduce((a, x) => a + x.cpuPerWall, 0) / t[k].length;
      rows.push([c.what, sig(best('1')), sig(best('2')), `**${sig(best('1') / best('2'))}×**`, sig(cpu('1')), sig(cpu('2'))]);
      out.rows.push({ kind: 'native-threads', what: c.what, oneThreadBestMs: best('1'), twoThreadsBestMs: best('2'), cpuPerWall1: cpu('1'), cpuPerWall2: cpu('2') });
    }
  } finally {
    if (prev === undefined) delete process.env.FACTLENS_NATIVE_THREADS;
    else process.env.FACTLENS_NATIVE_THREADS = prev;
    disposeModel(m);
  }
  out.tables.push({
    title: 'Native products: onnxruntime intra-op pool at 1 vs 2 threads (GPT-2-small shape, spin-waiting off)',
    columns: ['work', '1 thread ms (best)', '2 threads ms (best)', 'speed-up', 'CPU s per wall s, 1 thread', '2 threads'],
    rows,
    notes: ['Products under 4 MFLOP always use one thread (the pool costs more than it saves there). A CPU/wall ratio near the thread count while timing and no CPU time outside products is what spin-waiting off gives.'],
  });
  return out;
}

export const threadsSection: Section = { name: 'threads', title: 'Native products: 1 vs 2 threads', expected: '~1 min', run };
