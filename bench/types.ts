/**
 * The section API of the benchmark harness. A section (bench/forward.ts, later causal tracing,
 * ROME edits, ...) is a named async function that measures something and returns plain data:
 * machine-readable rows for results.json and tables for RESULTS.md. bench/run.ts owns the
 * process, the machine description and the report files; a section only measures.
 *
 * Rules every section follows (machines are shared and noisy):
 *  - warm-up runs before timed runs; report best and median of N repeats;
 *  - compare against a baseline measured in the same process / run, as a ratio;
 *  - never assert on wall-clock time (a benchmark reports, it does not fail on slowness).
 */

export interface BenchOptions {
  /** Only these backends (undefined: every available one). */
  backends?: string[];
}

export interface BenchContext {
  options: BenchOptions;
  /** Progress line on stderr (never in the reports). */
  log(message: string): void;
}

/** A markdown table: `rows` are already formatted cells. */
export interface Table {
  title: string;
  columns: string[];
  rows: string[][];
  /** Paragraphs printed under the table. */
  notes?: string[];
}

export interface Skip {
  what: string;
  why: string;
}

export interface SectionResult {
  /** Machine-readable rows; each carries a `kind` naming its schema. */
  rows: Array<Record<string, unknown>>;
  tables: Table[];
  /** What was not measured and why (backend missing, too slow, ...). */
  skipped: Skip[];
  /** Method notes (formulas, what a ratio means) printed before the tables. */
  notes: string[];
}

export interface Section {
  /** CLI name: `npm run bench -- <name>`. */
  name: string;
  title: string;
  /** Rough wall-clock on a 2-core machine, shown by `--list`. */
  expected: string;
  run(ctx: BenchContext): Promise<SectionResult>;
}

/** A section's result as stored in results.json. */
export interface StoredSection extends SectionResult {
  name: string;
  title: string;
  /** ISO date the section ran. */
  ranAt: string;
  durationS: number;
  /** Set when the section threw; rows/tables hold whatever it had produced. */
  error?: string;
  /** Machine description of the run that produced this section. */
  machine: MachineInfo;
}

export interface MachineInfo {
  date: string;
  cpuModel: string;
  cores: number;
  cpuFlags: string[];
  totalMemGB: number;
  loadAvg: number[];
  /** Linux CPU pressure (PSI "some", %) at the start of the run: share of time runnable tasks waited for a CPU. */
  cpuPressure: { avg10: number; avg60: number; avg300: number } | null;
  platform: string;
  release: string;
  arch: string;
  node: string;
  tfjsCore: string;
  tfjsBackendWasm: string;
  gitCommit: string | null;
}

export interface ResultsFile {
  /** Machine of the most recent run. */
  machine: MachineInfo;
  sections: Record<string, StoredSection>;
}
