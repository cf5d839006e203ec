/**
 * `factlens edit --prompt "{} is located in the country of" --subject Paris --target Japan`:
 * computes one edit (ROME by default), applies it, and shows the new and true targets'
 * probabilities and greedy generations before and after, plus the edit's diagnostics.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { disposeModel } from '../../model/load.js';
import { applyEdit, checkSaveDestination, computeEdit, revertAllEdits, saveModel } from '../../edit/index.js';
import { greedyContinuations, probePrompts, type PromptProbe } from '../../edit/probe.js';
import { ROME_FORMULAS, type EditMethod, type EditRecord, type RomeFormula } from '../../edit/types.js';
import { intOption, layerListOption, UsageError, type OptionsSpec, type ParsedArgs } from '../args.js';
import { loadModelFromArgs, modelOptions, outputOptions, romeOverrides } from '../common.js';
import type { CommandIO } from '../types.js';
import { formatProb, showToken } from './predict.js';
import { formatChecks, readCheckFiles, runChecks } from '../check-files.js';
import { fillTemplate } from '../../../formats/template.js';

export const name = 'edit';
export const summary = 'rewrite a fact in the model (ROME) and compare before/after';
export const usage =
  'edit --prompt "<prompt with {}>" --subject S --target T [--target-true T] [--method rome] [--layer L] ' +
  '[--formula subject-keys|keys|consistent|reference] [--clamp F] [--v-steps N] [--v-step-growth F] [--null-space] [--check "<prompt>"]... [--check-file FILE]... [--save DIR [--force]] [--record FILE] [--model DIR] [--json]';
export const description =
  'The prompt marks the subject with "{}" (a prompt that contains the subject verbatim works too).\n' +
  'Shows P(target) and P(true target) (all target tokens, teacher forced) on the edit prompt and every\n' +
  '--check prompt, greedy generations before and after, the layer, k·u, ‖ΔW‖ and timings.\n' +
  'The true target defaults to the model\'s top next token before the edit.\n' +
  'The second-moment statistics (first edit at a layer: minutes on a large corpus) and the context\n' +
  'templates are cached under $FACTLENS_CACHE_DIR (default ~/.cache/factlens) and reused.\n' +
  '--save writes the edited model as a checkpoint folder (float32 safetensors) that --model reads; it\n' +
  'refuses the loaded model\'s folder (also through a symlink) and a folder that is not empty\n' +
  '(unless --force), checks this before computing, and verifies the folder by reading it back.\n' +
  '--check-file (a .prompts file, or CounterFact .json/.jsonl: rewrite, paraphrase and neighbourhood prompts)\n' +
  'compares the top-1 answer of every prompt before and after the edit: `related` when the prompt is about\n' +
  'the edited subject, `changed` when its top-1 token differs. With --json the result gains `checks`.';

export const options: OptionsSpec = {
  ...modelOptions,
  prompt: { type: 'string', short: 'p', valueName: 'TEXT', description: 'edit prompt, "{}" where the subject goes' },
  subject: { type: 'string', short: 's', valueName: 'TEXT', description: 'the subject' },
  target: { type: 'string', short: 't', valueName: 'TEXT', description: 'the new object' },
  'target-true': { type: 'string', valueName: 'TEXT', description: 'the true object (for reporting)' },
  method: { type: 'string', valueName: 'NAME', description: 'edit method', default: 'rome', choices: ['rome', 'memit', 'ft', 'ft-l'] },
  layer: { type: 'string', short: 'l', valueName: 'L', description: 'layer to edit, or layers for MEMIT (1,2,3) [default: the method\'s layers for the model]' },
  formula: {
    type: 'string',
    valueName: 'F',
    description: "ROME's update formula [default: subject-keys; consistent for the reference models]",
    choices: [...ROME_FORMULAS],
  },
  clamp: { type: 'string', valueName: 'F', description: "ROME v* clamp radius in units of ‖v₀‖ [default: the model's hyperparameters]" },
  'v-steps': { type: 'string', valueName: 'N', description: 'ROME v* optimisation steps [default: 20]' },
  'v-step-growth': { type: 'string', valueName: 'F', description: "ROME: when v* misses its target after --v-steps, retry once with F× the steps (1: no retry) [default: 2 without reference hyperparameters, else 1]" },
  'null-space': { type: 'boolean', description: "ROME/MEMIT: AlphaEdit's null-space projection of the update" },
  check: { type: 'string', short: 'c', multiple: true, valueName: 'PROMPT', description: 'another prompt to compare (repeatable)' },
  'check-file': { type: 'string', multiple: true, valueName: 'FILE', description: 'check every prompt of a .prompts or CounterFact .json file before/after (repeatable)' },
  corpus: { type: 'string', valueName: 'FILE', description: 'statistics corpus (.txt lines or .jsonl "text") [default: <model>/corpus.txt]' },
  'stats-samples': { type: 'string', valueName: 'N', description: 'documents for the statistics [default: the model\'s: 50·f tokens (f the MLP width) without reference hyperparameters; 100000 documents for the reference models (GPT-2 medium/large/XL, GPT-J)]' },
  'stats-npz': { type: 'string', valueName: 'FILE', description: 'import the reference implementation\'s mom2 .npz instead' },
  tokens: { type: 'string', valueName: 'N', description: 'greedy generation length', default: '20' },
  save: { type: 'string', valueName: 'DIR', description: 'save the edited model to this folder (a new or empty one)' },
  force: { type: 'boolean', description: 'with --save: replace the checkpoint files of a folder that is not empty' },
  record: { type: 'string', valueName: 'FILE', description: 'write the edit record (JSON) to this file' },
  ...outputOptions,
};

function requiredString(args: ParsedArgs, key: string): string {
  const v = args.values[key];
  if (typeof v !== 'string') throw new UsageError(`missing --${key}`, name);
  return v;
}

export async function run(args: ParsedArgs, io: CommandIO): Promise<number> {
  if (args.positionals.length) throw new UsageError(`unexpected argument '${args.positionals[0]}'; the prompt goes in --prompt`, name);
  const prompt = requiredString(args, 'prompt');
  const subject = requiredString(args, 'subject');
  const target = requiredString(args, 'target');
  const layers = layerListOption(args.values.layer, 'layer', args.values.method, name);
  const samples = args.values['stats-samples'] === undefined ? undefined : intOption(args.values['stats-samples'], 'stats-samples', 0, name);
  const tokens = intOption(args.values.tokens, 'tokens', 20, name, 0);
  const checks = (args.values.check as string[] | undefined) ?? [];
  const saveTo = typeof args.values.save === 'string' ? args.values.save : undefined;
  const force = args.values.force === true;
  if (force && saveTo === undefined) throw new UsageError('--force only applies to --save', name);
  // Read the check files before loading the model, so a bad file fails fast.
  const checkFiles = readCheckFiles((args.values['check-file'] as string[] | undefined) ?? [], io.log, name);
  const model = await loadModelFromArgs(args, io);
  try {
    // Refuse a bad destination now, not after minutes of computing.
    if (saveTo !== undefined) checkSaveDestination(model, saveTo, { force });
    const t0 = performance.now();
    const filled = fillTemplate(prompt, subject);
    const prompts = [filled, ...checks];
    // The true target defaults to the model's own top next token before the edit.
    const fields = {
      prompts: ['--prompt', ...checks.map((_, i) => `--check ${i + 1}`)],
      targets: ['--target', '--target-true'],
    };
    const top0 = probePrompts(model, [filled], [], fields)[0].top.token;
    const targetTrue = typeof args.values['target-true'] === 'string' ? args.values['target-true'] : top0.trim() || top0;
    if (target.trim() === targetTrue.trim()) {
      const whose = typeof args.values['target-true'] === 'string' ? 'the --target-true you gave' : "the model's answer now (its top next token)";
      throw new UsageError(`--target "${target.trim()}" is already ${whose} after ${JSON.stringify(filled)}: there is nothing to edit`, name);
    }
    const targets = [target, targetTrue];
    const before = probePrompts(model, prompts, targets, fields);
    const genBefore = tokens > 0 ? greedyContinuations(model, prompts, tokens) : [];
    // Progress lines: at most one a second, plus every change of phase.
    let lastPhase = '';
    let lastAt = 0;
    const record = await computeEdit(
      model,
      {
        prompt,
        subject,
        target,
        targetTrue,
        method: args.values.method as EditMethod,
        layers,
        formula: args.values.formula as RomeFormula | undefined,
        ...(args.values['null-space'] === true ? { nullSpace: true } : {}),
        corpus: typeof args.values.corpus === 'string' ? path.resolve(args.values.corpus) : undefined,
      },
      {
        onProgress: (f, msg) => {
          const phase = msg.split(':')[0];
          const now = Date.now();
          if (phase !== lastPhase || now - lastAt >= 1000 || f >= 1) {
            io.log(`${(f * 100).toFixed(0).padStart(3)}% ${msg}`);
            lastPhase = phase;
            lastAt = now;
          }
        },
      },
      {
        statsSamples: samples,
        hparams: romeOverrides(args, name),
        statsNpz: typeof args.values['stats-npz'] === 'string' ? path.resolve(args.values['stats-npz']) : undefined,
      },
    );
    applyEdit(model, record);
    const after = probePrompts(model, prompts, targets, fields);
    const genAfter = tokens > 0 ? greedyContinuations(model, prompts, tokens) : [];
    let saved: string | undefined;
    if (saveTo !== undefined) {
      const s = saveModel(model, saveTo, { force });
      saved = s.dir;
      io.log(`saved the edited model to ${s.dir} (${(s.bytes / 1e6).toFixed(1)} MB)`);
    }
    if (typeof args.values.record === 'string') {
      fs.writeFileSync(path.resolve(args.values.record), JSON.stringify(record, null, 1) + '\n');
    }
    const checked = checkFiles.length ? runChecks(model, checkFiles) : undefined;
    const totalSeconds = (performance.now() - t0) / 1000;
    const result = {
      took: record.took,
      ...(record.reason ? { reason: record.reason } : {}),
      model: model.name,
      backend: model.backend,
      method: record.method,
      layer: record.layers[record.layers.length - 1],
      layers: record.layers,
      layerSource: record.info.layer_source ?? record.info.layers_source,
      formula: record.info.formula,
      target: record.request.target,
      targetTrue,
      prompts: prompts.map((p, i) => ({
        prompt: p,
        before: { top: before[i].top, targets: before[i].targets },
        after: { top: after[i].top, targets: after[i].targets },
        generationBefore: genBefore[i],
        generationAfter: genAfter[i],
      })),
      kDotU: record.info.k_dot_u,
      deltaWNorm: record.info.delta_w_norm,
      timings: {
        stats: record.info.seconds_stats,
        statsCached: record.info.stats_cached === 1,
        templates: record.info.seconds_templates,
        vStar: record.info.seconds_v,
        edit: record.info.seconds_total,
        total: totalSeconds,
      },
      record,
      ...(saved ? { saved } : {}),
      ...(checked ? { checks: checked.rows } : {}),
    };
    io.stdout.write(
      args.values.json
        ? JSON.stringify(result, null, 2) + '\n'
        : formatEdit(record, prompts, before, after, genBefore, genAfter, totalSeconds, saved) +
            (checked ? `\n${formatChecks(checked.result, checked.rows)}` : ''),
    );
  } finally {
    revertAllEdits(model);
    disposeModel(model);
  }
  return 0;
}

const num = (x: unknown, digits = 3) => (typeof x === 'number' ? x.toPrecision(digits) : String(x));
const secs = (x: unknown) => (typeof x !== 'number' ? String(x) : x >= 10 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(2));

export function formatEdit(
  rec: EditRecord,
  prompts: string[],
  before: PromptProbe[],
  after: PromptProbe[],
  genBefore: string[],
  genAfter: string[],
  totalSeconds: number,
  saved?: string,
): string {
  const i = rec.info;
  const [tNew, tTrue] = before[0].targets.map((t) => t.target);
  const out: string[] = [];
  const where =
    rec.method === 'memit'
      ? `layers ${rec.layers.join(', ')} (${i.layers_source}), λ ${i.lambda}`
      : `layer ${rec.layers[0]} (${i.layer_source})${i.formula ? `, formula ${i.formula}` : ''}`;
  // The verdict first: did the edit take, and if not, why and what to try.
  if (rec.took !== undefined) {
    out.push(rec.took ? `TOOK: ${showToken(rec.request.target)} is now the answer to the edit prompt` : `DID NOT TAKE: ${rec.reason ?? ''}`);
  }
  out.push(`${rec.method.toUpperCase()} edit at ${where}: ${showToken(rec.request.subject)} → ${showToken(rec.request.target)}`);
  out.push('');
  // Each prompt's own top answer before and after comes right after the prompt.
  const top = (p: PromptProbe) => `${showToken(p.top.token)} ${formatProb(p.top.prob)}`;
  const header = ['prompt', 'top answer before', 'after', `P(${tNew}) before`, 'after', `P(${tTrue}) before`, 'after'];
  const rows = prompts.map((p, k) => [
    showToken(p),
    top(before[k]),
    top(after[k]),
    formatProb(before[k].targets[0].prob),
    formatProb(after[k].targets[0].prob),
    formatProb(before[k].targets[1].prob),
    formatProb(after[k].targets[1].prob),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const fmt = (r: string[]) => r.map((cell, c) => (c <= 2 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ').trimEnd();
  out.push(fmt(header), ...rows.map(fmt));
  if (genBefore.length) {
    out.push('');
    prompts.forEach((p, k) => {
      out.push(`${showToken(p)}`);
      out.push(`  before: ${showToken(genBefore[k])}`);
      out.push(`  after:  ${showToken(genAfter[k])}`);
    });
  }
  out.push('');
  if (rec.method === 'rome') {
    out.push(
      (i.keys_count !== undefined
        ? `each of the ${i.keys_count} update keys gets ${num(i.key_share_min, 3)}–${num(i.key_share_max, 3)} of δ, `
        : `k·u ${num(i.k_dot_u, 4)} (k̄·u ${num(i.k_bar_dot_u, 4)}, k_bare·u ${num(i.k_bare_dot_u, 4)}), `) +
        `‖ΔW‖ ${num(i.delta_w_norm, 4)}, ` +
        `v* loss ${num(i.loss_initial)} → ${num(i.loss_final)} in ${i.v_steps} steps (‖δ‖ ${num(i.delta_norm)}, ‖v₀‖ ${num(i.target_init_norm)})`,
    );
    out.push(
      `time: statistics ${secs(i.seconds_stats)} s (${i.stats_cached === 1 ? 'cached' : i.stats_cached === 0 ? `computed over ${i.stats_tokens} tokens` : 'not used'}), ` +
        `templates ${secs(i.seconds_templates)} s${i.templates_cached === 1 ? ' (cached)' : ''}, v* ${secs(i.seconds_v)} s, ` +
        `edit ${secs(i.seconds_total)} s, command ${secs(totalSeconds)} s`,
    );
  } else {
    out.push(Object.entries(i).map(([k, v]) => `${k} ${num(v)}`).join(', '));
  }
  if (saved) out.push(`saved to ${saved}`);
  return out.join('\n') + '\n';
}
