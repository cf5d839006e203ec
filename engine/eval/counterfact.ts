/**
 * CounterFact evaluation (rome-spec §3.1–3.4).
 *
 * Probability test: for the rewrite prompt (prompt with the subject), each paraphrase, each
 * neighbourhood and each attribute prompt, the teacher-forced NLL (mean over target tokens) of
 * " " + target_new and " " + target_true (eval/nll.ts; all prompts × both targets of a record
 * in one right-padded forward; both targets are read from one row when the shorter has one
 * token). With P = exp(−NLL):
 *
 *   ES = 1[P_new > P_true] on the rewrite prompt        EM = P_new − P_true there
 *   PS = mean over paraphrases of 1[P_new > P_true]     PM = mean of P_new − P_true
 *   NS = mean over neighbourhood of 1[P_true > P_new]   NM = mean of P_true − P_new
 *
 * per record, then the mean over records × 100; S = harmonic mean of the averaged ES, PS, NS
 * (0 if any of them is 0). Attribute-prompt NLLs are computed and kept per record but enter no
 * metric, as in the reference. Exact-match accuracy as the memit code (every target_new token
 * is the argmax for rewrite and paraphrase prompts, every target_true token for neighbourhood
 * prompts) is reported beside, under `accuracy`.
 *
 * A record without paraphrase or neighbourhood prompts (tinyworld has 15 of 1,000 with no
 * neighbourhood prompt) has no PS/PM or NS/NM; the averages are over the records that have
 * them (the reference would produce NaN), and `counts` says over how many.
 *
 * GE: one top-k (5) sample per generation prompt, 100 tokens including the prompt (capped at
 * the context), seeded per record (seed + record index) and identical before and after the
 * edit, then eval/ngram.ts's entropy; mean over the record's texts, mean over records, × 100.
 * `genEvery` = N measures GE on every N-th evaluated record only (MEMIT's
 * generation_test_interval; 0 = never). RS (TF-IDF consistency) needs the reference's
 * Wikipedia snippets and IDF table, which tinyworld does not have; it is not computed.
 */
import type { LoadedModel } from '../model/load.js';
import type { EditRequest } from '../edit/types.js';
import { Job, type JobControl } from '../util/jobs.js';
import { generateTexts } from './generation.js';
import { generationEntropy } from './ngram.js';
import { scoreItems, type ScoreItem } from './nll.js';
import { perRecordRows, runEditLoop, type EditLoopOptions, type EvalCase, type SkippedRecord } from './loop.js';
import { fillTemplate } from '../../formats/template.js';
import { retentionAccuracy, retentionSample } from './retention.js';
import { runSequentialLoop } from './sequential.js';

export type { SkippedRecord } from './loop.js';

/** A CounterFact record as in counterfact.json / multi_counterfact.json. */
export interface CounterFactRecord {
  case_id?: number | string;
  requested_rewrite: {
    prompt: string;
    subject: string;
    target_new: { str: string; id?: string };
    target_true: { str: string; id?: string };
    relation_id?: string;
  };
  paraphrase_prompts: string[];
  neighborhood_prompts: string[];
  attribute_prompts?: string[];
  generation_prompts?: string[];
}

/** A validated record, ready to edit and evaluate. */
export interface CounterFactCase extends EvalCase {
  record: CounterFactRecord;
  /** The edit request: prompt with "{}", subject, target = target_new, targetTrue. */
  request: EditRequest;
  rewritePrompt: string;
  targetNew: string;
  targetTrue: string;
  paraphrase: string[];
  neighborhood: string[];
  attribute: string[];
  generation: string[];
  /** Whether GE is measured on this record (set by the evaluator from genEvery). */
  gen?: boolean;
  /** Sampling seed of this record's generations. */
  seed?: number;
}

/** NLLs of both targets after one prompt. */
export interface PromptNll {
  prompt: string;
  new: number;
  true: number;
  /** Exact match (all tokens argmax) of target_new / target_true. */
  newExact: boolean;
  trueExact: boolean;
}

export interface CaseProbs {
  rewrite: PromptNll[];
  paraphrase: PromptNll[];
  neighborhood: PromptNll[];
  attribute: PromptNll[];
}

