/**
 * The `factlens` command: global flags (--help, --version), then dispatch to a subcommand
 * from ./commands/index.ts. Results go to stdout, progress and errors to stderr.
 * Exit codes: 0 ok, 1 runtime error (bad model folder, backend failure, ...), 2 bad usage.
 *
 * Built by scripts/build.mjs into dist/engine/cli.js, which bin/factlens.js runs; from the
 * sources: `node --import tsx engine/cli/main.ts <args>`.
 */
import { FactLensError, isFactLensError } from '../errors.js';
import { formatOptions, parseCommandArgs, UsageError } from './args.js';
import { COMMANDS, findCommand } from './commands/index.js';
import { VERSION } from './commands/version.js';
import type { Command, CommandIO, Output } from './types.js';

export const EXIT_OK = 0;
export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;

const HELP_FLAGS = new Set(['-h', '--help']);
const VERSION_FLAGS = new Set(['-V', '--version']);

export function topHelp(): string {
  const w = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    `factlens ${VERSION}: locate and edit factual associations inside GPT-style language models`,
    '',
    'usage: factlens <command> [options]',
    '',
    'commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(w)}  ${c.summary}`),
    `  ${'help'.padEnd(w)}  show help for a command: factlens help <command>`,
    '',
    'options:',
    '  -h, --help     show this help',
    '  -V, --version  show the version, the compute backends and the default one',
    '',
    'environment:',
    '  FACTLENS_DEBUG=1  print stack traces with errors',
    '',
  ].join('\n');
}

export function commandHelp(cmd: Command): string {
  const description = cmd.description;
  return [
    `usage: factlens ${cmd.usage}`,
    '',
    ...(description ? [description, ''] : []),
    'options:',
    ...formatOptions({ ...cmd.options, help: { type: 'boolean', short: 'h', description: 'show this help' } }),
    '',
  ].join('\n');
}

function usageHint(command?: string): string {
  const cmd = command ? findCommand(command) : undefined;
  if (cmd) return `usage: factlens ${cmd.usage}\nRun 'factlens help ${cmd.name}' for the options.\n`;
  return `usage: factlens <command> [options]   (commands: ${COMMANDS.map((c) => c.name).join(', ')})\nRun 'factlens --help' for more.\n`;
}

/** Runs the CLI with `argv` (the arguments after `factlens`); returns the exit code. */
export async function main(argv: string[], out: { stdout: Output; stderr: Output; env?: NodeJS.ProcessEnv }): Promise<number> {
  const env = out.env ?? process.env;
  const debug = env.FACTLENS_DEBUG === '1';
  let quiet = false;
  const io: CommandIO = {
    stdout: out.stdout,
    stderr: out.stderr,
    env,
    log: (line) => {
      if (!quiet) out.stderr.write(line + '\n');
    },
  };
  try {
    const [first, ...rest] = argv;
    if (first === undefined) {
      io.stderr.write(topHelp());
      return EXIT_USAGE;
    }
    if (HELP_FLAGS.has(first)) {
      io.stdout.write(topHelp());
      return EXIT_OK;
    }
    if (first === 'help') {
      if (rest.length === 0) {
        io.stdout.write(topHelp());
        return EXIT_OK;
      }
      const cmd = findCommand(rest[0]);
      if (!cmd) throw new UsageError(`unknown command '${rest[0]}'`);
      io.stdout.write(commandHelp(cmd));
      return EXIT_OK;
    }
    let cmd: Command | undefined;
    let cmdArgs: string[];
    if (VERSION_FLAGS.has(first)) {
      cmd = findCommand('version')!;
      cmdArgs = rest;
    } else if (first.startsWith('-')) {
      throw new UsageError(`unknown option '${first}' (options go after the command)`);
    } else {
      cmd = findCommand(first);
      if (!cmd) throw new UsageError(`unknown command '${first}'`);
      cmdArgs = rest;
    }
    const dashDash = cmdArgs.indexOf('--');
    if (cmdArgs.slice(0, dashDash < 0 ? undefined : dashDash).some((a) => HELP_FLAGS.has(a))) {
      io.stdout.write(commandHelp(cmd));
      return EXIT_OK;
    }
    const args = parseCommandArgs(cmdArgs, cmd.options, cmd.name);
    quiet = args.values.quiet === true;
    const code = await cmd.run(args, io);
    return typeof code === 'number' ? code : EXIT_OK;
  } catch (e) {
    return reportError(e, io, debug);
  }
}

/** Prints an error the way a person can act on it; returns the exit code. */
export function reportError(e: unknown, io: CommandIO, debug = false): number {
  if (e instanceof UsageError) {
    io.stderr.write(`factlens: ${e.message}\n${usageHint(e.command)}`);
    if (debug) io.stderr.write(`${e.stack}\n`);
    return EXIT_USAGE;
  }
  if (isFactLensError(e)) {
    io.stderr.write(`factlens: ${e.message}\n${formatErrorData(e)}\n`);
    if (debug) io.stderr.write(`${e.stack}\n`);
    return e.code === 'INVALID_ARGUMENT' || e.code === 'PROMPT_TOO_LONG' ? EXIT_USAGE : EXIT_RUNTIME;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  io.stderr.write(`factlens: ${err.message}\n`);
  io.stderr.write(debug ? `${err.stack}\n` : '  (an internal error; set FACTLENS_DEBUG=1 to see the stack trace)\n');
  return EXIT_RUNTIME;
}

/** The second line of an error: its data fields (file, tensor, field, line, ...) and code. */
export function formatErrorData(e: FactLensError): string {
  const fields = Object.entries(e.data ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return `  ${[...fields, `code: ${e.code}`].join(', ')}`;
}

/** Entry point for bin/factlens.js: runs with the process's argv and streams, sets the exit code. */
export async function cli(argv: string[] = process.argv.slice(2)): Promise<number> {
  // `factlens predict ... | head -1`: a closed stdout is not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
  const code = await main(argv, { stdout: process.stdout, stderr: process.stderr, env: process.env });
  process.exitCode = code;
  return code;
}

if (require.main === module) void cli();
