/**
 * Argument parsing for the `factlens` command, on top of `node:util` parseArgs. Each command
 * declares its options once (type, short flag, value name, description, allowed values);
 * the same table drives parsing, validation and the help text.
 */
import { parseArgs } from 'node:util';

/** Bad command-line usage: printed with the command's usage line, exit code 2. */
export class UsageError extends Error {
  /** The command whose usage to show (undefined: the top-level usage). */
  readonly command?: string;
  constructor(message: string, command?: string) {
    super(message);
    this.name = 'UsageError';
    this.command = command;
  }
}

export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  multiple?: boolean;
  default?: string | boolean;
  /** Placeholder for the value in help, e.g. DIR, K, NAME. */
  valueName?: string;
  description: string;
  /** Allowed values of a string option; anything else is a usage error. */
  choices?: readonly string[];
}

export type OptionsSpec = Record<string, OptionSpec>;

export interface ParsedArgs {
  values: Record<string, string | boolean | string[] | boolean[] | undefined>;
  positionals: string[];
}

/** Parses `argv` against `options`; unknown options, missing values and bad choices throw UsageError. */
export function parseCommandArgs(argv: string[], options: OptionsSpec, command?: string): ParsedArgs {
  const config: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean; default?: string | boolean }> = {};
  for (const [name, o] of Object.entries(options)) {
    config[name] = { type: o.type };
    if (o.short) config[name].short = o.short;
    if (o.multiple) config[name].multiple = true;
    if (o.default !== undefined) config[name].default = o.default;
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options: config as never, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError(cleanParseError(e as Error & { code?: string }), command);
  }
  const values = parsed.values as ParsedArgs['values'];
  for (const [name, o] of Object.entries(options)) {
    const v = values[name];
    if (!o.choices || v === undefined) continue;
    for (const one of Array.isArray(v) ? v : [v]) {
      if (!o.choices.includes(String(one))) {
        throw new UsageError(`--${name} must be one of ${o.choices.join(', ')}, not '${one}'`, command);
      }
    }
  }
  return { values, positionals: parsed.positionals };
}

/** parseArgs messages mention internals ("To specify a positional argument ..."): keep the first sentence. */
function cleanParseError(e: Error & { code?: string }): string {
  const msg = e.message;
  const unknown = /^Unknown option '([^']+)'/.exec(msg);
  if (unknown) return `unknown option '${unknown[1]}'`;
  const missing = /^Option '([^']+)' argument missing/.exec(msg);
  if (missing) return `option '${missing[1].replace(/^-\w, /, '').replace(/ <value>$/, '')}' needs a value`;
  const noValue = /^Option '([^']+)' does not take an argument/.exec(msg);
  if (noValue) return `option '${noValue[1].replace(/^-\w, /, '')}' does not take a value`;
  return msg.split('. ')[0];
}

/** A positive integer option value, or a usage error naming the option. */
export function intOption(value: unknown, name: string, fallback: number, command?: string, min = 1): number {
  if (value === undefined) return fallback;
  const s = String(value);
  if (!/^\d+$/.test(s) || Number(s) < min || !Number.isSafeInteger(Number(s))) {
    throw new UsageError(`--${name} needs a whole number ≥ ${min}, not '${s}'`, command);
  }
  return Number(s);
}

/** A plain decimal number: digits, an optional fraction and exponent. No hex, no empty string, no Infinity. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * A number option value, strictly parsed: `Number()` would take '' as 0 and '0x10' as 16.
 * `min`/`max` bound it (inclusive); `positive` excludes 0.
 */
export function numberOption(value: unknown, name: string, opts: { min?: number; max?: number; positive?: boolean } = {}, command?: string): number {
  const s = String(value).trim();
  const x = Number(s);
  const range = `${opts.positive ? 'a positive number' : 'a number'}${opts.min !== undefined ? ` ≥ ${opts.min}` : ''}${opts.max !== undefined ? ` ≤ ${opts.max}` : ''}`;
  if (!DECIMAL.test(s) || !Number.isFinite(x) || (opts.positive && x <= 0) || (opts.min !== undefined && x < opts.min) || (opts.max !== undefined && x > opts.max)) {
    throw new UsageError(`--${name} needs ${range} (plain decimal), not '${String(value)}'`, command);
  }
  return x;
}

/** A comma-separated list of allowed values: at least one, no empty items, no repeats. */
export function listOption<T extends string>(value: unknown, name: string, choices: readonly T[], command?: string): T[] {
  const items = String(value).split(',').map((k) => k.trim());
  for (const k of items) {
    if (k === '') throw new UsageError(`--${name} has an empty item in '${String(value)}' (one or more of ${choices.join(', ')}, comma-separated)`, command);
    if (!choices.includes(k as T)) throw new UsageError(`--${name}: unknown value '${k}' (one or more of ${choices.join(', ')})`, command);
  }
  return [...new Set(items)] as T[];
}

/** A layer list: "3" or "1,2,3"; several layers only for MEMIT, the one method that edits several. */
export function layerListOption(value: unknown, name: string, method: unknown, command?: string): number[] | undefined {
  if (value === undefined) return undefined;
  const layers = String(value)
    .split(',')
    .map((x) => intOption(x.trim(), name, 0, command, 0));
  if (layers.length > 1 && method !== 'memit') {
    throw new UsageError(`--${name} takes one layer for ${method}; several are for --method memit`, command);
  }
  return layers;
}

/** Help lines for an options table, aligned. */
export function formatOptions(options: OptionsSpec): string[] {
  const rows = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? ` ${o.valueName ?? 'VALUE'}` : ''}`;
    let desc = o.description;
    if (o.choices) desc += ` (${o.choices.join(', ')})`;
    if (o.default !== undefined && o.default !== false) desc += ` [default: ${o.default}]`;
    return [flag, desc] as const;
  });
  const w = Math.max(0, ...rows.map(([f]) => f.length));
  return rows.map(([f, d]) => `  ${f.padEnd(w)}  ${d}`);
}