/** Per-record metrics as fractions (0..1; the magnitudes as probability differences). */
export interface RecordMetrics {
  ES: number;
  EM: number;
  PS: number | null;
  PM: number | null;
  NS: number | null;
  NM: number | null;
  GE: number | null;
  rewrite_acc: number;
  paraphrase_acc: number | null;
  neighborhood_acc: number | null;
}

/** The headline metrics, in percent (GE: bits × 100), averaged over records. */
export interface CounterFactMetrics {
  ES: number;
  PS: number;
  NS: number;
  EM: number;
  PM: number;
  NM: number;
  S: number;
  GE: number | null;
}

export interface AccuracyMetrics {
  rewrite_acc: number;
  paraphrase_acc: number;
  neighborhood_acc: number;
}

export interface RecordEval {
  metrics: RecordMetrics;
  probs: CaseProbs;
  texts?: string[];
}

export interface CounterFactResult {
  pre: CounterFactMetrics;
  post: CounterFactMetrics;
  n: number;
  seconds_per_edit: number;
  accuracy: { pre: AccuracyMetrics; post: AccuracyMetrics };
  /** Records the averages are over: all (ES/EM), with paraphrases, with neighbours, with GE. */
  counts: { records: number; paraphrase: number; neighborhood: number; generation: number };
  skipped: SkippedRecord[];
  /** Matrices/biases verified bit-identical after each restore. */
  restore_checks: number;
  /** Sequential runs: greedy first-token accuracy (%) on facts no edit touches, before the first edit and after the last. */
  retention?: { before: number; after: number; facts: number; file: string };
  sequential?: boolean;
  per_record?: Array<{
    index: number;
    case_id?: number | string;
    edit_seconds: number;
    /** The edit's verdict (engine/edit/verdict.ts): it took, or why not. */
    took?: boolean;
    reason?: string;
    edit_info?: Array<Record<string, number | string>>;
    pre: RecordEval;
    post: RecordEval;
  }>;
}

export interface CounterFactEvalOptions extends EditLoopOptions<CounterFactCase> {
  /** Evaluate only the first `limit` records of the input (bad ones among them are skipped). */
  limit?: number;
  /** GE on every N-th evaluated record (default 1; 0: never). */
  genEvery?: number;
  /** Tokens per generated text including the prompt (default 100, capped at the context). */
  genLength?: number;
  topK?: number;
  /** Base sampling seed (record i uses seed + i; default 0). */
  seed?: number;
  /** Keep per-record metrics, NLLs and generated texts in the result. */
  perRecord?: boolean;
  /**
   * Stacked edits (eval/sequential.ts): apply every record's edit in turn without restoring,
   * then measure all records on the final model, and the retention on untouched facts.
   */
  sequential?: boolean;
  /** Retention sample for sequential runs: facts file (default the model's facts.jsonl) and size (1,000). */
  retention?: { file?: string; n?: number };
}

// ---------------------------------------------------------------------------------------
// records
// ---------------------------------------------------------------------------------------

function str(x: unknown): string | null {
  return typeof x === 'string' ? x : null;
}

function targetStr(x: unknown): string | null {
  if (typeof x === 'string') return x;
  if (x && typeof x === 'object' && typeof (x as { str?: unknown }).str === 'string') return (x as { str: string }).str;
  return null;
}

function promptList(x: unknown, field: string, required: boolean): string[] | string {
  if (x === undefined || x === null) return required ? `missing ${field}` : [];
  if (!Array.isArray(x)) return `${field} is not a list`;
  const out: string[] = [];
  for (const [i, p] of x.entries()) {
    const s = typeof p === 'string' ? p : p && typeof p === 'object' ? str((p as { prompt?: unknown }).prompt) : null;
    if (s === null || s.trim().length === 0) return `${field}[${i}] is not a non-empty string`;
    out.push(s);
  }
  return out;
}

/**
 * Validates one record. Bad: not an object, no requested_rewrite, prompt without exactly one
 * "{}" (the subject's place), empty subject or targets, target_new equal to target_true,
 * missing or malformed paraphrase/neighbourhood lists, or (given the model) a prompt plus
 * target longer than the context.
 */
