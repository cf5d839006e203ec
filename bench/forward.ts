/**
 * Forward section: throughput (tokens/s) and achieved matmul GFLOP/s of the engine's forward
 * pass, on the embedded tinyworld model and on a GPT-2-small-shaped model with random weights
 * (written as a real checkpoint and loaded through the real loader), for every backend that
 * starts. The baseline is numpy's float32 matmul on the same matmul shapes, measured in the
 * same run (a child python3 process). Also: memory after loading, where the forward time goes
 * (tf.profile kernel times) and the cost of single ops relative to a same-shape Add.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import * as tf from '@tensorflow/tfjs-core';
import { getThreadsCount } from '@tensorflow/tfjs-backend-wasm';
import { defaultModelDir, disposeModel, loadModel, type LoadedModel } from '../engine/model/load.js';
import { forward } from '../engine/runtime/forward.js';
import { padBatch, type PaddedBatch } from '../engine/runtime/batch.js';
import { probeBackends, selectBackend, type BackendName } from '../engine/runtime/backend.js';
import { tidyData } from '../engine/util/scope.js';
import { ensureGpt2Small, GPT2_SMALL, VERSION as GPT2_VERSION } from './gpt2-small.js';
import type { BenchContext, Section, SectionResult, Skip, Table } from './types.js';
import { bm, cpuPressure, gc, gcTimeIn, MB, measure, median, rssMB, sig, trackGc, type MeasureOptions, type Timing } from './util.js';

// ---------------------------------------------------------------------------------------------
// Shapes and FLOPs

interface Dims {
  nLayer: number;
  d: number;
  nHead: number;
  f: number;
  vocab: number;
}

type ModelId = 'tinyworld' | 'gpt2-small-random';

interface ModelSpec {
  id: ModelId;
  label: string;
  dims: Dims;
  /** Folder to load (undefined: the embedded model). */
  dir?: () => string;
}

/** [batch rows, tokens per row] */
const SHAPES: Array<[number, number]> = [
  [1, 16],
  [1, 64],
  [11, 16],
  [11, 64],
];

type MatmulCat = 'qkv' | 'scores' | 'values' | 'attnOut' | 'mlpIn' | 'mlpOut' | 'unembed';

const CAT_LABEL: Record<MatmulCat | 'selectRows', string> = {
  qkv: 'MatMul qkv',
  scores: 'MatMul attention q·kᵀ (batched, transposed B)',
  values: 'MatMul attention probs·v (batched)',
  attnOut: 'MatMul attention out proj',
  mlpIn: 'MatMul MLP in',
  mlpOut: 'MatMul MLP out',
  unembed: 'MatMul unembedding (last position)',
  selectRows: 'MatMul one-hot row select (selectRows)',
};

interface MatmulShape {
  cat: MatmulCat;
  /** Leading batch (B·H for attention, 1 otherwise). */
  batch: number;
  m: number;
  k: number;
  n: number;
  transB: boolean;
  /** Calls per forward. */
  count: number;
}

/** The matmuls of one forward over B rows of T tokens (no past), in the engine's shapes. */
function matmulShapes(x: Dims, b: number, t: number): MatmulShape[] {
  const { nLayer: L, d, nHead: h, f, vocab: v } = x;
  const bt = b * t;
  const dh = d / h;
  return [
    { cat: 'qkv', batch: 1, m: bt, k: d, n: 3 * d, transB: false, count: L },
    { cat: 'scores', batch: b * h, m: t, k: dh, n: t, transB: true, count: L },
    { cat: 'values', batch: b * h, m: t, k: t, n: dh, transB: false, count: L },
    { cat: 'attnOut', batch: 1, m: bt, k: d, n: d, transB: false, count: L },
    { cat: 'mlpIn', batch: 1, m: bt, k: d, n: f, transB: false, count: L },
    { cat: 'mlpOut', batch: 1, m: bt, k: f, n: d, transB: false, count: L },
    { cat: 'unembed', batch: 1, m: b, k: d, n: v, transB: false, count: 1 },
  ];
}

const mmFlops = (s: MatmulShape) => 2 * s.batch * s.m * s.k * s.n;
const forwardFlops = (x: Dims, b: number, t: number) => matmulShapes(x, b, t).reduce((a, s) => a + mmFlops(s) * s.count, 0);
const shapeKey = (s: Omit<MatmulShape, 'cat' | 'count'>) => `${s.batch}x${s.m}x${s.k}x${s.n}${s.transB ? 'T' : ''}`;

function dimsFromConfig(file: string): Dims {
  const c = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, number | null>;
  const d = c.n_embd as number;
  return { nLayer: c.n_layer as number, d, nHead: c.n_head as number, f: (c.n_inner as number | null) ?? 4 * d, vocab: c.vocab_size as number };
}

function modelSpecs(): ModelSpec[] {
  const g = GPT2_SMALL;
  return [
    { id: 'tinyworld', label: 'tinyworld', dims: dimsFromConfig(path.join(defaultModelDir(), 'config.json')) },
    {
      id: 'gpt2-small-random',
      label: 'GPT-2-small shape (124M, random)',
      dims: { nLayer: g.nLayer, d: g.d, nHead: g.nHead, f: 4 * g.d, vocab: g.vocab },
      dir: () => gpt2DirOnce(),
    },
  ];
}

let gpt2Built: { dir: string; cached: boolean; buildS: number } | null = null;
let gpt2Log: (m: string) => void = () => {};
function gpt2DirOnce(): string {
  if (!gpt2Built) gpt2Built = ensureGpt2Small(gpt2Log);
  return gpt2Built.dir;
}

// ---------------------------------------------------------------------------------------------
// Plans per backend

interface CasePlan {
  b: number;
  t: number;
  measure: MeasureOptions;
}

