/**
 * `factlens trace "The capital of [France] is"` end to end, as a user runs it (a child process
 * of the real CLI: process start, module load, model load, trace, output), on this build's
 * backends and on the build of the commit before issue #12 (BASELINE_COMMIT, built from git
 * into a temporary folder), interleaved so that a change in machine load hits every build
 * alike. Section `cli`; the `compute` section runs the same comparison as its last table.
 *
 * Each run's stderr says how long the model took to load and its JSON how long the trace
 * took, so the table splits the wall time into start-up (process + modules), load and trace.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { probeBackends } from '../engine/runtime/backend.js';
import { nativeThreads } from '../engine/runtime/native/ort.js';
import type { BenchContext, Section, SectionResult, Table } from './types.js';
import { cpuPressure, MB, median, sig } from './util.js';

/** main before issue #12's work (the trace bug, native products): the "today" of the issue. */
export const BASELINE_COMMIT = 'e380fc8';
const ROOT = path.resolve(__dirname, '..');
const PROMPT = 'The capital of [France] is';

/** The CLI bundle of BASELINE_COMMIT, built once into os.tmpdir() (null with the reason when it cannot be). */
function baselineCli(ctx: BenchContext): { cli: string } | { why: string } {
  const dir = path.join(os.tmpdir(), 'factlens-bench', `cli-${BASELINE_COMMIT}`);
  const cli = path.join(dir, 'bin', 'factlens.js');
  if (fs.existsSync(path.join(dir, 'dist', 'engine', 'cli.js'))) return { cli };
  try {
    ctx.log(`building the CLI of ${BASELINE_COMMIT} in ${dir} ...`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    const tar = execFileSync('git', ['archive', '--format=tar', BASELINE_COMMIT], { cwd: ROOT, maxBuffer: 512 * MB });
    execFileSync('tar', ['-x', '-C', dir], { input: tar });
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'));
    execFileSync('node', ['scripts/build.mjs', '--only', 'cli'], { cwd: dir, stdio: 'ignore' });
    return { cli };
  } catch (e) {
    return { why: `could not build ${BASELINE_COMMIT}: ${(e as Error).message.split('\n')[0]}` };
  }
}

interface CliRun {
  wallMs: number;
  traceMs: number | null;
  loadMs: number | null;
  ok: boolean;
  err: string;
}

function cliTrace(cli: string, backend: string | null): CliRun {
  const args = [cli, 'trace', PROMPT, '--json', ...(backend ? ['--backend', backend] : [])];
  const t0 = performance.now();
  const r = spawnSync('node', args, { encoding: 'utf8', maxBuffer: 64 * MB, timeout: 300_000, env: { ...process.env, FACTLENS_NATIVE_THREADS: String(nativeThreads()) } });
  const wallMs = performance.now() - t0;
  let traceMs: number | null = null;
  try {
    traceMs = (JSON.parse(r.stdout) as { elapsed_ms: number }).elapsed_ms;
  } catch {
    /* reported below as not ok */
  }
  const load = /loaded .* in (\d+) ms/.exec(r.stderr || '');
  return { wallMs, traceMs, loadMs: load ? Number(load[1]) : null, ok: r.status === 0 && traceMs !== null, err: (r.stderr || '').trim().split('\n').slice(-1)[0] ?? '' };
}

function loadLine(): string {
  const p = cpuPressure();
  return `load average ${os.loadavg().map((x) => x.toFixed(2)).join(' / ')}${p ? `, CPU pressure (PSI some avg10) ${p.avg10}%` : ''}`;
}

/** This build on each backend and the baseline build, `repeats` interleaved rounds. */
export function cliTraceComparison(ctx: BenchContext, backends: string[], repeats: number): { rows: Array<Record<string, unknown>>; skipped: Array<{ what: string; why: string }>; table: Table } {
  const rows: Array<Record<string, unknown>> = [];
  const skipped: Array<{ what: string; why: string }> = [];
  const current = path.join(ROOT, 'bin', 'factlens.js');
  const runs: Array<{ label: string; cli: string; backend: string | null }> = [];
  if (fs.existsSync(path.join(ROOT, 'dist', 'engine', 'cli.js'))) {
    for (const b of backends) runs.push({ label: `this build, ${b}`, cli: current, backend: b });
  } else skipped.push({ what: 'CLI trace (this build)', why: 'dist/engine/cli.js missing: run npm run build first' });
  const base = baselineCli(ctx);
  if ('cli' in base) runs.push({ label: `${BASELINE_COMMIT} (before issue #12), wasm`, cli: base.cli, backend: null });
  else skipped.push({ what: `CLI trace (${BASELINE_COMMIT})`, why: base.why });
  const results = new Map<string, CliRun[]>();
  for (let rep = 0; rep < repeats; rep++) {
    for (const r of runs) {
      ctx.log(`CLI trace: ${r.label} (repeat ${rep + 1}/${repeats})`);
      const c = cliTrace(r.cli, r.backend);
      if (!c.ok) {
        skipped.push({ what: `CLI trace ${r.label}`, why: c.err });
        continue;
      }
      results.set(r.label, [...(results.get(r.label) ?? []), c]);
      rows.push({ kind: 'cli-trace', label: r.label, rep, wallMs: c.wallMs, reportedMs: c.traceMs, loadMs: c.loadMs });
    }
  }
  const baseLabel = runs.find((r) => r.backend === null)?.label;
  const baseRuns = baseLabel ? results.get(baseLabel) : undefined;
  const baseBest = baseRuns ? Math.min(...baseRuns.map((c) => c.wallMs)) : null;
  const baseMedian = baseRuns ? median(baseRuns.map((c) => c.wallMs)) : null;
  const tableRows: string[][] = [];
  for (const [label, cs] of results) {
    const walls = cs.map((c) => c.wallMs);
    const best = cs.reduce((a, c) => (c.wallMs < a.wallMs ? c : a));
    const startup = best.loadMs !== null && best.traceMs !== null ? best.wallMs - best.loadMs - best.traceMs : null;
    tableRows.push([
      label,
      sig(best.wallMs, 4),
      sig(median(walls), 4),
      startup !== null ? `${sig(startup, 3)} / ${sig(best.loadMs!, 3)} / ${sig(best.traceMs!, 3)}` : '–',
      walls.map((w) => sig(w, 4)).join(', '),
      baseBest ? `**${sig(baseBest / best.wallMs)}×** / ${sig(baseMedian! / median(walls))}×` : '–',
    ]);
  }
  return {
    rows,
    skipped,
    table: {
      title: '`factlens trace "The capital of [France] is"` end to end (tinyworld; process start, model load, trace, output)',
      columns: ['build, backend', 'best ms', 'median ms', 'best run: start-up / load / trace ms', 'runs (interleaved)', `speed vs ${BASELINE_COMMIT} (best / median)`],
      rows: tableRows,
    },
  };
}

async function run(ctx: BenchContext): Promise<SectionResult> {
  const before = loadLine();
  const wanted = ctx.options.backends ?? ['native', 'wasm'];
  const backends = probeBackends().filter((b) => wanted.includes(b.name) && b.available && b.name !== 'cpu').map((b) => b.name);
  const repeats = Number(process.env.FACTLENS_BENCH_CLI_REPEATS) || 5;
  const r = cliTraceComparison(ctx, backends, repeats);
  return {
    rows: r.rows,
    tables: [r.table],
    skipped: r.skipped,
    notes: [
      `${repeats} interleaved rounds (FACTLENS_BENCH_CLI_REPEATS); start-up = wall − the model load the CLI reports − the trace's elapsed_ms (node start, module load, argument parsing, output). ` +
        `The baseline build has the dataSync-in-tidy trace bug and no native products; what it costs depends on the machine (the issue measured 14.8 s on its machine).`,
      `Machine load: before ${before}; after ${loadLine()}.`,
    ],
  };
}

export const cliSection: Section = {
  name: 'cli',
  title: 'CLI trace end to end',
  expected: '~1 min on an idle 2-core machine (builds the baseline once, ~30 s)',
  run,
};