export function parseCounterFactRecord(raw: unknown, index: number, model?: LoadedModel): CounterFactCase | SkippedRecord {
  const caseId =
    raw && typeof raw === 'object' && (typeof (raw as { case_id?: unknown }).case_id === 'number' || typeof (raw as { case_id?: unknown }).case_id === 'string')
      ? (raw as { case_id: number | string }).case_id
      : undefined;
  const bad = (reason: string): SkippedRecord => ({ index, ...(caseId !== undefined ? { case_id: caseId } : {}), reason });
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return bad('not a JSON object');
  const r = raw as Record<string, unknown>;
  if (typeof r.__parseError === 'string') return bad(`not valid JSON (${r.__parseError})`);
  const rr = r.requested_rewrite as Record<string, unknown> | undefined;
  if (!rr || typeof rr !== 'object') return bad('missing requested_rewrite');
  const prompt = str(rr.prompt);
  if (prompt === null || prompt.trim().length === 0) return bad('missing requested_rewrite.prompt');
  const subject = str(rr.subject);
  if (subject === null || subject.trim().length === 0) return bad('missing or empty requested_rewrite.subject');
  const holes = prompt.split('{}').length - 1;
  if (holes !== 1) {
    return bad(
      holes === 0
        ? `subject not in prompt: requested_rewrite.prompt ${JSON.stringify(prompt)} has no "{}" where the subject goes`
        : `requested_rewrite.prompt has ${holes} "{}"; it needs exactly one`,
    );
  }
  const tNew = targetStr(rr.target_new);
  const tTrue = targetStr(rr.target_true);
  if (tNew === null || tNew.trim().length === 0) return bad('missing or empty requested_rewrite.target_new.str');
  if (tTrue === null || tTrue.trim().length === 0) return bad('missing or empty requested_rewrite.target_true.str');
  if (tNew.trim() === tTrue.trim()) return bad(`target_new equals target_true (${JSON.stringify(tNew)})`);
  const para = promptList(r.paraphrase_prompts, 'paraphrase_prompts', true);
  if (typeof para === 'string') return bad(para);
  const nb = promptList(r.neighborhood_prompts, 'neighborhood_prompts', true);
  if (typeof nb === 'string') return bad(nb);
  const attr = promptList(r.attribute_prompts, 'attribute_prompts', false);
  if (typeof attr === 'string') return bad(attr);
  const gen = promptList(r.generation_prompts, 'generation_prompts', false);
  if (typeof gen === 'string') return bad(gen);
  const rewritePrompt = fillTemplate(prompt, subject);
  const targetNew = tNew.trim();
  const targetTrue = tTrue.trim();
  if (model) {
    const n = model.config.nCtx;
    const tok = model.tokenizer;
    const tl = Math.max(tok.encode(' ' + targetNew).length, tok.encode(' ' + targetTrue).length);
    if (tl === 0) return bad('a target has no tokens');
    for (const p of [rewritePrompt, ...para, ...nb, ...attr]) {
      const len = tok.encode(p).length;
      if (len === 0) return bad(`prompt ${JSON.stringify(p)} has no tokens`);
      if (len + tl - 1 > n) return bad(`prompt ${JSON.stringify(p)} plus target is ${len + tl - 1} tokens; the context is ${n}`);
    }
  }
  return {
    index,
    caseId,
    record: raw as CounterFactRecord,
    request: { prompt, subject, target: targetNew, targetTrue },
    rewritePrompt,
    targetNew,
    targetTrue,
    paraphrase: para,
    neighborhood: nb,
    attribute: attr,
    generation: gen,
  };
}

export function isSkipped(x: CounterFactCase | SkippedRecord): x is SkippedRecord {
  return (x as SkippedRecord).reason !== undefined;
}

// ---------------------------------------------------------------------------------------
// measurements
// ---------------------------------------------------------------------------------------

