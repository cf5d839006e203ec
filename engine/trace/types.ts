/** Causal tracing: options and result (the shape the CLI prints and the protocol carries). */

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
  /** Severed paths: scores of hidden restorations with MLP / attention frozen at token t. */
  severed?: Partial<Record<'mlp' | 'attn', number[][]>>;
  method: 'fast' | 'naive';
  backend: string;
  elapsed_ms: number;
  /** Token-layer block evaluations per corrupted row, this run vs the naive method. */
  work: { token_layers: number; naive_token_layers: number };
}

/**
 * Default window of restored MLP/attention layers: the paper restores 10 of GPT-2 XL's 48
 * layers; we keep that fraction of depth, rounded, and at least 2.
 */
export function windowForDepth(nLayer: number): number {
  return Math.max(2, Math.round((10 * nLayer) / 48));
}

/** Layers restored around centre l: [max(0, l − ⌊w/2⌋), min(L, l − ⌊w/2⌋ + w)) (reference code). */
export function windowLayers(l: number, window: number, nLayer: number): [number, number] {
  const lo = Math.max(0, l - Math.floor(window / 2));
  const hi = Math.min(nLayer, l - Math.floor(window / 2) + window);
  return [lo, hi];
}
