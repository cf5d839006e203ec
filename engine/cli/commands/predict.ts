/**
 * `factlens predict "<prompt>"`: the most likely next tokens after a prompt.
 * A command module exports name, summary, usage, options and run (see ../types.ts).
 */
import { predict, type Prediction } from '../../predict.js';
import { disposeModel } from '../../model/load.js';
import { intOption, UsageError, type OptionsSpec, type ParsedArgs } from '../args.js';
import { loadModelFromArgs, modelOptions, outputOptions } from '../common.js';
import type { CommandIO } from '../types.js';

export const name = 'predict';
export const summary = 'show the most likely next tokens after a prompt';
export const usage = 'predict "<prompt>" [--model DIR] [--top K] [--backend NAME] [--json]';
export const description =
  'Runs the model once on the prompt and lists the top K next tokens with their probability.\n' +
  'Tokens are shown as JSON strings, so leading spaces are visible (" Paris").';

export const options: OptionsSpec = {
  ...modelOptions,
  top: { type: 'string', short: 'k', valueName: 'K', description: 'how many candidates to list', default: '10' },
  ...outputOptions,
};

export async function run(args: ParsedArgs, io: CommandIO): Promise<number> {
  if (args.positionals.length === 0) throw new UsageError('missing the prompt', name);
  if (args.positionals.length > 1) {
    throw new UsageError(
      `expected one prompt, got ${args.positionals.length} words; quote it: factlens predict "${args.positionals.join(' ')}"`,
      name,
    );
  }
  const prompt = args.positionals[0];
  if (prompt.length === 0) throw new UsageError('the prompt is empty', name);
  const k = intOption(args.values.top, 'top', 10, name);
  const model = await loadModelFromArgs(args, io);
  try {
    const result = predict(model, prompt, k);
    io.stdout.write(args.values.json ? JSON.stringify(result, null, 2) + '\n' : formatPrediction(result));
  } finally {
    disposeModel(model);
  }
  return 0;
}

/** A token as a JSON string: spaces, newlines and empty strings stay visible. */
export function showToken(text: string): string {
  return JSON.stringify(text);
}

export function formatProb(p: number): string {
  if (p >= 0.9995) return '100.0%';
  if (p >= 0.001) return `${(p * 100).toFixed(1)}%`;
  if (p >= 1e-6) return `${(p * 100).toFixed(4)}%`;
  return '<0.0001%';
}

/** The readable table: header, prompt tokens, then rank / token / prob / logprob columns. */
export function formatPrediction(r: Prediction): string {
  const lines: string[] = [];
  lines.push(`model ${r.model} · backend ${r.backend} · ${r.tokens.length} prompt token${r.tokens.length === 1 ? '' : 's'}`);
  lines.push(`prompt: ${r.tokens.map((t) => showToken(t.text)).join(' ')}`);
  lines.push('');
  const rows = r.top.map((c, i) => [String(i + 1), showToken(c.token), formatProb(c.prob), c.logprob.toFixed(4)]);
  const header = ['rank', 'token', 'prob', 'logprob'];
  const widths = header.map((h, col) => Math.max(h.length, ...rows.map((row) => row[col].length)));
  const alignRight = [true, false, true, true];
  const fmt = (row: string[]) =>
    row
      .map((cell, col) => (alignRight[col] ? cell.padStart(widths[col]) : cell.padEnd(widths[col])))
      .join('  ')
      .trimEnd();
  lines.push(fmt(header));
  for (const row of rows) lines.push(fmt(row));
  return lines.join('\n') + '\n';
}
