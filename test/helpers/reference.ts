/**
 * Runs the independent eval-mode numpy GPT-2 reference (test/reference/gpt2_ref.py) from tests.
 *
 *   runReference('forward', {model_dir, cases: [{ids}]})   -> {cases: [{top10_ids, top10_logprobs,
 *       last_logits_first8, hidden_last_token_norms, hidden_last_token_first8}]}
 *   runReference('trace', {model_dir, ids, subject_range, noise, noise_scale, window, answer_id?,
 *       kinds?})  -> {answer_id, clean_prob, corrupted_prob, scores: {hidden, mlp, attn}}
 *
 * Results are cached per (mode, request) for the life of the process, so a test file that asks for
 * the tinyworld forward cases several times runs Python once. The interpreter is `python3` unless
 * FACTLENS_PYTHON names another; it must have numpy.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { TINYWORLD, TINYWORLD_GOLDEN, readJson } from './golden.js';

export const REFERENCE_SCRIPT = path.resolve(__dirname, '..', 'reference', 'gpt2_ref.py');
export const TINYWORLD_MODEL = path.join(TINYWORLD, 'model');

export type ReferenceMode = 'forward' | 'trace';

export interface ReferenceForwardCase {
  top10_ids: number[];
  top10_logprobs: number[];
  last_logits_first8: number[];
  hidden_last_token_norms: number[];
  hidden_last_token_first8: number[][];
}

export interface ReferenceTraceResult {
  answer_id: number;
  clean_prob: number;
  corrupted_prob: number;
  /** scores[kind][token][layer]; only the kinds requested (default all three). */
  scores: Partial<Record<'hidden' | 'mlp' | 'attn', number[][]>>;
}

/** A golden-eval.json `trace` record (only the fields the reference needs). */
export interface GoldenTraceRecord {
  ids: number[];
  subject_range: [number, number];
  noise: number[][][];
  window: number;
}

let pythonChecked: string | undefined;

/** The Python interpreter to use; throws a clear error if it is missing or lacks numpy. */
export function referencePython(): string {
  const py = process.env.FACTLENS_PYTHON || 'python3';
  if (pythonChecked === py) return py;
  const r = spawnSync(py, ['-c', 'import numpy, sys; print(numpy.__version__)'], { encoding: 'utf8' });
  if (r.error) {
    throw new Error(`reference: cannot run '${py}' (${r.error.message}); install Python 3 or set FACTLENS_PYTHON`);
  }
  if (r.status !== 0) {
    throw new Error(
      `reference: '${py}' has no numpy (pip install numpy, or set FACTLENS_PYTHON to a Python with numpy):\n${r.stderr}`,
    );
  }
  pythonChecked = py;
  return py;
}

/** Runs the reference script once; no caching. */
export function spawnReference(mode: ReferenceMode, request: unknown, timeoutMs = 600_000): Promise<any> {
  return new Promise((resolve, reject) => {
    let py: string;
    try {
      py = referencePython();
    } catch (e) {
      reject(e);
      return;
    }
    const child = spawn(py, [REFERENCE_SCRIPT, mode], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const timer = setTimeout(() => child.kill(), timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`reference: failed to start ${py}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code !== 0) {
        const why = signal ? `killed by ${signal}` : `exit code ${code}`;
        reject(new Error(`reference ${mode} failed (${why}):\n${Buffer.concat(err).toString('utf8')}`));
        return;
      }
      try {
        resolve(JSON.parse(Buffer.concat(out).toString('utf8')));
      } catch (e) {
        reject(new Error(`reference ${mode}: bad JSON on stdout: ${(e as Error).message}`));
      }
    });
    child.stdin.on('error', () => {}); // reported through 'close' with the script's stderr
    child.stdin.end(JSON.stringify(request));
  });
}

const cache = new Map<string, Promise<any>>();

/** Runs the reference (cached per mode + request). */
export function runReference(mode: ReferenceMode, request: unknown): Promise<any> {
  const key = `${mode}\u0000${JSON.stringify(request)}`;
  let p = cache.get(key);
  if (!p) {
    p = spawnReference(mode, request);
    cache.set(key, p);
    p.catch(() => cache.delete(key)); // do not cache failures
  }
  return p;
}

/** Eval-mode reference outputs for token-id cases (one Python run per distinct request). */
export async function referenceForward(modelDir: string, cases: Array<{ ids: number[] }>): Promise<ReferenceForwardCase[]> {
  const res = await runReference('forward', { model_dir: modelDir, cases: cases.map((c) => ({ ids: c.ids })) });
  return res.cases;
}

/** Eval-mode reference outputs for every tinyworld golden `forward` case, in golden order. */
export function tinyworldForwardReference(): Promise<ReferenceForwardCase[]> {
  const g = readJson<{ forward: Array<{ ids: number[] }> }>(TINYWORLD_GOLDEN);
  return referenceForward(TINYWORLD_MODEL, g.forward);
}

let goldenNoiseScale: number | undefined;

/**
 * Eval-mode causal trace of a tinyworld golden `trace` record: its ids, subject_range, noise and
 * window, with the goldens' noise_scale. By default the answer is the reference's own greedy
 * prediction (as the spec says); pass answerId (e.g. record.answer_id) to score a fixed token.
 */
export function referenceTrace(
  record: GoldenTraceRecord,
  opts: {
    answerId?: number;
    kinds?: Array<'hidden' | 'mlp' | 'attn'>;
    modelDir?: string;
    noiseScale?: number;
    window?: number;
  } = {},
): Promise<ReferenceTraceResult> {
  if (opts.noiseScale === undefined && goldenNoiseScale === undefined) {
    goldenNoiseScale = readJson<{ noise_scale: number }>(TINYWORLD_GOLDEN).noise_scale;
  }
  const request: Record<string, unknown> = {
    model_dir: opts.modelDir ?? TINYWORLD_MODEL,
    ids: record.ids,
    subject_range: record.subject_range,
    noise: record.noise,
    noise_scale: opts.noiseScale ?? goldenNoiseScale,
    window: opts.window ?? record.window,
  };
  if (opts.answerId !== undefined) request.answer_id = opts.answerId;
  if (opts.kinds) request.kinds = opts.kinds;
  return runReference('trace', request);
}
