/**
 * XL section: a GPT-2-XL-shaped model (1.56B parameters, random float16 weights written by the
 * benchmark, bench/gpt2-xl.ts) loaded on the native backend, whose block matrices then stay in
 * host memory outside the 4 GB WASM heap (engine/runtime/native/host-weights.ts), and traced:
 * 10 tokens, three kinds. Samples: FACTLENS_BENCH_XL_SAMPLES (default 10; the trace's time grows
 * about linearly with them, and on a 2-core machine shared with other work a run with 10 takes
 * hours). Reports load and trace time and the memory it took.
 */
import * as os from 'node:os';
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs-core';
import { disposeModel, loadModel } from '../engine/model/load.js';
import { probeBackends } from '../engine/runtime/backend.js';
import { hostWeightsLive } from '../engine/runtime/native/host-weights.js';
import { trace } from '../engine/trace/index.js';
import { ensureGpt2Xl, gpt2XlParameterCount } from './gpt2-xl.js';
import type { BenchContext, Section, SectionResult } from './types.js';
import { cpuPressure, MB, rssMB, sig } from './util.js';

async function run(ctx: BenchContext): Promise<SectionResult> {
  const out: SectionResult = { rows: [], tables: [], skipped: [], notes: [] };
  const native = probeBackends().find((b) => b.name === 'native')!;
  if (!native.available) {
    out.skipped.push({ what: 'GPT-2-XL trace', why: `needs the native backend: ${native.reason}` });
    return out;
  }
  const load0 = os.loadavg();
  const built = ensureGpt2Xl(ctx.log);
  const t0 = performance.now();
  const m = await loadModel({ dir: built.dir, backend: 'native' });
  const loadS = (performance.now() - t0) / 1000;
  try {
    const heapMB = ((tf.backend() as unknown as { wasm: { HEAPU8: Uint8Array } }).wasm.HEAPU8.buffer.byteLength) / MB;
    const ids = m.tokenizer.encode('The Eiffel Tower in the city of Paris is located in the country of').slice(0, 10);
    const prompt = m.tokenizer.decode(ids);
    ctx.log(`XL: loaded in ${loadS.toFixed(0)} s (${hostWeightsLive()} host matrices); tracing ${JSON.stringify(prompt)} ...`);
    const cpu0 = process.cpuUsage();
    const t1 = performance.now();
    const samples = Number(process.env.FACTLENS_BENCH_XL_SAMPLES) || 10;
    let logged = 0;
    const onProgress = (f: number, msg: string) => {
      if (performance.now() - logged < 30_000) return;
      logged = performance.now();
      ctx.log(`XL: ${(100 * f).toFixed(0)}% ${msg}`);
    };
    const r = await trace(m, prompt, { subject: 'Eiffel Tower', samples, seed: 1 }, { onProgress });
    const traceS = (performance.now() - t1) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const rss = rssMB();
    out.rows.push({
      kind: 'xl-trace',
      parameters: m.parameterCount,
      tokens: r.ids.length,
      kinds: r.kinds,
      samples: r.samples,
      loadS,
      traceS,
      cpuS: (cpu.user + cpu.system) / 1e6,
      rssMB: rss,
      wasmHeapMB: heapMB,
      hostMatrices: hostWeightsLive(),
      tokenLayers: r.work.token_layers,
      answer: r.answer,
      cached: built.cached,
      buildS: built.buildS,
    });
    out.tables.push({
      title: `GPT-2-XL shape (${(gpt2XlParameterCount() / 1e9).toFixed(2)}B parameters, random float16 weights), native backend`,
      columns: ['prompt tokens', 'kinds', 'load s', 'trace s (wall)', 'trace CPU s', 'RSS MB', 'WASM heap MB', 'matrices outside the heap'],
      rows: [[String(r.ids.length), r.kinds.join(', '), sig(loadS), `**${sig(traceS, 4)}**`, sig((cpu.user + cpu.system) / 1e6, 4), sig(rss, 4), sig(heapMB, 4), String(hostWeightsLive())]],
      notes: [
        `Checkpoint ${built.cached ? 'cached' : `built in ${built.buildS.toFixed(0)} s`}; ${r.samples} sample(s), default window ${r.window}, seeded noise; ` +
          `answer ${JSON.stringify(r.answer.token)} (random weights). Load average before ${load0.map((x) => x.toFixed(1)).join(' / ')}, after ${os.loadavg().map((x) => x.toFixed(1)).join(' / ')}` +
          `${cpuPressure() ? `, CPU pressure ${cpuPressure()!.avg60}%` : ''}.`,
      ],
    });
  } finally {
    disposeModel(m);
  }
  return out;
}

export const xlSection: Section = { name: 'xl', title: 'GPT-2-XL-shaped trace beyond the WASM heap', expected: '~20–40 min', run };