/** cpu (pure JS) is ~40× slower than wasm: tinyworld with few repeats, 124M only once at the smallest shape. */
const CPU_SINGLE_CALL_CAP_MS = 10_000;
/** cpu shapes estimated above this run once, without warm-up. */
const CPU_SINGLE_RUN_ABOVE_MS = 2500;

function planFor(backend: BackendName, model: ModelId): { cases: CasePlan[]; skipped: Skip[] } {
  if (backend !== 'cpu') {
    // One warm-up call suffices: the first call packs the weights (XNNPACK), the second is warm.
    return {
      cases: SHAPES.map(([b, t]) => ({ b, t, measure: { warmup: 1, minReps: 3, maxReps: 10, budgetMs: 2500 } })),
      skipped: [],
    };
  }
  if (model === 'tinyworld') {
    return { cases: SHAPES.map(([b, t]) => ({ b, t, measure: { warmup: 1, minReps: 2, maxReps: 5, budgetMs: 2000 } })), skipped: [] };
  }
  const [b0, t0] = SHAPES[0];
  return {
    cases: [{ b: b0, t: t0, measure: { warmup: 0, minReps: 1, maxReps: 1 } }],
    skipped: SHAPES.slice(1).map(([b, t]) => ({
      what: `cpu · ${model} · ${b}×${t}`,
      why: 'the pure-JS cpu backend is ~40× slower than wasm; only the smallest 124M shape is run, once (no warm-up)',
    })),
  };
}

// ---------------------------------------------------------------------------------------------
// numpy baseline

interface NumpyTiming {
  key: string;
  n: number;
  bestS: number;
  medianS: number;
}

interface NumpyRun {
  numpy: string;
  python: string;
  blas: Record<string, unknown>;
  modes: Record<string, NumpyTiming[]>;
}

function runNumpy(shapes: Map<string, MatmulShape>, ctx: BenchContext): NumpyRun | { error: string } {
  const req = {
    shapes: [...shapes.entries()].map(([key, s]) => ({ key, batch: s.batch, m: s.m, k: s.k, n: s.n, transB: s.transB })),
    minTimeS: 0.06,
    minReps: 3,
    maxReps: 100,
    modeBudgetS: 20,
  };
  ctx.log(`numpy: timing ${req.shapes.length} matmul shapes (1 thread, then default threads) ...`);
  const r = spawnSync('python3', [path.join(__dirname, 'numpy_matmul.py')], {
    input: JSON.stringify(req),
    encoding: 'utf8',
    maxBuffer: 64 * MB,
    timeout: 180_000,
  });
  if (r.error) return { error: `python3 did not run: ${r.error.message}` };
  if (r.status !== 0) return { error: `python3 exited with ${r.status}: ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}` };
  try {
    return JSON.parse(r.stdout) as NumpyRun;
  } catch (e) {
    return { error: `unreadable numpy output: ${(e as Error).message}` };
  }
}

/**
 * numpy time of one whole forward's matmuls: Σ count · time(shape), best and median. Mode
 * 'limit' takes, per shape, whichever thread mode was faster (on a busy 2-core machine
 * OpenBLAS's 2-thread mode can be far slower than 1 thread, so neither alone is the limit).
 */
function numpyForward(run: NumpyRun | null, mode: string, shapes: MatmulShape[]): { bestS: number; medianS: number } | null {
  if (!run) return null;
  const modes = mode === 'limit' ? Object.keys(run.modes) : [mode];
  const maps = modes.map((m) => new Map((run.modes[m] ?? []).map((x) => [x.key, x])));
  let best = 0;
  let med = 0;
  for (const s of shapes) {
    const candidates = maps.map((m) => m.get(shapeKey(s))).filter((x): x is NumpyTiming => !!x);
    if (!candidates.length) return null;
    const t = candidates.reduce((a, b) => (b.bestS < a.bestS ? b : a));
    best += t.bestS * s.count;
    med += t.medianS * s.count;
  }
  return { bestS: best, medianS: med };
}

// ---------------------------------------------------------------------------------------------
// Engine measurements

function inputRows(b: number, t: number, vocab: number): number[][] {
  const span = Math.min(vocab, 50000);
  return Array.from({ length: b }, (_, r) => Array.from({ length: t }, (_, i) => (r * 7919 + i * 104729 + 13) % span));
}

/** The logits read back by the most recent runForward (a host copy; checked once per case). */
let lastLogits: Float32Array | null = null;

function runForward(m: LoadedModel, batch: PaddedBatch): void {
  // Read the logits back after the scope (never return dataSync arrays out of tf.tidy).
  lastLogits = tidyData(() => forward(m, batch).logits!);
}

/** Sanity of the last logits: all finite, and their mean |x| (a NaN or all-zero forward is a bug, not a speed-up). */
function logitsCheck(): { finite: boolean; meanAbs: number } {
  const x = lastLogits;
  if (!x || x.length === 0) return { finite: false, meanAbs: NaN };
  let finite = true;
  let sum = 0;
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i])) finite = false;
    sum += Math.abs(x[i]);
  }
  return { finite, meanAbs: sum / x.length };
}

function wasmHeapMB(): number | null {
  const be = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
  const bytes = be.wasm?.HEAPU8?.buffer.byteLength;
  return bytes === undefined ? null : bytes / MB;
}

interface KernelRow {
  label: string;
  calls: number;
  ms: number;
  flops: number;
}

