/**
 * scripts/gpu-probe: one command (a few minutes) that says whether the WebGPU path runs on this
 * machine and how well: the adapter Dawn finds, forward parity against the CPU backend (plain
 * JS, the reference; max |Δlogit| ≤ 1e-4), and a trace and a ROME edit timed on webgpu and on
 * the best CPU backend (native, else wasm). Prints a markdown report (for bench/RESULTS.md);
 * `--out FILE` also writes it there. Exit 0 when the probe ran (with or without an adapter).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs-core';
import { disposeModel, loadModel, type LoadedModel } from '../engine/model/load.js';
import { probeBackends, selectBackend, type BackendName } from '../engine/runtime/backend.js';
import { describe, webgpuAdapter } from '../engine/runtime/webgpu.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch } from '../engine/runtime/batch.js';
import { trace } from '../engine/trace/index.js';
import { computeEdit } from '../engine/edit/index.js';

const lines: string[] = [];
const say = (s: string) => {
  lines.push(s);
  process.stdout.write(s + '\n');
};

async function logits(m: LoadedModel, ids: number[]): Promise<Float32Array> {
  const t = tf.tidy(() => forward(m, padBatch([ids])).logits!);
  const v = (await t.data()) as Float32Array;
  t.dispose();
  return v;
}

async function timed<T>(what: string, fn: () => Promise<T>): Promise<{ ms: number; value?: T; error?: string }> {
  const t0 = performance.now();
  try {
    const value = await fn();
    return { ms: performance.now() - t0, value };
  } catch (e) {
    return { ms: performance.now() - t0, error: `${what}: ${(e as Error).message.split('\n')[0]}` };
  }
}

async function main(): Promise<number> {
  const outIdx = process.argv.indexOf('--out');
  const out = outIdx > 0 ? process.argv[outIdx + 1] : null;
  say(`## GPU probe (${new Date().toISOString()}, ${os.hostname()}, ${os.cpus().length} cores, node ${process.version})`);
  const found = await webgpuAdapter();
  if ('reason' in found) {
    say(`- WebGPU: **no adapter**: ${found.reason}. The engine runs on ${probeBackends().find((b) => b.available && b.name !== 'webgpu')?.name}.`);
  } else {
    say(`- ${describe(found.info)}`);
  }
  const cpuBest: BackendName = probeBackends().find((b) => b.name === 'native')?.available ? 'native' : 'wasm';
  const backends: BackendName[] = 'reason' in found ? [cpuBest] : ['webgpu', cpuBest];
  const prompt = 'The capital of France is';
  await selectBackend('cpu');
  const refModel = await loadModel({ backend: 'cpu' });
  const ids = refModel.tokenizer.encode(prompt);
  const ref = await logits(refModel, ids);
  disposeModel(refModel);
  say('');
  say('| backend | forward max abs diff vs cpu | trace ms (3 kinds, tinyworld) | ROME edit ms (cached statistics) |');
  say('|---|---|---|---|');
  for (const b of backends) {
    await selectBackend(b);
    const m = await loadModel({ backend: b });
    try {
      const got = await logits(m, ids);
      let diff = 0;
      for (let i = 0; i < got.length; i++) diff = Math.max(diff, Math.abs(got[i] - ref[i]));
      await trace(m, prompt, { subject: 'France', kinds: ['hidden'] }); // warm-up
      const tr = await timed('trace', () => trace(m, prompt, { subject: 'France' }));
      const req = { prompt: 'The capital of {} is', subject: 'France', target: 'Rome' };
      await timed('edit', () => computeEdit(m, req)); // statistics (cached on disk after the first run)
      const ed = await timed('edit', () => computeEdit(m, req));
      say(`| ${b} | ${diff.toExponential(2)}${diff <= 1e-4 ? ' (ok)' : ' (**above 1e-4**)'} | ${tr.error ?? tr.ms.toFixed(0)} | ${ed.error ?? ed.ms.toFixed(0)} |`);
    } finally {
      disposeModel(m);
    }
  }
  if (out) fs.writeFileSync(out, lines.join('\n') + '\n');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    console.error(`gpu-probe: ${(e as Error).stack}`);
    process.exit(1);
  },
);
