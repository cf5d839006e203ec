/**
 * The one evaluation behind `factlens eval` and the engine's `eval/run`:
 *
 *  - **dataset mode** (a dataset and no `edits`): each CounterFact or zsRE record (JSON array
 *    or JSON lines; the format is recognised from the first record) is edited with `method`,
 *    measured and restored (eval/loop.ts);
 *  - **applied-edits mode** (`edits`, or no dataset): the edits already applied to the model
 *    are measured as CounterFact records, "pre" on the model without its edits and "post" on
 *    the model as it is: ES/EM on each edit's own prompt, and PS/NS over the paraphrase and
 *    neighbourhood prompts of the dataset's records with the same subject and new target, when
 *    a dataset is given. Nothing is edited or reverted.
 */
import * as path from 'node:path';
import { FactLensError } from '../errors.js';
import type { LoadedModel } from '../model/load.js';
import { listEdits } from '../edit/apply.js';
import type { EditRecord, RomeFormula } from '../edit/types.js';
import { predict } from '../predict.js';
import { uneditedView } from '../predict-batch.js';
import { recordRequests, summarizeEdit } from '../specificity/classify.js';
import type { AppliedEditSummary } from '../protocol/specificity.js';
import type { JobControl } from '../util/jobs.js';
import { readRegularText } from '../util/files.js';
import {
  evaluateCounterFact,
  isSkipped,
  measureCounterFact,
  parseCounterFactRecord,
  summarizeCounterFact,
  type CounterFactCase,
  type CounterFactRecord,
  type CounterFactResult,
} from './counterfact.js';
import { evaluateZsre, type ZsreCase, type ZsreResult } from './zsre.js';
import type { EditLoopOptions } from './loop.js';
import { wireMethod, type EvalMethod } from './methods.js';
import { fillTemplate } from '../../formats/template.js';

export type DatasetKind = 'counterfact' | 'zsre';

export function readDataset(file: string): unknown[] {
  // Only regular files (a FIFO would block the engine's request loop): engine/util/files.ts.
  const text = readRegularText(file, 'dataset');
  const trimmed = text.trim();
  if (trimmed.startsWith('[')) {
    let doc: unknown;
    try {
      doc = JSON.parse(trimmed);
    } catch (e) {
      // The position only, never the text: on a socket engine the client may not be allowed to read the file.
      const at = /position \d+|line \d+ column \d+/.exec((e as Error).message)?.[0];
      throw new FactLensError('INVALID_ARGUMENT', `dataset ${file} is not valid JSON${at ? ` (at ${at})` : ''}`, { file, field: 'dataset' });
    }
    if (!Array.isArray(doc)) throw new FactLensError('INVALID_ARGUMENT', `dataset ${file}: expected a JSON array of records`, { file, field: 'dataset' });
    return doc;
  }
  const out: unknown[] = [];
  trimmed.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    try {
      out.push(JSON.parse(line));
    } catch (e) {
      // A bad line becomes a bad record (skipped and reported), not a failed run.
      out.push({ __parseError: `line ${i + 1}: ${(e as Error).message}` });
    }
  });
  return out;
}

export function datasetKind(records: unknown[], file: string): DatasetKind {
  const first = records.find((r) => r && typeof r === 'object' && !('__parseError' in (r as object))) as Record<string, unknown> | undefined;
  if (first && 'requested_rewrite' in first) return 'counterfact';
  if (first && 'src' in first && 'answers' in first) return 'zsre';
  throw new FactLensError(
    'INVALID_ARGUMENT',
    `cannot tell the format of ${file}: expected CounterFact records (requested_rewrite, paraphrase_prompts, ...) or zsRE records (subject, src, rephrase, answers, loc, loc_ans)`,
    { file, field: 'dataset' },
  );
}

export interface EvaluationOptions {
  /** Dataset file (resolved against the working directory). */
  dataset?: string;
  /** The dataset's records when the caller has read them already (readDataset). */
  records?: unknown[];
  /** Evaluate these applied edits (ids); `[]` or absent with no dataset: every applied edit. */
  edits?: string[];
  method?: EvalMethod;
  limit?: number;
  batch?: number;
  layers?: number[];
  genEvery?: number;
  seed?: number;
  epsilon?: number;
  statsSamples?: number;
  formula?: RomeFormula;
  /** ROME/MEMIT v* overrides (clamp radius, steps). */
  hparams?: { clampNormFactor?: number; vNumGradSteps?: number; vStepGrowth?: number };
  /** ROME/MEMIT: AlphaEdit's null-space projection (engine/edit/nullspace.ts). */
  nullSpace?: boolean;
  /** CounterFact: stacked edits, measured after the last (eval/sequential.ts), with retention. */
  sequential?: boolean;
  perRecord?: boolean;
  /** Progress of the edits' own computations (statistics, v* steps), apart from the loop's. */
  editControl?: JobControl;
}

export type Evaluation =
  | { mode: 'dataset'; kind: DatasetKind; file: string; label: string; result: CounterFactResult | ZsreResult }
  | { mode: 'applied'; kind: 'counterfact'; file?: string; label: string; edits: AppliedEditSummary[]; result: CounterFactResult };

