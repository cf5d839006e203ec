/**
 * `factlens serve`: the engine process the VS Code extension talks to (JSON-RPC 2.0 with
 * Content-Length framing, engine/protocol.ts). The same server as dist/engine/server.js.
 */
import { serve, serveConfig, serveOptions } from '../../server/main.js';
import type { ParsedArgs } from '../args.js';
import type { CommandIO } from '../types.js';

export const name = 'serve';
export const summary = 'run the engine process (JSON-RPC on stdio, or on a socket with --listen)';
export const usage = 'serve [--listen HOST:PORT [--token TOKEN]] [--backend NAME] [--model DIR] [--max-message-bytes N]';
export const description =
  'Speaks JSON-RPC 2.0 (vscode-jsonrpc framing) on stdin/stdout, or on a TCP socket with --listen.\n' +
  'A socket engine checks the token (--token or FACTLENS_TOKEN) in every initialize request, and\n' +
  'refuses to listen on a non-loopback address without one (prefer FACTLENS_TOKEN: command lines\n' +
  'are visible to other users). Logs go to stderr. Methods and messages: engine/protocol.ts.';

export const options = serveOptions;

export async function run(args: ParsedArgs, io: CommandIO): Promise<number> {
  const cfg = serveConfig(args, io.env);
  const code = await serve(cfg, io.stderr);
  // The client is gone or asked to stop: leave even if a library keeps a handle open.
  setTimeout(() => process.exit(code), 200).unref();
  return code;
}
