/**
 * zsRE evaluation (rome-spec §3.5; the reference's dsets/zsre.py and eval_utils_zsre.py), for
 * records in the MEND split's format `{subject, src, rephrase, answers, loc, loc_ans}`.
 *
 * Request: prompt = src with the subject replaced by "{}", target_new = answers[0]
 * (target_true is the placeholder "<|endoftext|>", unused by the metrics).
 *
 * Metric: teacher-forced top-1 token accuracy. With t = tokens(" " + answers[0]), for each i
 * the string prompt + decode(t[:i]) is tokenized as a whole (as the reference does) and the
 * argmax of the next-token logits at its last token is compared with the FIRST token of
 * tokenize(decode(t[i])). Efficacy uses src, Paraphrase uses rephrase, and Specificity uses
 * `loc + "?" + decode(a[:i])` against decode(a[i]) for a = tokens(" " + loc_ans): the model's
 * own accuracy on an unrelated question, not "unchanged from before". Per record: the mean
 * over tokens; reported: the mean over records × 100.
 *
 * tinyworld has no zsRE set. `buildTinyworldZsre` writes one in this format from its facts
 * (for tests and demos; see its comment for how it differs from the real one).
 */
import * as fs from 'node:fs';
import type { LoadedModel } from '../model/load.js';
import type { EditRequest } from '../edit/types.js';
import { Job, type JobControl } from '../util/jobs.js';
import { Rng } from '../util/rng.js';
import { nextTokenArgmax } from './nll.js';
import { perRecordRows, runEditLoop, type EditLoopOptions, type EvalCase, type SkippedRecord } from './loop.js';
import { readRegularText } from '../util/files.js';
import { fillTemplate } from '../../formats/template.js';

export interface ZsreRecord {
  subject: string;
  src: string;
  rephrase: string;
  answers: string[];
  loc: string;
  loc_ans: string;
  case_id?: number | string;
}

export interface ZsreCase extends EvalCase {
  record: ZsreRecord;
  request: EditRequest;
  /** Rows (prompt ids) and expected next ids, per kind. */
  rewrite: Array<{ ids: number[]; target: number }>;
  paraphrase: Array<{ ids: number[]; target: number }>;
  neighborhood: Array<{ ids: number[]; target: number }>;
}

export interface ZsreRecordMetrics {
  /** Per-token correctness, as in the reference's `*_prompts_correct`. */
  rewrite: boolean[];
  paraphrase: boolean[];
  neighborhood: boolean[];
}

export interface ZsreMetrics {
  Efficacy: number;
  Paraphrase: number;
  Specificity: number;
}

export interface ZsreResult {
  pre: ZsreMetrics;
  post: ZsreMetrics;
  n: number;
  seconds_per_edit: number;
  skipped: SkippedRecord[];
  restore_checks: number;
  per_record?: Array<{ index: number; case_id?: number | string; edit_seconds: number; took?: boolean; reason?: string; pre: ZsreRecordMetrics; post: ZsreRecordMetrics }>;
}

export interface ZsreEvalOptions extends EditLoopOptions<ZsreCase> {
  limit?: number;
  perRecord?: boolean;
  /** Joins loc and the partial answer (default "?", as the reference). */
  locJoiner?: string;
}

/** Accepts a zsRE record; bad ones (missing fields, subject not in src, empty answer) are reported. */
export function parseZsreRecord(raw: unknown, index: number, model: LoadedModel, locJoiner = '?'): ZsreCase | SkippedRecord {
  const caseId =
    raw && typeof raw === 'object' && ['number', 'string'].includes(typeof (raw as { case_id?: unknown }).case_id)
      ? (raw as { case_id: number | string }).case_id
      : undefined;
  const bad = (reason: string): SkippedRecord => ({ index, ...(caseId !== undefined ? { case_id: caseId } : {}), reason });
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return bad('not a JSON object');
  const r = raw as Record<string, unknown>;
  if (typeof r.__parseError === 'string') return bad(`not valid JSON (${r.__parseError})`);
  for (const k of ['subject', 'src', 'rephrase', 'loc', 'loc_ans']) {
    if (typeof r[k] !== 'string' || (r[k] as string).trim().length === 0) return bad(`missing or empty ${k}`);
  }
  if (!Array.isArray(r.answers) || typeof r.answers[0] !== 'string' || r.answers[0].trim().length === 0) {
    return bad('missing or empty answers[0]');
  }
  const rec = r as unknown as ZsreRecord;
  if (!rec.src.includes(rec.subject)) return bad(`subject not in prompt: src ${JSON.stringify(rec.src)} does not contain ${JSON.stringify(rec.subject)}`);
  const tok = model.tokenizer;
  const prompt = rec.src.replace(rec.subject, '{}');
  const target = rec.answers[0];
  const targetToks = tok.encode(' ' + target);
  if (targetToks.length === 0) return bad('answers[0] has no tokens');
  const rows = (p: string, toks: number[]) =>
    toks.map((_, i) => {
      const ids = tok.encode(p + tok.decode(toks.slice(0, i)));
      const next = tok.encode(tok.decode([toks[i]]));
      return { ids, target: next[0] };
    });
  const locToks = tok.encode(' ' + rec.loc_ans);
  const out: ZsreCase = {
    index,
    caseId,
    record: rec,
    request: { prompt, subject: rec.subject, target, targetTrue: '<|endoftext|>' },
    rewrite: rows(fillTemplate(prompt, rec.subject), targetToks),
    paraphrase: rows(rec.rephrase, targetToks),
    neighborhood: rows(rec.loc + locJoiner, locToks),
  };
  for (const row of [...out.rewrite, ...out.paraphrase, ...out.neighborhood]) {
    if (row.ids.length === 0 || row.ids.length > model.config.nCtx) return bad(`a prompt is ${row.ids.length} tokens (context ${model.config.nCtx})`);
  }
  return out;
}

