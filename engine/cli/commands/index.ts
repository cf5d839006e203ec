/**
 * The subcommand registry. To add `factlens <name>`: write `engine/cli/commands/<name>.ts`
 * exporting `name`, `summary`, `usage`, `options`, `run(args, io)` (and optionally
 * `description`), see ./predict.ts, then add one import and one entry below. The order here
 * is the order of `factlens --help`.
 */
import type { Command } from '../types.js';
import * as predict from './predict.js';
import * as trace from './trace.js';
import * as traceAvg from './trace-avg.js';
import * as edit from './edit.js';
import * as evalCmd from './eval.js';
import * as serve from './serve.js';
import * as version from './version.js';

export const COMMANDS: readonly Command[] = [
  predict,
  trace,
  traceAvg,
  edit,
  evalCmd,
  serve,
  version,
];

export function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}
