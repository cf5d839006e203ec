/**
 * The shape of a `factlens` subcommand. Each lives in `engine/cli/commands/<name>.ts`, exports
 * one `Command`, and is listed in `engine/cli/commands/index.ts`.
 */
import type { OptionsSpec, ParsedArgs } from './args.js';

export interface Output {
  write(text: string): unknown;
}

/** Where a command writes: results to stdout, progress and log lines to stderr. */
export interface CommandIO {
  stdout: Output;
  stderr: Output;
  env: NodeJS.ProcessEnv;
  /** A progress/log line on stderr (suppressed by --quiet). */
  log(line: string): void;
}

export interface Command {
  /** The word after `factlens`. */
  name: string;
  /** One line for `factlens --help`. */
  summary: string;
  /** The synopsis after `factlens`, e.g. `predict "<prompt>" [--top K]`. */
  usage: string;
  /** Optional paragraphs shown by `factlens help <name>` after the usage line. */
  description?: string;
  /** Options table, parsed with node:util parseArgs and shown in help. */
  options: OptionsSpec;
  /** Returns the exit code (0 when omitted). Throw UsageError for bad usage, FactLensError for bad input. */
  run(args: ParsedArgs, io: CommandIO): Promise<number | void> | number | void;
}
