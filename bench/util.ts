/** Timing, memory and machine helpers shared by benchmark sections. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { execFileSync } from 'node:child_process';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import type { MachineInfo } from './types.js';

export interface Timing {
  warmup: number;
  /** Wall time of the first warm-up call (on WASM it includes XNNPACK's weight packing). */
  firstMs: number | null;
  n: number;
  bestMs: number;
  medianMs: number;
  samplesMs: number[];
  /**
   * Process CPU time (user + system, all threads) of each timed call. For a single-threaded
   * backend it is much less sensitive than wall time to a busy machine (descheduled time is
   * not counted), but it includes V8's GC helper threads.
   */
  cpuSamplesMs: number[];
  cpuBestMs: number;
  cpuMedianMs: number;
  /** Σ CPU ÷ Σ wall over the timed calls: ≈1 on an idle core for single-threaded work. */
  cpuPerWall: number;
  /** [start, end) of each timed call on the performance.now() clock. */
  windows: Array<[number, number]>;
}

export interface MeasureOptions {
  /** Untimed calls first (default 1). */
  warmup?: number;
  /** At least this many timed calls (default 3). */
  minReps?: number;
  /** At most this many timed calls (default 10). */
  maxReps?: number;
  /** Stop adding calls past minReps once the timed calls took this long (default 5000 ms). */
  budgetMs?: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Best and median of repeated synchronous calls, after warm-up calls. */
export function measure(fn: () => void, o: MeasureOptions = {}): Timing {
  const warmup = o.warmup ?? 1;
  const minReps = o.minReps ?? 3;
  const maxReps = Math.max(minReps, o.maxReps ?? 10);
  const budget = o.budgetMs ?? 5000;
  let firstMs: number | null = null;
  for (let i = 0; i < warmup; i++) {
    const s = performance.now();
    fn();
    if (i === 0) firstMs = performance.now() - s;
  }
  const samples: number[] = [];
  const cpu: number[] = [];
  const windows: Array<[number, number]> = [];
  const t0 = performance.now();
  while (samples.length < maxReps && (samples.length < minReps || performance.now() - t0 < budget)) {
    const c0 = process.cpuUsage();
    const s = performance.now();
    fn();
    const e = performance.now();
    const c = process.cpuUsage(c0);
    samples.push(e - s);
    cpu.push((c.user + c.system) / 1000);
    windows.push([s, e]);
  }
  const sum = (xs: number[]) => xs.reduce((a, x) => a + x, 0);
  return {
    warmup,
    firstMs,
    n: samples.length,
    bestMs: Math.min(...samples),
    medianMs: median(samples),
    samplesMs: samples,
    cpuSamplesMs: cpu,
    cpuBestMs: Math.min(...cpu),
    cpuMedianMs: median(cpu),
    cpuPerWall: sum(cpu) / sum(samples),
    windows,
  };
}

/** Linux pressure-stall information for CPU ("some" averages, %): how often runnable tasks waited. */
export function cpuPressure(): { avg10: number; avg60: number; avg300: number } | null {
  try {
    const line = fs.readFileSync('/proc/pressure/cpu', 'utf8').split('\n').find((l) => l.startsWith('some'));
    if (!line) return null;
    const get = (k: string) => Number(line.match(new RegExp(`${k}=([0-9.]+)`))?.[1]);
    return { avg10: get('avg10'), avg60: get('avg60'), avg300: get('avg300') };
  } catch {
    return null;
  }
}

let gcFn: (() => void) | null | undefined;

/** Full garbage collection when possible (enables --expose-gc at run time). */
export function gc(): void {
  if (gcFn === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      gcFn = vm.runInNewContext('gc') as () => void;
    } catch {
      gcFn = null;
    }
  }
  if (gcFn) {
    gcFn();
    gcFn();
  }
}

export const MB = 1024 * 1024;

export function rssMB(): number {
  return process.memoryUsage().rss / MB;
}

function packageVersion(name: string): string {
  try {
    const file = require.resolve(`${name}/package.json`);
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/** The SIMD flags the benchmarks report (and fma-peak.ts needs) that /proc/cpuinfo lists. */
export function cpuFlags(): string[] {
  try {
    const text = fs.readFileSync('/proc/cpuinfo', 'utf8');
    const line = text.split('\n').find((l) => l.startsWith('flags'));
    if (!line) return [];
    const have = new Set(line.split(':')[1].trim().split(/\s+/));
    return ['sse4_2', 'avx', 'avx2', 'fma', 'avx512f', 'avx512_vnni', 'avx512_bf16'].filter((f) => have.has(f));
  } catch {
    return [];
  }
}

function gitCommit(): string | null {
  try {
    // Read-only: rev-parse never touches the index or the working tree.
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      cwd: path.resolve(__dirname, '..'),
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return null;
  }
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    date: new Date().toISOString(),
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    cpuFlags: cpuFlags(),
    totalMemGB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    loadAvg: os.loadavg().map((x) => Math.round(x * 100) / 100),
    cpuPressure: cpuPressure(),
    platform: os.platform(),
    release: os.release(),
    arch: os.arch(),
    node: process.version,
    tfjsCore: packageVersion('@tensorflow/tfjs-core'),
    tfjsBackendWasm: packageVersion('@tensorflow/tfjs-backend-wasm'),
    gitCommit: gitCommit(),
  };
}

/** Formats a number with `digits` significant figures, without exponent for usual ranges. */
export function sig(x: number | null | undefined, digits = 3): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  if (x === 0) return '0';
  const mag = Math.floor(Math.log10(Math.abs(x)));
  const decimals = Math.max(0, digits - 1 - mag);
  return x.toFixed(Math.min(decimals, 6));
}

/** "best / median" cell. */
export function bm(best: number | null | undefined, med: number | null | undefined, digits = 3): string {
  return `${sig(best, digits)} / ${sig(med, digits)}`;
}

// ---------------------------------------------------------------------------------------------
// Garbage-collection time inside timed windows

const gcEntries: Array<{ start: number; duration: number }> = [];
let gcObserver: PerformanceObserver | null = null;

/** Starts recording V8 GC pauses (idempotent). Call before the calls to be attributed. */
export function trackGc(): void {
  if (gcObserver) return;
  gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) gcEntries.push({ start: e.startTime, duration: e.duration });
  });
  gcObserver.observe({ entryTypes: ['gc'] });
}

/** GC pause time (ms) that started inside each [start, end) window (performance.now() clock). */
export async function gcTimeIn(windows: Array<[number, number]>): Promise<number[]> {
  await new Promise((r) => setTimeout(r, 20)); // let queued gc entries be delivered
  if (gcObserver) {
    for (const e of gcObserver.takeRecords()) gcEntries.push({ start: e.startTime, duration: e.duration });
  }
  return windows.map(([a, b]) => gcEntries.filter((e) => e.start >= a && e.start < b).reduce((s, e) => s + e.duration, 0));
}