/** Probability test for several records: every prompt × both targets, batched together. */
export function probabilityTest(model: LoadedModel, cases: CounterFactCase[]): CaseProbs[] {
  const tok = model.tokenizer;
  const items: ScoreItem[] = [];
  const layout: Array<{ kind: keyof CaseProbs; prompt: string }[]> = [];
  for (const c of cases) {
    const targets = [tok.encode(' ' + c.targetNew), tok.encode(' ' + c.targetTrue)];
    const mine: { kind: keyof CaseProbs; prompt: string }[] = [];
    const add = (kind: keyof CaseProbs, prompts: string[]) => {
      for (const p of prompts) {
        items.push({ prefix: tok.encode(p), targets });
        mine.push({ kind, prompt: p });
      }
    };
    add('rewrite', [c.rewritePrompt]);
    add('paraphrase', c.paraphrase);
    add('neighborhood', c.neighborhood);
    add('attribute', c.attribute);
    layout.push(mine);
  }
  const scores = scoreItems(model, items);
  let k = 0;
  return layout.map((mine) => {
    const p: CaseProbs = { rewrite: [], paraphrase: [], neighborhood: [], attribute: [] };
    for (const it of mine) {
      const [a, b] = scores[k++];
      p[it.kind].push({ prompt: it.prompt, new: a.nll, true: b.nll, newExact: a.allArgmax, trueExact: b.allArgmax });
    }
    return p;
  });
}

const mean = (xs: number[]): number | null => (xs.length ? xs.reduce((a, x) => a + x, 0) / xs.length : null);

/** Per-record metrics from the NLLs (and GE in bits, when measured). */
export function recordMetrics(p: CaseProbs, ge: number | null = null): RecordMetrics {
  const P = (nll: number) => Math.exp(-nll);
  const rw = p.rewrite[0];
  return {
    ES: rw.true > rw.new ? 1 : 0,
    EM: P(rw.new) - P(rw.true),
    PS: mean(p.paraphrase.map((x) => (x.true > x.new ? 1 : 0))),
    PM: mean(p.paraphrase.map((x) => P(x.new) - P(x.true))),
    NS: mean(p.neighborhood.map((x) => (x.true < x.new ? 1 : 0))),
    NM: mean(p.neighborhood.map((x) => P(x.true) - P(x.new))),
    GE: ge,
    rewrite_acc: rw.newExact ? 1 : 0,
    paraphrase_acc: mean(p.paraphrase.map((x) => (x.newExact ? 1 : 0))),
    neighborhood_acc: mean(p.neighborhood.map((x) => (x.trueExact ? 1 : 0))),
  };
}

/** Harmonic mean; 0 when any value is 0 (scipy's hmean convention), NaN when empty or any NaN. */
export function harmonicMean(xs: number[]): number {
  if (xs.length === 0 || xs.some((x) => Number.isNaN(x))) return NaN;
  if (xs.some((x) => x < 0)) throw new Error('harmonicMean: negative value');
  if (xs.some((x) => x === 0)) return 0;
  return xs.length / xs.reduce((a, x) => a + 1 / x, 0);
}

function avg100(rs: RecordMetrics[], key: keyof RecordMetrics): number {
  const v = rs.map((r) => r[key]).filter((x): x is number => x !== null);
  return v.length ? (100 * v.reduce((a, x) => a + x, 0)) / v.length : NaN;
}

/** Record-averaged metrics in percent; S from the averaged ES, PS, NS. */
export function summarizeCounterFact(rs: RecordMetrics[]): { metrics: CounterFactMetrics; accuracy: AccuracyMetrics } {
  const ES = avg100(rs, 'ES');
  const PS = avg100(rs, 'PS');
  const NS = avg100(rs, 'NS');
  const ge = avg100(rs, 'GE');
  return {
    metrics: {
      ES,
      PS,
      NS,
      EM: avg100(rs, 'EM'),
      PM: avg100(rs, 'PM'),
      NM: avg100(rs, 'NM'),
      S: harmonicMean([ES, PS, NS]),
      GE: Number.isNaN(ge) ? null : ge,
    },
    accuracy: {
      rewrite_acc: avg100(rs, 'rewrite_acc'),
      paraphrase_acc: avg100(rs, 'paraphrase_acc'),
      neighborhood_acc: avg100(rs, 'neighborhood_acc'),
    },
  };
}