/** Token accuracies of several records, one batched pass per call. */
export function measureZsre(model: LoadedModel, cases: ZsreCase[]): ZsreRecordMetrics[] {
  const rows: number[][] = [];
  for (const c of cases) for (const k of ['rewrite', 'paraphrase', 'neighborhood'] as const) for (const r of c[k]) rows.push(r.ids);
  const am = nextTokenArgmax(model, rows);
  let i = 0;
  return cases.map((c) => {
    const m: ZsreRecordMetrics = { rewrite: [], paraphrase: [], neighborhood: [] };
    for (const k of ['rewrite', 'paraphrase', 'neighborhood'] as const) for (const r of c[k]) m[k].push(am[i++] === r.target);
    return m;
  });
}

const frac = (xs: boolean[]) => xs.filter(Boolean).length / xs.length;

export function summarizeZsre(rs: ZsreRecordMetrics[]): ZsreMetrics {
  const avg = (k: keyof ZsreRecordMetrics) => {
    const v = rs.filter((r) => r[k].length > 0).map((r) => frac(r[k]));
    return v.length ? (100 * v.reduce((a, x) => a + x, 0)) / v.length : NaN;
  };
  return { Efficacy: avg('rewrite'), Paraphrase: avg('paraphrase'), Specificity: avg('neighborhood') };
}

export async function evaluateZsre(model: LoadedModel, records: unknown[], opts: ZsreEvalOptions = {}, control: JobControl = {}): Promise<ZsreResult> {
  const job = new Job(control, 'zsRE evaluation');
  const skipped: SkippedRecord[] = [];
  const cases: ZsreCase[] = [];
  records.slice(0, opts.limit ?? records.length).forEach((raw, i) => {
    const c = parseZsreRecord(raw, i, model, opts.locJoiner ?? '?');
    if ((c as SkippedRecord).reason !== undefined) skipped.push(c as SkippedRecord);
    else cases.push(c as ZsreCase);
  });
  const loop = await runEditLoop(model, cases, measureZsre, opts, job, (d, t, c) =>
    c ? `record ${d + 1}/${t} (${c.request.subject} → ${c.request.target})` : `${t} records evaluated`,
  );
  const result: ZsreResult = {
    pre: summarizeZsre(loop.items.map((it) => it.pre)),
    post: summarizeZsre(loop.items.map((it) => it.post)),
    n: loop.items.length,
    seconds_per_edit: loop.secondsPerEdit,
    skipped: [...skipped, ...loop.skipped].sort((a, b) => a.index - b.index),
    restore_checks: loop.restoreChecks,
  };
  if (opts.perRecord) {
    result.per_record = perRecordRows(loop);
  }
  return result;
}

// ---------------------------------------------------------------------------------------
// a zsRE-format set from tinyworld's facts
// ---------------------------------------------------------------------------------------

interface Fact {
  relation_id: string;
  subject: string;
  object: string;
  prompt: string;
}

/**
 * A zsRE-format set from tinyworld's facts.jsonl and relations.json (tinyworld has no zsRE
 * set). For n facts spread over the file (seeded): src = the fact's prompt with the subject,
 * rephrase = another template of its relation, answers = [another object of the same
 * relation] (a counterfactual, like CounterFact's target_new: the real zsRE answers are true
 * answers that GPT-2 often does not know, but tinyworld knows 96% of its facts, so editing
 * toward the true object would test nothing), loc / loc_ans = an unrelated fact (another
 * relation) and its object. Differences from the real set: src/rephrase are statements, not
 * questions (tinyworld never saw questions), and loc has no "nq question:" prefix; pass
 * `locJoiner: ''` to evaluateZsre so "?" is not glued to a statement.
 */
export function buildTinyworldZsre(factsFile: string, relationsFile: string, opts: { n?: number; seed?: number } = {}): ZsreRecord[] {
  const facts = readRegularText(factsFile)
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Fact);
  const relations = JSON.parse(readRegularText(relationsFile)) as Record<string, { templates: string[] }>;
  const rng = new Rng(opts.seed ?? 0);
  const n = Math.min(opts.n ?? 50, facts.length);
  const objects = new Map<string, string[]>();
  for (const f of facts) {
    const list = objects.get(f.relation_id) ?? [];
    if (!list.includes(f.object)) list.push(f.object);
    objects.set(f.relation_id, list);
  }
  const out: ZsreRecord[] = [];
  const step = facts.length / n;
  for (let i = 0; i < n; i++) {
    const f = facts[Math.floor(i * step + rng.uniform() * step) % facts.length];
    const others = (objects.get(f.relation_id) ?? []).filter((o) => o !== f.object);
    const templates = relations[f.relation_id]?.templates ?? [f.prompt];
    const alt = templates.find((t) => t !== f.prompt) ?? f.prompt;
    let loc = facts[Math.floor(rng.uniform() * facts.length)];
    for (let tries = 0; tries < 20 && (loc.relation_id === f.relation_id || loc.subject === f.subject); tries++) {
      loc = facts[Math.floor(rng.uniform() * facts.length)];
    }
    if (others.length === 0) continue;
    out.push({
      case_id: out.length,
      subject: f.subject,
      src: fillTemplate(f.prompt, f.subject),
      rephrase: fillTemplate(alt, f.subject),
      answers: [others[Math.floor(rng.uniform() * others.length)]],
      loc: fillTemplate(loc.prompt, loc.subject),
      loc_ans: loc.object,
    });
  }
  return out;
}