/** Kernel times of one forward (tf.profile), grouped: matmuls by role, other kernels by name and input shapes. */
async function profileForward(
  m: LoadedModel,
  batch: PaddedBatch,
  dims: Dims,
): Promise<{ rows: KernelRow[]; totalMs: number; wallMs: number; peakBytes: number; startBytes: number }> {
  const startBytes = tf.memory().numBytes;
  const b = batch.ids.length;
  const t = batch.width;
  const shapes = matmulShapes(dims, b, t);
  const byCat = new Map(shapes.map((s) => [s.cat, s]));
  const bt = b * t;
  const w0 = performance.now();
  const info = await tf.profile(() => runForward(m, batch));
  const wallMs = performance.now() - w0;
  const groups = new Map<string, KernelRow>();
  let attnToggle = 0;
  let total = 0;
  for (const k of info.kernels) {
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    total += ms;
    const [a, bShape] = k.inputShapes as number[][];
    let label: string;
    let flops = 0;
    if ((k.name === 'BatchMatMul' || k.name === '_FusedMatMul') && a && bShape) {
      let cat: MatmulCat | 'selectRows' | null = null;
      if (a.length > 2) cat = attnToggle++ % 2 === 0 ? 'scores' : 'values';
      else if (a[0] === bt && a[1] === dims.d && bShape[1] === 3 * dims.d) cat = 'qkv';
      else if (a[0] === bt && a[1] === dims.d && bShape[1] === dims.d) cat = 'attnOut';
      else if (a[0] === bt && a[1] === dims.d && bShape[1] === dims.f) cat = 'mlpIn';
      else if (a[0] === bt && a[1] === dims.f) cat = 'mlpOut';
      else if (a[0] === b && a[1] === bt) cat = 'selectRows';
      else if (a[0] === b && bShape[1] === dims.vocab) cat = 'unembed';
      if (cat === 'selectRows') flops = 2 * b * bt * dims.d;
      else if (cat) flops = mmFlops(byCat.get(cat)!);
      label = cat ? `${CAT_LABEL[cat]} ${a.join('×')} · ${bShape.join('×')}` : `${k.name} ${a.join('×')} · ${bShape.join('×')}`;
    } else {
      const shapesText = (k.inputShapes as Array<number[] | null>).map((s) => (s === null ? '?' : s.length === 0 ? 'scalar' : s.join('×'))).join(', ');
      label = `${k.name} (${shapesText})`;
    }
    const g = groups.get(label) ?? { label, calls: 0, ms: 0, flops: 0 };
    g.calls++;
    g.ms += ms;
    g.flops += flops;
    groups.set(label, g);
  }
  return { rows: [...groups.values()].sort((x, y) => y.ms - x.ms), totalMs: total, wallMs, peakBytes: info.peakBytes, startBytes };
}

interface OpCase {
  op: string;
  shape: string;
  /** Elements written (for M elem/s) or FLOPs (matmuls). */
  elements?: number;
  flops?: number;
  fn: () => tf.Tensor;
}

/**
 * Single-op costs at GPT-2-small shapes (B=1, T=64), relative to a same-shape Add measured
 * in the same run: flags ops that take a slow (scalar or generic-broadcast) path.
 */
function opCases(): { cases: OpCase[]; dispose: () => void } {
  const bt = 64;
  const d = GPT2_SMALL.d;
  const f = 4 * d;
  const h = GPT2_SMALL.nHead;
  const dh = d / h;
  const t = 64;
  const x = tf.randomNormal([bt, f], 0, 1, 'float32', 1) as tf.Tensor2D;
  const y = tf.randomNormal([bt, f], 0, 1, 'float32', 2) as tf.Tensor2D;
  const bias = tf.randomNormal([f], 0, 1, 'float32', 3) as tf.Tensor1D;
  const qkv = tf.randomNormal([bt, 3 * d], 0, 1, 'float32', 4) as tf.Tensor2D;
  const qkvBig = tf.randomNormal([11 * bt, 3 * d], 0, 1, 'float32', 11) as tf.Tensor2D;
  const hidden = tf.randomNormal([bt, d], 0, 1, 'float32', 5) as tf.Tensor2D;
  const wIn = tf.randomNormal([d, f], 0, 0.02, 'float32', 6) as tf.Tensor2D;
  const wInT = tf.randomNormal([f, d], 0, 0.02, 'float32', 7) as tf.Tensor2D;
  const q4 = tf.randomNormal([1, h, t, dh], 0, 1, 'float32', 8) as tf.Tensor4D;
  const k4 = tf.randomNormal([1, h, t, dh], 0, 1, 'float32', 9) as tf.Tensor4D;
  const p4 = tf.softmax(tf.randomNormal([1, h, t, t], 0, 1, 'float32', 10)) as tf.Tensor4D;
  const x4 = tf.reshape(hidden, [1, t, h, dh]) as tf.Tensor4D;
  const n = bt * f;
  const mm = 2 * bt * d * f;
  const att = 2 * h * t * t * dh;
  const cases: OpCase[] = [
    { op: 'Add x + y (baseline)', shape: `${bt}×${f}`, elements: n, fn: () => tf.add(x, y) },
    { op: 'Mul x · y', shape: `${bt}×${f}`, elements: n, fn: () => tf.mul(x, y) },
    { op: 'Mul x · scalar', shape: `${bt}×${f}`, elements: n, fn: () => tf.mul(x, 0.5) },
    { op: 'Add x + scalar', shape: `${bt}×${f}`, elements: n, fn: () => tf.add(x, 1) },
    { op: 'Add x + bias row', shape: `${bt}×${f} + ${f}`, elements: n, fn: () => tf.add(x, bias) },
    { op: 'Pow x^3 (GELU)', shape: `${bt}×${f}`, elements: n, fn: () => tf.pow(x, 3) },
    { op: 'Mul x·x·x (2 Muls, same result)', shape: `${bt}×${f}`, elements: n, fn: () => tf.mul(tf.mul(x, x), x) },
    { op: 'Tanh (GELU)', shape: `${bt}×${f}`, elements: n, fn: () => tf.tanh(x) },
    { op: 'Sigmoid (0.5·(1+tanh z) = σ(2z))', shape: `${bt}×${f}`, elements: n, fn: () => tf.sigmoid(x) },
    { op: 'Slice q/k/v column block', shape: `${bt}×${3 * d} → ${bt}×${d}`, elements: bt * d, fn: () => tf.slice(qkv, [0, d], [bt, d]) },
    {
      op: 'Slice q/k/v column block, B=11 rows (not vs Add: other shape)',
      shape: `${11 * bt}×${3 * d} → ${11 * bt}×${d}`,
      elements: 11 * bt * d,
      fn: () => tf.slice(qkvBig, [0, d], [11 * bt, d]),
    },
    { op: 'Transpose split heads', shape: `1×${t}×${h}×${dh} → [0,2,1,3]`, elements: bt * d, fn: () => tf.transpose(x4, [0, 2, 1, 3]) },
    { op: 'Softmax attention', shape: `1×${h}×${t}×${t}`, elements: h * t * t, fn: () => tf.softmax(p4) },
    { op: 'MatMul 2-D x·W', shape: `${bt}×${d} · ${d}×${f}`, flops: mm, fn: () => tf.matMul(hidden, wIn) },
    { op: 'MatMul 2-D x·Wᵀ (transposeB)', shape: `${bt}×${d} · (${f}×${d})ᵀ`, flops: mm, fn: () => tf.matMul(hidden, wInT, false, true) },
    { op: 'MatMul batched q·kᵀ', shape: `1×${h}×${t}×${dh} · ᵀ`, flops: att, fn: () => tf.matMul(q4, k4, false, true) },
    { op: 'MatMul batched probs·v', shape: `1×${h}×${t}×${t} · 1×${h}×${t}×${dh}`, flops: att, fn: () => tf.matMul(p4, k4) },
  ];
  return { cases, dispose: () => tf.dispose([x, y, bias, qkv, qkvBig, hidden, wIn, wInT, q4, k4, p4, x4]) };
}

