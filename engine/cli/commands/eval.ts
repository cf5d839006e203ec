/**
 * `factlens eval --dataset FILE`: edit-and-measure evaluation on CounterFact or zsRE records
 * (rome-spec §3): metrics on the unedited model, then per record (or per --batch records)
 * edit, measure, restore (checked bit-identical).
 *
 * Methods: none (measure only), ft / ft-l (engine/edit/ft.ts), rome and memit through
 * engine/edit/index.ts's computeEdit when that method is registered there. Batched MEMIT
 * (--batch > 1) uses `computeEditBatch(model, requests, control)` from engine/edit/index.ts
 * once it exists; until then it is reported as not available.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { disposeModel } from '../../model/load.js';
import { DEFAULT_EPSILON } from '../../edit/ft.js';
import { METHODS, type EvalMethod } from '../../eval/methods.js';
import type { CounterFactResult } from '../../eval/counterfact.js';
import type { ZsreResult } from '../../eval/zsre.js';
import { datasetKind, evaluationSummary, readDataset, runEvaluation } from '../../eval/run.js';
import type { JobControl } from '../../util/jobs.js';
import { intOption, layerListOption, numberOption, UsageError, type OptionsSpec, type ParsedArgs } from '../args.js';
import { loadModelFromArgs, modelOptions, outputOptions, romeOverrides } from '../common.js';
import { ROME_FORMULAS, type RomeFormula } from '../../edit/types.js';
import type { CommandIO } from '../types.js';
import { readRegularText } from '../../util/files.js';

export const name = 'eval';
export const summary = 'evaluate an editing method on CounterFact or zsRE records (efficacy, generalisation, specificity, fluency)';
export const usage =
  'eval --dataset FILE [--method rome|memit|ft|ft-l|none] [--limit N] [--batch N] [--layer L|L1,L2,..] [--gen-every N] [--epsilon E] [--stats-samples N] [--formula subject-keys|keys|consistent|reference] [--clamp F] [--v-steps N] [--v-step-growth F] [--sequential] [--null-space] [--per-record FILE] [--model DIR] [--json]';
export const description =
  'For each record: metrics on the unedited model, compute and apply the edit, metrics again, restore\n' +
  '(verified bit-identical). With --batch N, N records are edited together (ROME/FT sequentially, MEMIT\n' +
  'at once), measured, and restored. CounterFact metrics (percent): ES/PS/NS (efficacy, paraphrase,\n' +
  'neighbourhood success), EM/PM/NM (their probability margins), S (harmonic mean of ES, PS, NS), GE\n' +
  '(n-gram entropy of generations, bits × 100). zsRE: Efficacy, Paraphrase, Specificity (token accuracy).\n' +
  'The dataset is a JSON array or JSON lines; the format is recognised from the first record.\n' +
  'Bad records are skipped and listed with their index.';

export { METHODS, type EvalMethod, wireMethod } from '../../eval/methods.js';

export const options: OptionsSpec = {
  ...modelOptions,
  dataset: { type: 'string', short: 'd', valueName: 'FILE', description: 'CounterFact or zsRE records (JSON array or JSON lines)' },
  method: { type: 'string', valueName: 'NAME', description: 'editing method', choices: METHODS, default: 'rome' },
  limit: { type: 'string', valueName: 'N', description: 'evaluate the first N records' },
  batch: { type: 'string', valueName: 'N', description: 'records edited together before measuring', default: '1' },
  layer: { type: 'string', valueName: 'L', description: 'edit layer, or layers for MEMIT (1,2,3) (default: the method\'s layers for the model)' },
  'stats-samples': { type: 'string', valueName: 'N', description: 'documents for ROME/MEMIT statistics [default: the model\'s: 50·f tokens (f the MLP width) without reference hyperparameters; 100000 documents for the reference models (GPT-2 medium/large/XL, GPT-J)]' },
  formula: { type: 'string', valueName: 'F', description: "ROME's update formula [default: subject-keys; consistent for the reference models]", choices: [...ROME_FORMULAS] },
  clamp: { type: 'string', valueName: 'F', description: "ROME/MEMIT v* clamp radius in units of ‖v₀‖ [default: the model's hyperparameters]" },
  'v-steps': { type: 'string', valueName: 'N', description: 'ROME/MEMIT v* optimisation steps [default: 20]' },
  'v-step-growth': { type: 'string', valueName: 'F', description: "ROME: when v* misses its target after --v-steps, retry once with F× the steps (1: no retry) [default: 2 without reference hyperparameters, else 1]" },
  'gen-every': { type: 'string', valueName: 'N', description: 'GE on every N-th record (0: skip the generation test)', default: '1' },
  epsilon: { type: 'string', valueName: 'E', description: `FT+L L∞ radius [default: the reference model's, else ${DEFAULT_EPSILON}]` },
  seed: { type: 'string', valueName: 'S', description: 'generation sampling seed', default: '0' },
  sequential: {
    type: 'boolean',
    description: "stacked edits: apply the records' edits one after another without restoring, then measure every record and the retention (greedy accuracy on 1,000 untouched facts of the model's facts.jsonl) before and after",
  },
  'null-space': { type: 'boolean', description: "ROME/MEMIT: AlphaEdit's null-space projection of each update (eigenvalues of the key statistics below 0.25 × their mean)" },
  'per-record': { type: 'string', valueName: 'FILE', description: 'also write per-record metrics, NLLs and generations as JSON' },
  ...outputOptions,
};

export { readDataset, datasetKind, type DatasetKind } from '../../eval/run.js';

function fmt(x: number | null | undefined, digits = 1): string {
  return x === null || x === undefined || Number.isNaN(x) ? '–' : x.toFixed(digits);
}

export function formatCounterFact(r: CounterFactResult, head: string): string {
  const keys = ['S', 'ES', 'PS', 'NS', 'EM', 'PM', 'NM', 'GE'] as const;
  const lines = [head, ''];
  lines.push(`| | ${keys.join(' | ')} |`, `|---|${keys.map(() => '---:').join('|')}|`);
  for (const which of ['pre', 'post'] as const) lines.push(`| ${which} | ${keys.map((k) => fmt(r[which][k])).join(' | ')} |`);
  lines.push('');
  lines.push(
    `exact-match accuracy (memit): rewrite ${fmt(r.accuracy.pre.rewrite_acc)} → ${fmt(r.accuracy.post.rewrite_acc)}, ` +
      `paraphrase ${fmt(r.accuracy.pre.paraphrase_acc)} → ${fmt(r.accuracy.post.paraphrase_acc)}, ` +
      `neighbourhood ${fmt(r.accuracy.pre.neighborhood_acc)} → ${fmt(r.accuracy.post.neighborhood_acc)}`,
  );
  lines.push(
    `${r.n} records; PS over ${r.counts.paraphrase}, NS over ${r.counts.neighborhood}, GE over ${r.counts.generation}; ` +
      `${fmt(r.seconds_per_edit, 2)} s per edit; ${r.restore_checks} restored tensors verified bit-identical`,
  );
  if (r.retention) {
    lines.push(
      `retention (greedy first-token accuracy on ${r.retention.facts} facts no edit touches): ` +
        `${fmt(r.retention.before)} before the first edit → ${fmt(r.retention.after)} after the last`,
    );
  }
  return lines.join('\n') + '\n' + formatSkipped(r.skipped);
}

export function formatZsre(r: ZsreResult, head: string): string {
  const keys = ['Efficacy', 'Paraphrase', 'Specificity'] as const;
  const lines = [head, ''];
  lines.push(`| | ${keys.join(' | ')} |`, `|---|${keys.map(() => '---:').join('|')}|`);
  for (const which of ['pre', 'post'] as const) lines.push(`| ${which} | ${keys.map((k) => fmt(r[which][k])).join(' | ')} |`);
  lines.push('', `${r.n} records; ${fmt(r.seconds_per_edit, 2)} s per edit; ${r.restore_checks} restored tensors verified bit-identical`);
  return lines.join('\n') + '\n' + formatSkipped(r.skipped);
}

function formatSkipped(s: Array<{ index: number; reason: string }>): string {
  if (!s.length) return '';
  const shown = s.slice(0, 20).map((x) => `  #${x.index}: ${x.reason}`);
  if (s.length > 20) shown.push(`  … and ${s.length - 20} more`);
  return `skipped ${s.length} record${s.length === 1 ? '' : 's'}:\n${shown.join('\n')}\n`;
}

function floatOption(v: unknown, opt: string): number | undefined {
  if (v === undefined) return undefined;
  return numberOption(v, opt, { positive: true }, name);
}

export async function run(args: ParsedArgs, io: CommandIO): Promise<number> {
  if (args.positionals.length) throw new UsageError(`unexpected argument '${args.positionals[0]}'`, name);
  if (typeof args.values.dataset !== 'string') throw new UsageError('missing --dataset FILE', name);
  const file = path.resolve(args.values.dataset);
  const method = String(args.values.method ?? 'rome') as EvalMethod;
  const limit = args.values.limit === undefined ? undefined : intOption(args.values.limit, 'limit', 0, name);
  const batch = intOption(args.values.batch, 'batch', 1, name);
  const genEvery = intOption(args.values['gen-every'], 'gen-every', 1, name, 0);
  const seed = intOption(args.values.seed, 'seed', 0, name, 0);
  const epsilon = floatOption(args.values.epsilon, 'epsilon');
  if (epsilon !== undefined && method !== 'ft-l') throw new UsageError('--epsilon applies to --method ft-l only', name);
  const records = readDataset(file);
  const kind = datasetKind(records, file);
  const model = await loadModelFromArgs(args, io);
  try {
    const layers = layerListOption(args.values.layer, 'layer', method, name);
    for (const layer of layers ?? []) {
      if (layer >= model.config.nLayer) throw new UsageError(`--layer ${layer} is outside the model's layers 0..${model.config.nLayer - 1}`, name);
    }
    const statsSamples = args.values['stats-samples'] === undefined ? undefined : intOption(args.values['stats-samples'], 'stats-samples', 0, name);
    // Edit-internal progress (statistics, v* steps, FT steps) only when it has been quiet a while.
    let lastLine = Date.now();
    const log = (line: string) => {
      lastLine = Date.now();
      io.log(line);
    };
    const editControl: JobControl = {
      onProgress: (f, msg) => {
        if (Date.now() - lastLine > 3000) log(`      ${msg}`);
      },
    };
    const sequential = args.values.sequential === true;
    if (sequential && method === 'none') throw new UsageError('--sequential needs an editing method', name);
    if (sequential && kind !== 'counterfact') throw new UsageError('--sequential is available for CounterFact records', name);
    const formula = args.values.formula as RomeFormula | undefined;
    if (formula !== undefined && method !== 'rome') throw new UsageError('--formula applies to --method rome only', name);
    const hparams = romeOverrides(args, name);
    if (hparams && method !== 'rome' && method !== 'memit') throw new UsageError('--clamp and --v-steps apply to --method rome or memit only', name);
    const nullSpace = args.values['null-space'] === true;
    if (nullSpace && method !== 'rome' && method !== 'memit') throw new UsageError('--null-space applies to --method rome or memit only', name);
    const control: JobControl = { onProgress: (f, msg) => log(`${(f * 100).toFixed(0).padStart(3)}% ${msg}`) };
    const perRecordFile = typeof args.values['per-record'] === 'string' ? path.resolve(args.values['per-record']) : undefined;
    // The engine's eval/run runs this same function.
    const ev = await runEvaluation(
      model,
      {
        dataset: file,
        records,
        method,
        limit,
        batch,
        layers,
        genEvery,
        seed,
        epsilon,
        statsSamples,
        formula,
        hparams,
        nullSpace,
        sequential,
        perRecord: !!perRecordFile,
        editControl,
      },
      control,
    );
    const r = ev.result;
    const head =
      `${kind === 'counterfact' ? 'CounterFact' : 'zsRE'} · ${path.basename(file)} · ${model.name} · ${ev.label}` +
      `${layers !== undefined ? ` · layer ${layers.join(',')}` : ''} · ${r.n} records${r.skipped.length ? ` (${r.skipped.length} skipped)` : ''} · ${r.seconds_per_edit.toFixed(2)} s/edit` +
      (sequential ? ` · sequential: ${r.n} stacked edits` : '');
    const text = kind === 'counterfact' ? formatCounterFact(r as CounterFactResult, head) : formatZsre(r as ZsreResult, head);
    const summary = evaluationSummary(ev, model, method);
    if (perRecordFile) fs.writeFileSync(perRecordFile, JSON.stringify({ ...summary, per_record: (r as CounterFactResult).per_record }, null, 1) + '\n');
    io.stdout.write(args.values.json ? JSON.stringify(summary) + '\n' : text);
  } finally {
    disposeModel(model);
  }
  return 0;
}
