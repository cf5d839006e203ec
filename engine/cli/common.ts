/** Options and helpers shared by the commands that load a model. */
import * as path from 'node:path';
import { loadModel, defaultModelDir, type LoadedModel } from '../model/load.js';
import { BACKEND_ORDER } from '../runtime/backend.js';
import { intOption, UsageError, type OptionsSpec, type ParsedArgs } from './args.js';
import type { CommandIO } from './types.js';

export const modelOptions: OptionsSpec = {
  model: {
    type: 'string',
    short: 'm',
    valueName: 'DIR',
    description: 'model folder (config.json + safetensors + tokenizer) [default: the embedded tinyworld model]',
  },
  backend: {
    type: 'string',
    short: 'b',
    valueName: 'NAME',
    description: 'compute backend; default: the first that starts, in this order',
    choices: BACKEND_ORDER,
  },
};

export const outputOptions: OptionsSpec = {
  json: { type: 'boolean', description: 'print the result as JSON on stdout' },
  quiet: { type: 'boolean', short: 'q', description: 'no progress lines on stderr' },
};

/** Loads the model named by --model/--backend, with a progress line on stderr. */
export async function loadModelFromArgs(args: ParsedArgs, io: CommandIO): Promise<LoadedModel> {
  const dir = typeof args.values.model === 'string' ? path.resolve(args.values.model) : defaultModelDir();
  const backend = typeof args.values.backend === 'string' ? args.values.backend : undefined;
  const t0 = Date.now();
  const m = await quietNativeProbe(() => loadModel({ dir, backend }), io.env);
  const params = m.parameterCount >= 1e6 ? `${(m.parameterCount / 1e6).toFixed(1)}M` : `${(m.parameterCount / 1e3).toFixed(0)}k`;
  io.log(`loaded ${m.name} (${params} parameters, ${m.config.nLayer} layers) on ${m.backend} in ${Date.now() - t0} ms`);
  return m;
}

/**
 * Warnings printed when @tensorflow/tfjs-node(-gpu) is installed but its native library is
 * missing: requiring it loads a second copy of tfjs-core and tfjs-backend-cpu (through
 * @tensorflow/tfjs) before the binding fails, and that copy re-registers ~400 kernels, one
 * warning each. The backend is then reported as unavailable anyway, so these lines are noise.
 */
const DUPLICATE_REGISTRATION = [
  /^The kernel '.*' for backend '.*' is already registered/,
  /^Platform .* has already been set\. Overwriting the platform/,
  /^.* backend was already registered\. Reusing existing backend factory/,
];

/** Runs `fn` (which may probe the native backends) without the duplicate-registration warnings. */
export async function quietNativeProbe<T>(fn: () => Promise<T>, env: NodeJS.ProcessEnv = process.env): Promise<T> {
  if (env.FACTLENS_DEBUG === '1') return fn();
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    const first = typeof args[0] === 'string' ? args[0] : '';
    if (!DUPLICATE_REGISTRATION.some((re) => re.test(first))) warn(...args);
  };
  try {
    return await fn();
  } finally {
    console.warn = warn;
  }
}

/** ROME v* overrides from --clamp / --v-steps / --v-step-growth (undefined when none is given). */
export function romeOverrides(args: ParsedArgs, command: string): { clampNormFactor?: number; vNumGradSteps?: number; vStepGrowth?: number } | undefined {
  const out: { clampNormFactor?: number; vNumGradSteps?: number; vStepGrowth?: number } = {};
  if (args.values.clamp !== undefined) {
    const x = Number(args.values.clamp);
    if (!Number.isFinite(x) || x <= 0) throw new UsageError(`--clamp needs a positive number, not '${args.values.clamp}'`, command);
    out.clampNormFactor = x;
  }
  if (args.values['v-steps'] !== undefined) out.vNumGradSteps = intOption(args.values['v-steps'], 'v-steps', 20, command);
  if (args.values['v-step-growth'] !== undefined) {
    const x = Number(args.values['v-step-growth']);
    if (!Number.isFinite(x) || x < 1) throw new UsageError(`--v-step-growth needs a number ≥ 1 (1: no retry), not '${args.values['v-step-growth']}'`, command);
    out.vStepGrowth = x;
  }
  return Object.keys(out).length ? out : undefined;
}
