/** Causal tracing: `trace` (one prompt) and `traceAverage` (the paper's average indirect effect). */
import { RequestType } from 'vscode-jsonrpc';
import type { EngineErrorData } from './errors.js';
import type { WithProgress } from './jobs.js';

export type TraceKind = 'hidden' | 'mlp' | 'attn';
export const TRACE_KINDS: readonly TraceKind[] = ['hidden', 'mlp', 'attn'];

export interface TraceOptions {
  /** Subject text (located by character overlap, rome-spec §1.4) or a token range [a, b). */
  subject?: string;
  subjectRange?: [number, number];
  kinds?: TraceKind[];
  /** Corrupted rows (default 10). */
  samples?: number;
  /** '3sigma' (default) or an explicit scale ν. */
  noise?: '3sigma' | number;
  /** Explicit standard-normal noise [samples][subject tokens][width]; multiplied by the scale. */
  noiseValues?: number[][][];
  /** Subjects whose token embeddings define σ for '3sigma' (default: the model's subject set). */
  noiseSubjects?: string[];
  /** Window of restored MLP/attention layers (default: windowForDepth). */
  window?: number;
  seed?: number;
  /** Expected answer; its first token is traced instead of the greedy prediction. */
  expect?: string;
  /** Severed-path variant (rome-spec §1.10): also trace hidden states with MLP or attention frozen. */
  sever?: Array<'mlp' | 'attn'>;
  /** 'fast' (default) reuses the corrupted run; 'naive' runs every restoration in full. */
  method?: 'fast' | 'naive';
}

export interface TraceAnswer {
  id: number;
  token: string;
  prob: number;
}

/** JSON has no NaN: a trace cell that is not computed arrives as null. */
/**
 * Whether a trace shows anything (engine/trace/quality.ts): 'meaningless' when the model does not
 * predict the expected answer or corrupting the subject does not lower p(answer); 'weak' when
 * the total effect is below 10 points, the corrupted runs still predict the answer, or the peak
 * indirect effect is within 2 standard errors of the samples' noise; otherwise 'ok'. `reasons`
 * says which checks failed, in words (the CLI prints them, the panel shows them in a banner).
 */
export interface TraceQuality {
  verdict: 'ok' | 'weak' | 'meaningless';
  reasons: string[];
  /** clean_prob − corrupted_prob. */
  total_effect: number;
  /** The largest indirect effect (score − corrupted_prob) of any kind, and its cell's standard error. */
  peak: { kind: TraceKind; token: number; layer: number; effect: number; stderr: number } | null;
  /**
   * [low, high] of the colour scale of every heatmap: from the corrupted p to the largest of the
   * peak score, the clean p and corrupted p + 0.1, so a trace that moves p by 0.01 is drawn
   * faint, never stretched over the whole ramp.
   */
  color_domain: [number, number];
}

export interface TraceResult {
  prompt: string;
  subject: string;
  ids: number[];
  tokens: string[];
  subject_range: [number, number];
  answer: TraceAnswer;
  answer_id: number;
  clean_prob: number;
  corrupted_prob: number;
  noise_scale: number;
  /** Where the noise scale came from (e.g. "3σ over 5,604 subjects of facts.jsonl"). */
  noise_source: string;
  samples: number;
  window: number;
  kinds: TraceKind[];
  /** scores[kind][token][layer]: mean p(answer) over corrupted rows with that restoration. */
  scores: Partial<Record<TraceKind, number[][]>>;
  /** stderr[kind][token][layer]: standard error of that mean across the samples (0 for one sample). */
  stderr: Partial<Record<TraceKind, number[][]>>;
  /** Standard error of corrupted_prob across the samples. */
  corrupted_stderr: number;
  quality: TraceQuality;
  /** Severed paths: scores of hidden restorations with MLP / attention frozen at token t. */
  severed?: Partial<Record<'mlp' | 'attn', number[][]>>;
  method: 'fast' | 'naive';
  backend: string;
  elapsed_ms: number;
  /** Token-layer block evaluations per corrupted row, this run vs the naive method. */
  work: { token_layers: number; naive_token_layers: number };
}

export interface TraceParams extends TraceOptions, WithProgress {
  prompt: string;
}
export const Trace = new RequestType<TraceParams, TraceResult, EngineErrorData>('trace');

export interface Fact {
  subject: string;
  /** Prompt with "{}" where the subject goes, or the full prompt. */
  prompt: string;
  /** The expected answer (object). */
  object: string;
  relation_id?: string;
}

export interface AverageOptions extends TraceOptions {
  limit?: number;
}

export interface AverageResult {
  kinds: TraceKind[];
  buckets: readonly string[];
  /** aie[kind][bucket][layer] = mean score − mean corrupted probability. */
  aie: Partial<Record<TraceKind, number[][]>>;
  /** Samples per bucket (a bucket may collect several tokens per prompt). */
  counts: number[];
  /** 95% half-width 1.96·std/√n per [kind][bucket][layer]. */
  ci95: Partial<Record<TraceKind, number[][]>>;
  facts_considered: number;
  facts_traced: number;
  facts_skipped: Array<{ line: number; subject: string; reason: string }>;
  avg_clean_prob: number;
  avg_corrupted_prob: number;
  /** Average total effect: mean clean − mean corrupted probability. */
  ate: number;
  peaks: Partial<Record<TraceKind, { bucket: string; layer: number; aie: number }>>;
  window: number;
  samples: number;
  noise_scale: number;
  backend: string;
  elapsed_ms: number;
}

export interface TraceAverageParams extends AverageOptions, WithProgress {
  /** Facts file on the engine's machine (JSON lines or a JSON array), default the model's facts.jsonl. */
  factsFile?: string;
  /** Or the facts themselves (then factsFile must be absent). */
  facts?: Fact[];
}
export const TraceAverage = new RequestType<TraceAverageParams, AverageResult, EngineErrorData>('traceAverage');