// ---------------------------------------------------------------------------------------------
// The section

interface ForwardRow extends Record<string, unknown> {
  kind: 'forward';
  backend: BackendName;
  model: ModelId;
  batch: number;
  tokens: number;
  tokensTotal: number;
  flops: number;
  warmup: number;
  n: number;
  firstMs: number | null;
  bestMs: number;
  medianMs: number;
  samplesMs: number[];
  cpuPerWall: number;
  cpuBestMs: number;
  cpuMedianMs: number;
  /** V8 GC pause time per timed call, median (ms). */
  cpuSamplesMs: number[];
  gcMedianMs: number;
  gcSamplesMs: number[];
  tokPerSBest: number;
  tokPerSMedian: number;
  gflopsBest: number;
  gflopsMedian: number;
  numpyGflopsBest: number | null;
  numpyGflopsMedian: number | null;
  numpy1tGflopsBest: number | null;
  ratioVsNumpy: number | null;
  ratioVsNumpy1t: number | null;
  /** wasm best time / this best time, same shape and run (cpu rows). */
  speedVsWasm: number | null;
  logitsFinite: boolean;
  logitsMeanAbs: number;
}

async function run(ctx: BenchContext): Promise<SectionResult> {
  gpt2Log = ctx.log;
  trackGc();
  const pressureStart = cpuPressure();
  const loadStart = os.loadavg();
  const out: SectionResult = { rows: [], tables: [], skipped: [], notes: [] };
  const specs = modelSpecs();

  // numpy baseline: every matmul shape of every (model, B, T), measured once, up front.
  const allShapes = new Map<string, MatmulShape>();
  for (const s of specs) for (const [b, t] of SHAPES) for (const m of matmulShapes(s.dims, b, t)) allShapes.set(shapeKey(m), m);
  const np = runNumpy(allShapes, ctx);
  const numpy = 'error' in np ? null : np;
  if ('error' in np) out.skipped.push({ what: 'numpy baseline', why: np.error });
  else {
    out.rows.push({ kind: 'numpy-info', numpy: np.numpy, python: np.python, blas: np.blas });
    for (const [mode, list] of Object.entries(np.modes)) {
      for (const r of list) {
        const s = allShapes.get(r.key)!;
        out.rows.push({
          kind: 'numpy-matmul',
          mode,
          key: r.key,
          reps: r.n,
          bestS: r.bestS,
          medianS: r.medianS,
          batch: s.batch,
          m: s.m,
          k: s.k,
          n: s.n,
          transB: s.transB,
          gflopsBest: mmFlops(s) / r.bestS / 1e9,
          gflopsMedian: mmFlops(s) / r.medianS / 1e9,
        });
      }
      if (list.length < allShapes.size) {
        out.skipped.push({ what: `numpy ${mode}: ${allShapes.size - list.length} of ${allShapes.size} shapes`, why: 'the mode\'s 20 s time budget ran out (busy machine)' });
      }
    }
  }

  const forwardRows: ForwardRow[] = [];
  const memRows: Array<Record<string, unknown>> = [];
  const profiles: Array<{ backend: string; model: string; b: number; t: number; rows: KernelRow[]; totalMs: number; wallMs: number; peakBytes: number; startBytes: number }> = [];
  const opRows: Array<{ backend: string; op: string; shape: string; t: Timing; elements?: number; flops?: number; inner: number }> = [];
  let wasmThreads: number | null = null;

  for (const status of probeBackends()) {
    const name = status.name;
    if (ctx.options.backends && !ctx.options.backends.includes(name)) {
      out.skipped.push({ what: `backend ${name}`, why: 'not selected (--backends)' });
      continue;
    }
    if (!status.available) {
      out.skipped.push({ what: `backend ${name}`, why: status.reason ?? 'not available' });
      continue;
    }
    try {
      await selectBackend(name);
    } catch (e) {
      out.skipped.push({ what: `backend ${name}`, why: `did not start: ${(e as Error).message.split('\n')[0]}` });
      continue;
    }
    if (name === 'wasm') wasmThreads = getThreadsCount();
    ctx.log(`backend ${name} (tfjs '${tf.getBackend()}')`);

    for (const spec of specs) {
      const plan = planFor(name, spec.id);
      out.skipped.push(...plan.skipped);
      let model: LoadedModel | null = null;
      try {
        const dir = spec.dir?.();
        gc();
        const rss0 = rssMB();
        const l0 = performance.now();
        model = await loadModel({ dir, backend: name });
        const loadS = (performance.now() - l0) / 1000;
        gc();
        const mem = tf.memory();
        const memRow: Record<string, unknown> = {
          kind: 'memory',
          backend: name,
          model: spec.id,
          parameters: model.parameterCount,
          loadS,
          rssBeforeMB: rss0,
          rssAfterLoadMB: rssMB(),
          tfNumBytes: mem.numBytes,
          tfNumTensors: mem.numTensors,
          wasmHeapMB: wasmHeapMB(),
        };
        memRows.push(memRow);
        ctx.log(`  ${spec.id}: loaded in ${loadS.toFixed(1)} s, RSS ${rssMB().toFixed(0)} MB, tf ${(mem.numBytes / MB).toFixed(0)} MB`);

        let cpuRate: number | null = null; // best GFLOP/s seen on cpu: skips hopeless shapes, shortens slow ones
        for (const c of plan.cases) {
          const flops = forwardFlops(spec.dims, c.b, c.t);
          let mopts = c.measure;
          if (name === 'cpu' && cpuRate !== null) {
            const estMs = (flops / (cpuRate * 1e9)) * 1000;
            if (estMs > CPU_SINGLE_CALL_CAP_MS) {
              out.skipped.push({
                what: `cpu · ${spec.id} · ${c.b}×${c.t}`,
                why:
                  `estimated ${(estMs / 1000).toFixed(0)} s per forward at the ${sig(cpuRate)} GFLOP/s measured on ` +
                  `the smaller shapes (cap ${CPU_SINGLE_CALL_CAP_MS / 1000} s per call)`,
              });
              continue;
            }
            // Kernels are JIT-warm from the smaller shapes: one timed call for slow shapes.
            if (estMs > CPU_SINGLE_RUN_ABOVE_MS) mopts = { warmup: 0, minReps: 1, maxReps: 1 };
          }
          const batch = padBatch(inputRows(c.b, c.t, spec.dims.vocab));
          const timing = measure(() => runForward(model!, batch), mopts);
          const check = logitsCheck();
          lastLogits = null;
          const gcMs = await gcTimeIn(timing.windows);
          const shapes = matmulShapes(spec.dims, c.b, c.t);
          const npd = numpyForward(numpy, 'limit', shapes);
          const np1 = numpyForward(numpy, '1 thread', shapes);
          const gBest = flops / timing.bestMs / 1e6;
          const row: ForwardRow = {
            kind: 'forward',
            backend: name,
            model: spec.id,
            batch: c.b,
            tokens: c.t,
            tokensTotal: c.b * c.t,
            flops,
            warmup: timing.warmup,
            n: timing.n,
            firstMs: timing.firstMs,
            bestMs: timing.bestMs,
            medianMs: timing.medianMs,
            samplesMs: timing.samplesMs,
            cpuPerWall: timing.cpuPerWall,
            cpuBestMs: timing.cpuBestMs,
            cpuMedianMs: timing.cpuMedianMs,
            cpuSamplesMs: timing.cpuSamplesMs,
            gcMedianMs: median(gcMs),
            gcSamplesMs: gcMs,
            tokPerSBest: (c.b * c.t) / (timing.bestMs / 1000),
            tokPerSMedian: (c.b * c.t) / (timing.medianMs / 1000),
            gflopsBest: gBest,
            gflopsMedian: flops / timing.medianMs / 1e6,
            numpyGflopsBest: npd ? flops / npd.bestS / 1e9 : null,
            numpyGflopsMedian: npd ? flops / npd.medianS / 1e9 : null,
            numpy1tGflopsBest: np1 ? flops / np1.bestS / 1e9 : null,
            ratioVsNumpy: npd ? gBest / (flops / npd.bestS / 1e9) : null,
            ratioVsNumpy1t: np1 ? gBest / (flops / np1.bestS / 1e9) : null,
            speedVsWasm: null,
            logitsFinite: check.finite,
            logitsMeanAbs: check.meanAbs,
          };
          const wasmRow = forwardRows.find((r) => r.backend === 'wasm' && r.model === spec.id && r.batch === c.b && r.tokens === c.t);
          if (wasmRow && name !== 'wasm') row.speedVsWasm = wasmRow.bestMs / row.bestMs;
          if (!check.finite) out.notes.push(`**Warning:** ${name} · ${spec.id} · ${c.b}×${c.t} produced non-finite logits.`);
          forwardRows.push(row);
          if (name === 'cpu') cpuRate = Math.max(cpuRate ?? 0, row.gflopsBest);
          ctx.log(
            `  ${spec.id} ${c.b}×${c.t}: ${bm(timing.bestMs, timing.medianMs)} ms (n=${timing.n}), ` +
              `${sig(gBest)} GFLOP/s, cpu/wall ${timing.cpuPerWall.toFixed(2)}, gc ${sig(median(gcMs))} ms`,
          );
        }

        // Where the time goes: profile the largest measured shape that is cheap enough.
        const cap = name === 'cpu' ? 3000 : 20000;
        const measured = forwardRows.filter((r) => r.backend === name && r.model === spec.id && r.n > 1 && r.medianMs <= cap);
        const pick = measured.sort((x, y) => y.flops - x.flops)[0];
        if (pick) {
          const batch = padBatch(inputRows(pick.batch, pick.tokens, spec.dims.vocab));
          const p = await profileForward(model, batch, spec.dims);
          profiles.push({ backend: name, model: spec.id, b: pick.batch, t: pick.tokens, ...p });
          memRow.profiledShape = `${pick.batch}×${pick.tokens}`;
          memRow.forwardPeakExtraBytes = p.peakBytes - p.startBytes;
        }
        gc();
        memRow.rssAfterForwardsMB = rssMB();
        memRow.tfNumBytesAfterForwards = tf.memory().numBytes;
        memRow.wasmHeapAfterForwardsMB = wasmHeapMB();
      } catch (e) {
        out.skipped.push({ what: `${name} · ${spec.id}`, why: `failed: ${(e as Error).message.split('\n')[0]}` });
        ctx.log(`  ${spec.id} failed: ${(e as Error).stack}`);
      } finally {
        if (model) disposeModel(model);
      }
    }

    // Single-op costs on this backend. Fast ops run in an inner loop so each sample lasts ≥ 3 ms
    // (sub-millisecond single calls are dominated by timer and scheduler noise), and the list
    // is run twice, keeping each op's better pass, so a GC pause or a busy neighbour in one
    // pass does not decide the ratio. Slow ops (≥ 200 ms a call) run in the first pass only.
    gc();
    const { cases, dispose } = opCases();
    try {
      const bestOf = new Map<string, { t: Timing; inner: number }>();
      for (let pass = 0; pass < 2; pass++) {
        for (const c of cases) {
          const prev = bestOf.get(c.op);
          if (prev && prev.t.bestMs >= 200) continue;
          const once = () => void tidyData(() => c.fn());
          const p0 = performance.now();
          once();
          let single = performance.now() - p0;
          if (single < 200) {
            const p1 = performance.now();
            once();
            single = performance.now() - p1;
          }
          const inner = Math.max(1, Math.min(200, Math.ceil(3 / Math.max(single, 1e-3))));
          const t = measure(
            () => {
              for (let i = 0; i < inner; i++) once();
            },
            { warmup: 0, minReps: single >= 200 ? 2 : 3, maxReps: 30, budgetMs: 250 },
          );
          const per = (x: number) => x / inner;
          const scaled: Timing = {
            ...t,
            firstMs: null,
            bestMs: per(t.bestMs),
            medianMs: per(t.medianMs),
            samplesMs: t.samplesMs.map(per),
            cpuBestMs: per(t.cpuBestMs),
            cpuMedianMs: per(t.cpuMedianMs),
            cpuSamplesMs: t.cpuSamplesMs.map(per),
          };
          if (!prev || scaled.cpuBestMs < prev.t.cpuBestMs) bestOf.set(c.op, { t: scaled, inner });
        }
      }
      for (const c of cases) {
        const r = bestOf.get(c.op)!;
        opRows.push({ backend: name, op: c.op, shape: c.shape, t: r.t, elements: c.elements, flops: c.flops, inner: r.inner });
      }
    } finally {
      dispose();
    }
  }

  // ------------------------------------------------------------------ rows and tables
  out.rows.push(...forwardRows, ...memRows);
  for (const p of profiles) {
    for (const r of p.rows) {
      out.rows.push({ kind: 'kernel', backend: p.backend, model: p.model, batch: p.b, tokens: p.t, ...r, gflops: r.flops ? r.flops / r.ms / 1e6 : null });
    }
  }
  const addBase = new Map(opRows.filter((r) => r.op.startsWith('Add x + y')).map((r) => [r.backend, r.t.cpuBestMs]));
  for (const r of opRows) {
    out.rows.push({
      kind: 'op',
      backend: r.backend,
      op: r.op,
      shape: r.shape,
      bestMs: r.t.bestMs,
      medianMs: r.t.medianMs,
      cpuBestMs: r.t.cpuBestMs,
      cpuMedianMs: r.t.cpuMedianMs,
      n: r.t.n,
      callsPerSample: r.inner,
      elements: r.elements ?? null,
      flops: r.flops ?? null,
      cpuVsAdd: r.t.cpuBestMs / addBase.get(r.backend)!,
    });
  }
  out.rows.push({ kind: 'config', gpt2CheckpointVersion: GPT2_VERSION, gpt2Checkpoint: gpt2Built, wasmThreads, shapes: SHAPES });

  const modelLabel = new Map(specs.map((s) => [s.id, s.label]));
  out.notes.push(
    'FLOPs count matmuls only, analytically: per forward of B rows × T tokens, ' +
      '**FLOPs = L·(2·BT·d·3d + 2·B·H·T·T·d_h + 2·B·H·T·T·d_h + 2·BT·d·d + 2·BT·d·f + 2·BT·f·d) + 2·B·d·V** ' +
      '(qkv, attention scores q·kᵀ over all T×T pairs, attention·values, out projection, MLP in, MLP out, ' +
      'unembedding at the last position only). With H·d_h = d and f = 4d this is **L·(24·B·T·d² + 4·B·T²·d) + 2·B·d·V**. ' +
      'LayerNorm, softmax, GELU, embedding gathers and the one-hot row select are not counted. ' +
      'GFLOP/s = FLOPs / forward wall time; tokens/s = B·T / forward wall time (time includes reading the logits back).',
    'numpy baseline: the same matmul shapes timed in a python3 child process in this run (float32 `np.matmul`, ' +
      'best and median of ≥3 calls and ≥0.06 s per shape, after ≥20 ms of warm-up calls), once with OpenBLAS\'s default ' +
      'thread count and once with 1 thread. The numpy time of a forward is Σ calls × time(shape). "numpy limit" takes, per ' +
      'shape, whichever thread mode was faster (on a busy 2-core machine the 2-thread mode can collapse), so it is the ' +
      'practical matmul limit seen in this run; "engine ÷ numpy" divides the engine\'s best GFLOP/s by numpy\'s best on the ' +
      `same shapes (limit, and 1 thread). The tfjs wasm backend runs ${wasmThreads ?? '?'} thread(s) in Node.`,
    'Timing: warm-up calls first, then repeats until the case\'s minimum count and time budget are reached; ' +
      'cells are best / median. "CPU/wall" is process CPU time ÷ wall time over the timed calls: ≈1.0 for a single-threaded ' +
      'backend on an idle core; lower means the process was descheduled (a shared, busy machine). "CPU ms per forward" ' +
      '(process CPU time of each call, best / median) is less sensitive to that, but includes V8\'s GC helper threads. ' +
      '"GC ms per forward" sums the V8 garbage-collection pauses that started during each timed call (median over calls).',
  );
  const pressureEnd = cpuPressure();
  out.notes.push(
    `Machine load: load average ${loadStart.map((x) => x.toFixed(1)).join(' / ')} at the start of this section, ` +
      `${os.loadavg().map((x) => x.toFixed(1)).join(' / ')} at the end (${os.cpus().length} logical cores)` +
      (pressureStart && pressureEnd
        ? `; CPU pressure (PSI "some": share of time runnable tasks waited for a CPU) avg60 ${pressureStart.avg60}% → ${pressureEnd.avg60}%, ` +
          `avg300 at the end ${pressureEnd.avg300}%`
        : '') +
      '. With other processes running, wall times inflate (see CPU/wall); compare ratios within one run.',
  );
  out.rows.push({ kind: 'load', loadStart, loadEnd: os.loadavg(), pressureStart, pressureEnd });
  if (numpy) {
    const b = numpy.blas as { build?: Record<string, unknown>; corename?: string; threads?: number; env?: Record<string, string> };
    out.notes.push(
      `numpy ${numpy.numpy} (Python ${numpy.python}); BLAS: ${String(b.build?.name ?? '?')} ${String(b.build?.version ?? '')}, ` +
        `runtime core ${b.corename ?? '?'}, ${b.threads ?? '?'} threads; env ${JSON.stringify(b.env ?? {})}` +
        (b.env?.OPENBLAS_CORETYPE ? ` (OPENBLAS_CORETYPE forces the ${b.env.OPENBLAS_CORETYPE} kernels; left as is)` : ''),
    );
  }
  if (gpt2Built) {
    out.notes.push(
      `GPT-2-small-shaped checkpoint: ${gpt2Built.dir} (${GPT2_VERSION}; ` +
        `${gpt2Built.cached ? 'cached from an earlier run' : `generated in ${gpt2Built.buildS.toFixed(1)} s`}). ` +
        'Weights normal(0, 0.02), LayerNorm weights 1, biases 0, tied unembedding; F32 safetensors; loaded by the real loader.',
    );
  }

  const fwdTable: Table = {
    title: 'Forward throughput',
    columns: ['Backend', 'Model', 'B×T', 'ms', 'tokens/s', 'GFLOP/s', 'numpy GFLOP/s (limit / 1 thread)', 'engine ÷ numpy (limit / 1 thread)', 'n (warm-up)', 'CPU ms per forward', 'GC ms per forward (median)', 'CPU/wall', 'speed vs wasm (same shape)'],
    rows: forwardRows.map((r) => [
      r.backend,
      modelLabel.get(r.model) ?? r.model,
      `${r.batch}×${r.tokens}`,
      bm(r.bestMs, r.medianMs),
      bm(r.tokPerSBest, r.tokPerSMedian),
      bm(r.gflopsBest, r.gflopsMedian),
      `${sig(r.numpyGflopsBest)} / ${sig(r.numpy1tGflopsBest)}`,
      `${sig(r.ratioVsNumpy, 2)} / ${sig(r.ratioVsNumpy1t, 2)}`,
      `${r.n} (${r.warmup})`,
      bm(r.cpuBestMs, r.cpuMedianMs),
      sig(r.gcMedianMs),
      r.cpuPerWall.toFixed(2),
      r.speedVsWasm === null ? '' : `${sig(r.speedVsWasm, 2)}×`,
    ]),
    notes: ['ms, tokens/s and GFLOP/s are best / median. FLOPs per forward are in results.json (`flops`).'],
  };
  const mb = (x: unknown) => (typeof x === 'number' ? (x / MB).toFixed(0) : '–');
  const memTable: Table = {
    title: 'Memory after loading',
    columns: [
      'Backend',
      'Model',
      'Parameters',
      'Load s',
      'RSS before → after load, MB',
      'tf.memory() MB (tensors)',
      'wasm heap MB',
      'peak extra tensor MB during one forward (shape)',
      'after forwards: RSS / wasm heap / tf.memory() MB',
    ],
    rows: memRows.map((r) => [
      String(r.backend),
      modelLabel.get(r.model as ModelId) ?? String(r.model),
      `${((r.parameters as number) / 1e6).toFixed(1)}M`,
      sig(r.loadS as number),
      `${(r.rssBeforeMB as number).toFixed(0)} → ${(r.rssAfterLoadMB as number).toFixed(0)}`,
      `${mb(r.tfNumBytes)} (${r.tfNumTensors})`,
      r.wasmHeapMB === null ? '–' : (r.wasmHeapMB as number).toFixed(0),
      r.forwardPeakExtraBytes === undefined ? '–' : `${mb(r.forwardPeakExtraBytes)} (${r.profiledShape})`,
      r.rssAfterForwardsMB === undefined
        ? '–'
        : `${(r.rssAfterForwardsMB as number).toFixed(0)} / ${r.wasmHeapAfterForwardsMB === null ? '–' : (r.wasmHeapAfterForwardsMB as number).toFixed(0)} / ${mb(r.tfNumBytesAfterForwards)}`,
    ]),
    notes: [
      'RSS after a full GC. The wasm heap never shrinks, so a later model\'s RSS includes earlier models\' heap (and the cpu ' +
        'rows include the wasm heap of the earlier wasm rows); tf.memory() counts only live tensors (the weights plus the ' +
        'unembedding\'s [d, V] transpose where a product built it: model/unembedding.ts). XNNPACK packs a private copy of each weight matrix on its first matmul, so wasm memory ' +
        'grows after the first forward. "Peak extra tensor MB" is tf.profile\'s peak live-tensor bytes during one forward ' +
        'minus the bytes live before it: the activations a forward holds at once.',
    ],
  };
  out.tables.push(fwdTable, memTable);

  if (numpy) {
    const rows: string[][] = [];
    for (const s of specs) {
      for (const [b, t] of SHAPES) {
        for (const m of matmulShapes(s.dims, b, t).filter((x) => x.cat === 'mlpIn' || x.cat === 'mlpOut')) {
          const key = shapeKey(m);
          const d = numpy.modes.default?.find((x) => x.key === key);
          const one = numpy.modes['1 thread']?.find((x) => x.key === key);
          const g = (x?: NumpyTiming) => (x ? bm(mmFlops(m) / x.bestS / 1e9, mmFlops(m) / x.medianS / 1e9) : '–');
          rows.push([s.label, `${b}×${t}`, `${m.m}×${m.k} · ${m.k}×${m.n}`, g(d), g(one)]);
        }
      }
    }
    out.tables.push({
      title: 'numpy float32 matmul (the practical limit), MLP shapes',
      columns: ['Model', 'B×T', 'x · W', 'GFLOP/s default threads (best / median)', 'GFLOP/s 1 thread (best / median)'],
      rows,
      notes: ['All shapes (qkv, attention, out proj, unembedding) are in results.json (`kind: "numpy-matmul"`).'],
    });
  }

  for (const p of profiles) {
    const top = p.rows.slice(0, 14);
    const rest = p.rows.slice(14);
    const rows = top.map((r) => [r.label, String(r.calls), r.ms.toFixed(1), `${((100 * r.ms) / p.totalMs).toFixed(1)}%`, r.flops ? sig(r.flops / r.ms / 1e6) : '']);
    if (rest.length) {
      const ms = rest.reduce((a, r) => a + r.ms, 0);
      rows.push([`${rest.length} other kernel groups`, String(rest.reduce((a, r) => a + r.calls, 0)), ms.toFixed(1), `${((100 * ms) / p.totalMs).toFixed(1)}%`, '']);
    }
    out.tables.push({
      title: `Where the forward time goes: ${p.backend} · ${modelLabel.get(p.model as ModelId)} · ${p.b}×${p.t}`,
      columns: ['Kernel (input shapes)', 'Calls', 'ms', '% of kernel time', 'GFLOP/s'],
      rows,
      notes: [`One forward under tf.profile: kernel time ${p.totalMs.toFixed(0)} ms, wall ${p.wallMs.toFixed(0)} ms (profiling adds overhead).`],
    });
  }

  const backendsWithOps = [...new Set(opRows.map((r) => r.backend))];
  if (opRows.length) {
    const ops = [...new Set(opRows.map((r) => r.op))];
    out.tables.push({
      title: 'Single-op costs at GPT-2-small shapes (B=1, T=64)',
      columns: ['Op', 'Shape', ...backendsWithOps.flatMap((b) => [`${b} CPU ms best / median (wall best)`, `${b} rate (CPU)`, `${b} × Add`])],
      rows: ops.map((op) => {
        const first = opRows.find((r) => r.op === op)!;
        return [
          op,
          first.shape,
          ...backendsWithOps.flatMap((b) => {
            const r = opRows.find((x) => x.op === op && x.backend === b);
            if (!r) return ['–', '–', '–'];
            const ms = r.t.cpuBestMs;
            const rate = r.flops ? `${sig(r.flops / ms / 1e6)} GFLOP/s` : `${sig(r.elements! / ms / 1e3)} M elem/s`;
            return [`${bm(r.t.cpuBestMs, r.t.cpuMedianMs)} (wall ${sig(r.t.bestMs)})`, rate, sig(ms / addBase.get(b)!, 2)];
          }),
        ];
      }),
      notes: [
        'Times are process CPU time per call (robust to a busy machine; the wall-clock best is in brackets). ' +
          '"× Add" = best CPU time ÷ best CPU time of the same-shape `x + y` on the same backend in this run (elementwise ops write ' +
          `${64 * 4 * GPT2_SMALL.d} values; the slice and transpose write ${64 * GPT2_SMALL.d}). An elementwise op far above 1× takes a slow path. ` +
          'Each sample times k back-to-back calls (k chosen so a sample lasts ≥ 3 ms) and is divided by k; each call includes reading the result back. ' +
          'The op list runs twice and each op keeps its better pass.',
      ],
    });
  }
  return out;
}

export const forwardSection: Section = {
  name: 'forward',
  title: 'Forward pass throughput',
  expected: '~2.5–3 min on an idle 2-core machine, 5–7 min when it is busy; the first run also writes a 0.5 GB checkpoint to the temp folder (~10 s)',
  run,
};
