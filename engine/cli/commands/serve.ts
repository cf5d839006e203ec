/**
 * `factlens serve`: the engine process the VS Code extension talks to (JSON-RPC 2.0 with
 * Content-Length framing, engine/protocol.ts). The same server as dist/engine/server.js.
 */
import { serve, serveConfig, serveOptions } from '../../server/main.js';
import type { ParsedArgs } from '../args.js';
import type { CommandIO } from '../types.js';

export const name = 'serve';
export const summary = 'run the engine process (JSON-RPC on stdio, or on a socket with --listen)';
export const usage = 'serve [--listen HOST:PORT [--token-file FILE]] [--backend NAME] [--model DIR] [--max-message-bytes N]';
export const description =
  'Speaks JSON-RPC 2.0 (vscode-jsonrpc framing) on stdin/stdout, or on a TCP socket with --listen.\n' +
  'A socket engine always needs a token, checked in initialize: FACTLENS_TOKEN, or --token-file FILE\n' +
  '(mode 0600; created with a new token when absent), or else a generated one written to a 0600 file\n' +
  'whose path is logged. Never on the command line (visible to every user). One failed attempt closes\n' +
  'the connection. Logs go to stderr. Methods and messages: engine/protocol/.';

export const options = serveOptions;

export async function run(args: ParsedArgs, io: CommandIO): Promise<number> {
  const cfg = serveConfig(args, io.env);
  const code = await serve(cfg, io.stderr);
  // The client is gone or asked to stop: leave even if a library keeps a handle open.
  setTimeout(() => process.exit(code), 200).unref();
  return code;
}
