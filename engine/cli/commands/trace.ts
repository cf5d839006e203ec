/** `factlens trace "<prompt>" --subject "<text>"`: causal tracing of one prompt. */
import * as fs from 'node:fs';
import { disposeModel } from '../../model/load.js';
import { parseMarkedPrompt, trace, TRACE_KINDS, type TraceKind, type TraceOptions } from '../../trace/index.js';
import { FactLensError } from '../../errors.js';
import { intOption, listOption, numberOption, UsageError, type OptionsSpec, type ParsedArgs } from '../args.js';
import { loadModelFromArgs, modelOptions, outputOptions } from '../common.js';
import type { CommandIO } from '../types.js';
import { renderTrace } from '../heatmap.js';
import { readRegularText } from '../../util/files.js';

export const name = 'trace';
export const summary = 'causal trace: where in the network a prompt\'s answer is recalled';
export const usage =
  'trace "<prompt>" --subject "<text>" [--kind hidden,mlp,attn] [--samples N] [--noise 3sigma|<scale>] ' +
  '[--noise-file F] [--window N] [--seed N] [--expect "<answer>"] [--sever mlp,attn] [--naive] [--model DIR] [--json]';
export const description =
  'Corrupts the subject\'s token embeddings with Gaussian noise and restores clean activations one\n' +
  '(token, layer) at a time, measuring how much of the answer\'s probability each restoration brings\n' +
  'back (Meng et al. 2022). The subject may be marked in the prompt instead: "The capital of [France] is".';

export const options: OptionsSpec = {
  ...modelOptions,
  subject: { type: 'string', short: 's', valueName: 'TEXT', description: 'the subject (or mark it in the prompt with [brackets])' },
  kind: { type: 'string', valueName: 'KINDS', description: 'comma-separated: hidden, mlp, attn', default: 'hidden,mlp,attn' },
  samples: { type: 'string', valueName: 'N', description: 'corrupted samples', default: '10' },
  noise: { type: 'string', valueName: 'SCALE', description: "'3sigma' or a number", default: '3sigma' },
  'noise-file': { type: 'string', valueName: 'F', description: 'JSON [samples][subject tokens][width] of standard-normal values' },
  window: { type: 'string', valueName: 'N', description: 'restored MLP/attention layers per cell [default: 10/48 of depth, at least 2]' },
  seed: { type: 'string', valueName: 'N', description: 'noise seed', default: '1' },
  expect: { type: 'string', valueName: 'ANSWER', description: 'trace this answer instead of the greedy prediction' },
  sever: { type: 'string', valueName: 'KINDS', description: 'also trace hidden states with mlp and/or attn frozen (severed paths)' },
  naive: { type: 'boolean', description: 'use the naive full-forward method (reference; slow)' },
  ...outputOptions,
};

export async function run(args: ParsedArgs, io: CommandIO): Promise<number> {
  if (args.positionals.length !== 1) throw new UsageError('expected one quoted prompt', name);
  const marked = parseMarkedPrompt(args.positionals[0]);
  const subject = typeof args.values.subject === 'string' ? args.values.subject : marked.subject;
  if (!subject) throw new UsageError('no subject: pass --subject "<text>" or mark it in the prompt as [subject]', name);
  const kinds = listOption(args.values.kind ?? 'hidden,mlp,attn', 'kind', TRACE_KINDS, name) as TraceKind[];
  const noiseArg = String(args.values.noise ?? '3sigma');
  // The noise multiplies standard-normal draws in float32: beyond ~1e30 the corrupted
  // embeddings overflow, so far smaller scales are the only meaningful ones.
  const noise: TraceOptions['noise'] = noiseArg === '3sigma' ? '3sigma' : numberOption(noiseArg, 'noise', { min: 0, max: 1e6 }, name);
  let noiseValues: number[][][] | undefined;
  if (typeof args.values['noise-file'] === 'string') {
    const file = args.values['noise-file'];
    if (!fs.existsSync(file)) throw new FactLensError('FILE_MISSING', `noise file ${file} does not exist`, { file });
    try {
      const parsed = JSON.parse(readRegularText(file, 'noise-file')) as unknown;
      noiseValues = (Array.isArray(parsed) ? parsed : (parsed as { noise?: unknown }).noise) as number[][][];
    } catch (e) {
      throw new FactLensError('INVALID_ARGUMENT', `noise file ${file} is not valid JSON: ${(e as Error).message}`, { file });
    }
  }
  const sever = typeof args.values.sever === 'string' ? listOption(args.values.sever, 'sever', ['mlp', 'attn'] as const, name) : [];
  const samples = intOption(args.values.samples, 'samples', 10, name);
  const opts: TraceOptions = {
    subject,
    kinds,
    samples: noiseValues ? noiseValues.length : samples,
    noise,
    noiseValues,
    window: args.values.window === undefined ? undefined : intOption(args.values.window, 'window', 0, name),
    seed: intOption(args.values.seed, 'seed', 1, name, 0),
    expect: typeof args.values.expect === 'string' ? args.values.expect : undefined,
    sever,
    method: args.values.naive ? 'naive' : 'fast',
  };
  const model = await loadModelFromArgs(args, io);
  try {
    const result = await trace(model, marked.prompt, opts, {
      onProgress: (f, msg) => io.log(`${(f * 100).toFixed(0).padStart(3)}% ${msg}`),
    });
    if (args.values.json) io.stdout.write(JSON.stringify(result) + '\n');
    else {
      const color = io.env.NO_COLOR === undefined && (process.stdout as { isTTY?: boolean }).isTTY === true;
      io.stdout.write(renderTrace(result, color));
    }
  } finally {
    disposeModel(model);
  }
  return 0;
}