export interface MeasureOptions {
  genLength?: number;
  topK?: number;
}

/** Probability test for the cases plus generations for those with `gen` set. */
export function measureCounterFact(model: LoadedModel, cases: CounterFactCase[], opts: MeasureOptions = {}): RecordEval[] {
  const probs = probabilityTest(model, cases);
  return cases.map((c, i) => {
    let texts: string[] | undefined;
    let ge: number | null = null;
    if (c.gen && c.generation.length) {
      texts = generateTexts(model, c.generation, { totalLength: opts.genLength ?? 100, topK: opts.topK ?? 5, seed: c.seed ?? c.index });
      ge = generationEntropy(texts);
    }
    return { metrics: recordMetrics(probs[i], ge), probs: probs[i], texts };
  });
}

// ---------------------------------------------------------------------------------------
// the evaluation
// ---------------------------------------------------------------------------------------

/**
 * Evaluates edits on CounterFact records: pre metrics on the current model, edit, post
 * metrics, restore (verified bit-identical), per record or per chunk of `batch` records (see
 * eval/loop.ts). Without `edit`/`editBatch` the model is only measured (post = pre).
 */
export async function evaluateCounterFact(
  model: LoadedModel,
  records: unknown[],
  opts: CounterFactEvalOptions = {},
  control: JobControl = {},
): Promise<CounterFactResult> {
  const job = new Job(control, 'CounterFact evaluation');
  const limit = opts.limit ?? records.length;
  const skipped: SkippedRecord[] = [];
  const cases: CounterFactCase[] = [];
  const genEvery = opts.genEvery ?? 1;
  const seed = opts.seed ?? 0;
  records.slice(0, limit).forEach((raw, i) => {
    const c = parseCounterFactRecord(raw, i, model);
    if (isSkipped(c)) skipped.push(c);
    else cases.push(c);
  });
  cases.forEach((c, k) => {
    c.gen = genEvery > 0 && k % genEvery === 0;
    c.seed = seed + c.index;
  });
  const m = { genLength: opts.genLength, topK: opts.topK };
  const describe = (d: number, t: number, c: CounterFactCase | null) =>
    c ? `record ${d + 1}/${t} (case ${c.caseId ?? c.index}: ${c.request.subject} → ${c.targetNew})` : `${t} records evaluated`;
  const measure = (mdl: LoadedModel, cs: CounterFactCase[]) => measureCounterFact(mdl, cs, m);
  let retention: CounterFactResult['retention'];
  let loop;
  if (opts.sequential) {
    const sample = retentionSample(model, cases.map((c) => c.request.subject), opts.retention);
    const r = { before: NaN, after: NaN, facts: sample.facts.length, file: sample.file };
    loop = await runSequentialLoop(model, cases, measure, opts, job, (phase) => (r[phase] = retentionAccuracy(model, sample.facts)), describe);
    retention = r;
  } else {
    loop = await runEditLoop(model, cases, measure, opts, job, describe);
  }
  const pre = summarizeCounterFact(loop.items.map((it) => it.pre.metrics));
  const post = summarizeCounterFact(loop.items.map((it) => it.post.metrics));
  const count = (k: keyof RecordMetrics) => loop.items.filter((it) => it.pre.metrics[k] !== null).length;
  const result: CounterFactResult = {
    pre: pre.metrics,
    post: post.metrics,
    n: loop.items.length,
    seconds_per_edit: loop.secondsPerEdit,
    accuracy: { pre: pre.accuracy, post: post.accuracy },
    counts: { records: loop.items.length, paraphrase: count('PS'), neighborhood: count('NS'), generation: count('GE') },
    skipped: [...skipped, ...loop.skipped].sort((a, b) => a.index - b.index),
    restore_checks: loop.restoreChecks,
    ...(opts.sequential ? { sequential: true, retention } : {}),
  };
  if (opts.perRecord) {
    result.per_record = perRecordRows(loop);
  }
  return result;
}