export async function runEvaluation(model: LoadedModel, o: EvaluationOptions, control: JobControl = {}): Promise<Evaluation> {
  const file = o.dataset ? path.resolve(o.dataset) : undefined;
  const records = o.records ?? (file ? readDataset(file) : undefined);
  if (o.edits !== undefined || !file) return evaluateApplied(model, o.edits, records, file);
  const kind = datasetKind(records!, file);
  const method = o.method ?? 'rome';
  const batch = o.batch ?? 1;
  const wiring = wireMethod(method, {
    layers: o.layers,
    epsilon: o.epsilon,
    batch,
    control: o.editControl ?? control,
    model,
    statsSamples: o.statsSamples,
    formula: o.formula,
    hparams: o.hparams,
    nullSpace: o.nullSpace,
  });
  const result =
    kind === 'counterfact'
      ? await evaluateCounterFact(
          model,
          records!,
          {
            ...(wiring.opts as EditLoopOptions<CounterFactCase>),
            batch,
            limit: o.limit,
            genEvery: o.genEvery,
            seed: o.seed,
            perRecord: o.perRecord,
            sequential: o.sequential,
          },
          control,
        )
      : await evaluateZsre(model, records!, { ...(wiring.opts as EditLoopOptions<ZsreCase>), batch, limit: o.limit, perRecord: o.perRecord }, control);
  return { mode: 'dataset', kind, file, label: wiring.label, result };
}

/** The dataset's CounterFact records by subject and new target, for an edit's paraphrases and neighbours. */
function recordIndex(records: unknown[] | undefined): Map<string, CounterFactRecord> {
  const map = new Map<string, CounterFactRecord>();
  for (const r of records ?? []) {
    const rw = (r as CounterFactRecord | null)?.requested_rewrite;
    if (rw && typeof rw.subject === 'string' && typeof rw.target_new?.str === 'string') map.set(`${rw.subject.trim()}\u0000${rw.target_new.str.trim()}`, r as CounterFactRecord);
  }
  return map;
}

async function evaluateApplied(model: LoadedModel, ids: string[] | undefined, records: unknown[] | undefined, file: string | undefined): Promise<Evaluation> {
  const applied = listEdits(model);
  let chosen: EditRecord[] = applied;
  if (ids?.length) {
    const missing = ids.filter((id) => !applied.some((r) => r.id === id));
    if (missing.length) {
      throw new FactLensError('INVALID_ARGUMENT', `edit ${missing[0]} is not applied to the model (applied: ${applied.map((r) => r.id).join(', ') || 'none'})`, {
        field: 'edits',
      });
    }
    chosen = applied.filter((r) => ids.includes(r.id));
  }
  if (!chosen.length) {
    throw new FactLensError('INVALID_ARGUMENT', 'no edit is applied to the model: apply one first, or give a dataset to edit and evaluate record by record', {
      field: ids === undefined ? 'dataset' : 'edits',
    });
  }
  const base = uneditedView(model);
  const byRecord = recordIndex(records);
  const cases: CounterFactCase[] = [];
  const skipped: CounterFactResult['skipped'] = [];
  for (const rec of chosen) {
    for (const q of recordRequests(rec)) {
      const index = cases.length + skipped.length;
      const match = byRecord.get(`${q.subject.trim()}\u0000${q.target.trim()}`);
      // The true object defaults to what the unedited model answers on the edit prompt.
      const filled = fillTemplate(q.prompt, q.subject);
      const targetTrue = q.targetTrue ?? match?.requested_rewrite.target_true.str ?? predict(base, filled, 1).top[0].token.trim();
      const raw: CounterFactRecord = {
        case_id: rec.id,
        requested_rewrite: { prompt: q.prompt, subject: q.subject, target_new: { str: q.target }, target_true: { str: targetTrue } },
        paraphrase_prompts: match?.paraphrase_prompts ?? [],
        neighborhood_prompts: match?.neighborhood_prompts ?? [],
      };
      const c = parseCounterFactRecord(raw, index, model);
      if (isSkipped(c)) skipped.push(c);
      else cases.push({ ...c, gen: false });
    }
  }
  const pre = measureCounterFact(base, cases).map((r) => r.metrics);
  const post = measureCounterFact(model, cases).map((r) => r.metrics);
  const sPre = summarizeCounterFact(pre);
  const sPost = summarizeCounterFact(post);
  const count = (k: 'PS' | 'NS') => pre.filter((m) => m[k] !== null).length;
  const result: CounterFactResult = {
    pre: sPre.metrics,
    post: sPost.metrics,
    n: cases.length,
    seconds_per_edit: 0,
    accuracy: { pre: sPre.accuracy, post: sPost.accuracy },
    counts: { records: cases.length, paraphrase: count('PS'), neighborhood: count('NS'), generation: 0 },
    skipped,
    restore_checks: 0,
  };
  return { mode: 'applied', kind: 'counterfact', file, label: `${chosen.length} applied edit${chosen.length === 1 ? '' : 's'}`, edits: chosen.map(summarizeEdit), result };
}

/** The JSON both `factlens eval --json` and `eval/run` answer (per-record rows are left out). */
export function evaluationSummary(e: Evaluation, model: LoadedModel, method: string): Record<string, unknown> {
  const { per_record: _perRecord, ...summary } = e.result as CounterFactResult & ZsreResult;
  return {
    method: e.mode === 'applied' ? 'applied' : method,
    mode: e.mode,
    ...(e.file ? { dataset: e.file } : {}),
    model: model.name,
    ...(e.mode === 'applied' ? { edits: e.edits } : {}),
    ...summary,
  };
}
