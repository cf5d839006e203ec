/**
 * Benchmark harness: `npm run bench` runs every section; `npm run bench -- forward` runs the
 * named ones. Results go to bench/results.json (sections not run this time keep their earlier
 * results, each stamped with its own date and machine) and bench/RESULTS.md.
 *
 * Options:
 *   --backends=wasm,cpu   only these backends (default: every one that starts)
 *   --list                list the sections and exit
 *   --no-write            print the markdown instead of writing the report files
 */
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { SECTIONS } from './sections.js';
import { readResults, renderMarkdown, writeMarkdown, writeResultsJson } from './report.js';
import type { BenchContext, BenchOptions, ResultsFile, StoredSection } from './types.js';
import { machineInfo } from './util.js';

const RESULTS_JSON = path.join(__dirname, 'results.json');
const RESULTS_MD = path.join(__dirname, 'RESULTS.md');

function usage(): string {
  return [
    'usage: npm run bench -- [section ...] [--backends=a,b] [--list] [--no-write]',
    'sections:',
    ...SECTIONS.map((s) => `  ${s.name.padEnd(12)} ${s.title} (${s.expected})`),
  ].join('\n');
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const options: BenchOptions = {};
  let write = true;
  const names: string[] = [];
  for (const a of args) {
    if (a === '--list' || a === '--help' || a === '-h') {
      console.log(usage());
      return 0;
    } else if (a === '--no-write') write = false;
    else if (a.startsWith('--backends=')) options.backends = a.slice('--backends='.length).split(',').filter(Boolean);
    else if (a.startsWith('-')) {
      console.error(`unknown option ${a}\n${usage()}`);
      return 2;
    } else names.push(a);
  }
  const unknown = names.filter((n) => !SECTIONS.some((s) => s.name === n));
  if (unknown.length) {
    console.error(`unknown section(s): ${unknown.join(', ')}\n${usage()}`);
    return 2;
  }
  const selected = names.length ? SECTIONS.filter((s) => names.includes(s.name)) : SECTIONS;

  const machine = machineInfo();
  const t0 = performance.now();
  const log = (m: string) => console.error(`[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}`);
  const ctx: BenchContext = { options, log };
  const previous = readResults(RESULTS_JSON);
  const results: ResultsFile = { machine, sections: { ...(previous?.sections ?? {}) } };
  let failed = 0;

  for (const s of selected) {
    log(`section ${s.name}: ${s.title}`);
    const start = performance.now();
    const ranAt = new Date().toISOString();
    let stored: StoredSection;
    try {
      const r = await s.run(ctx);
      stored = { name: s.name, title: s.title, ranAt, durationS: (performance.now() - start) / 1000, machine, ...r };
    } catch (e) {
      failed++;
      const err = e as Error;
      log(`section ${s.name} failed: ${err.stack ?? err.message}`);
      stored = {
        name: s.name,
        title: s.title,
        ranAt,
        durationS: (performance.now() - start) / 1000,
        machine,
        rows: [],
        tables: [],
        skipped: [],
        notes: [],
        error: err.message,
      };
    }
    results.sections[s.name] = stored;
    log(`section ${s.name} done in ${stored.durationS.toFixed(0)} s`);
  }

  const order = SECTIONS.map((s) => s.name);
  if (write) {
    // Re-read before writing: another run may have stored other sections meanwhile (a long
    // section, e.g. xl, runs beside the short ones); only the sections run here are replaced.
    const latest = readResults(RESULTS_JSON);
    const ran = new Set(selected.map((s) => s.name));
    for (const [name, sec] of Object.entries(latest?.sections ?? {})) if (!ran.has(name)) results.sections[name] = sec;
    writeResultsJson(RESULTS_JSON, results);
    writeMarkdown(RESULTS_MD, results, order);
    log(`wrote ${path.relative(process.cwd(), RESULTS_JSON)} and ${path.relative(process.cwd(), RESULTS_MD)}`);
  } else {
    console.log(renderMarkdown(results, order));
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(e);
    process.exitCode = 1;
  },
);
