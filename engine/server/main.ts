/**
 * The engine process: `factlens serve` and dist/engine/server.js (which the client spawns).
 *
 *   serve                          JSON-RPC on stdin/stdout (one client: the process that spawned it)
 *   serve --listen HOST:PORT       JSON-RPC on a TCP socket, any number of clients; every client
 *                                  needs the token (FACTLENS_TOKEN, --token-file, or a generated one:
 *                                  see token.ts)
 *
 * Logs go to stderr. The process never exits because of a request: protocol errors, engine
 * errors and even uncaught exceptions are logged and the engine keeps serving. A stdio engine
 * exits when its client closes stdin or sends `shutdown`; a socket engine on SIGINT/SIGTERM.
 *
 * From the sources: `node --import tsx engine/server/main.ts [options]`.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { Worker } from 'node:worker_threads';
import { parseCommandArgs, intOption, UsageError, type OptionsSpec, type ParsedArgs } from '../cli/args.js';
import { BACKEND_ORDER, type BackendName } from '../runtime/backend.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../protocol.js';
import { Engine, ENGINE_VERSION } from './core.js';
import { socketToken } from './token.js';
import { loadModel } from '../model/load.js';

/** Socket connections that may wait to authenticate at once; more are closed on arrival. */
const MAX_PENDING_CONNECTIONS = 16;

export const serveOptions: OptionsSpec = {
  listen: {
    type: 'string',
    valueName: 'HOST:PORT',
    description: 'serve on a TCP socket instead of stdio (port 0: any free port, printed on stderr)',
  },
  token: {
    type: 'string',
    valueName: 'TOKEN',
    description: 'not accepted: a command line is visible to every user; use FACTLENS_TOKEN or --token-file',
  },
  'token-file': {
    type: 'string',
    valueName: 'FILE',
    description: 'socket token file (0600; created with a new token if absent) [default: FACTLENS_TOKEN, else a generated token]',
  },
  'max-message-bytes': {
    type: 'string',
    valueName: 'N',
    description: `largest message accepted, in bytes [default: ${DEFAULT_MAX_MESSAGE_BYTES}]`,
  },
  backend: {
    type: 'string',
    short: 'b',
    valueName: 'NAME',
    description: 'backend for model/load requests that name none; default: the first that starts',
    choices: BACKEND_ORDER,
  },
  model: {
    type: 'string',
    short: 'm',
    valueName: 'DIR',
    description: 'load this model folder at start (clients may still send model/load)',
  },
  preload: { type: 'boolean', description: 'load the embedded model at start (when --model is not given)' },
};

export interface ServeConfig {
  listen?: { host: string; port: number };
  token?: string;
  /** Where the token came from (logged; the token never is, except once to a terminal). */
  tokenSource?: string;
  /** A generated token's file, removed on exit. */
  tokenFile?: string;
  maxMessageBytes: number;
  backend?: BackendName;
  model?: string;
  preload?: boolean;
}

/** Parses HOST:PORT, [v6]:PORT or :PORT (loopback). */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--listen needs HOST:PORT (e.g. 127.0.0.1:7077), not '${s}'`, 'serve');
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}

export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::ffff:127.0.0.1';
}

export function serveConfig(args: ParsedArgs, env: NodeJS.ProcessEnv): ServeConfig {
  if (args.positionals.length) throw new UsageError(`unexpected argument '${args.positionals[0]}'`, 'serve');
  const listen = typeof args.values.listen === 'string' ? parseListen(args.values.listen) : undefined;
  if (args.values.token !== undefined) {
    throw new UsageError(
      '--token is not accepted: a command line is visible to every user of this machine (ps); ' +
        'set FACTLENS_TOKEN or use --token-file FILE (or give neither: the engine generates a token)',
      'serve',
    );
  }
  if (!listen && args.values['token-file'] !== undefined) throw new UsageError('--token-file only applies to --listen', 'serve');
  const tok = listen ? socketToken(args.values['token-file'] as string | undefined, env) : undefined;
  const maxMessageBytes = intOption(args.values['max-message-bytes'], 'max-message-bytes', DEFAULT_MAX_MESSAGE_BYTES, 'serve', 1024);
  return {
    listen,
    token: tok?.token,
    tokenSource: tok?.source,
    tokenFile: tok?.generatedFile,
    maxMessageBytes,
    backend: args.values.backend as BackendName | undefined,
    model: typeof args.values.model === 'string' ? args.values.model : undefined,
    preload: args.values.preload === true,
  };
}

const stamp = () => new Date().toISOString().slice(11, 23);

/**
 * Runs the engine until it is told to stop. Resolves with the exit code (stdio: when the
 * client goes away or shuts it down; socket: on SIGINT/SIGTERM).
 */
export async function serve(cfg: ServeConfig, stderr: { write(s: string): unknown } = process.stderr): Promise<number> {
  const log = (line: string) => {
    try {
      stderr.write(`[engine ${stamp()}] ${line}\n`);
    } catch {
      /* stderr gone */
    }
  };
  protectProcess(log, !cfg.listen);

  let finish!: (code: number) => void;
  const done = new Promise<number>((resolve) => (finish = resolve));

  const engine = new Engine({
    maxMessageBytes: cfg.maxMessageBytes,
    token: cfg.listen ? cfg.token : undefined,
    preferredBackend: cfg.backend,
    log,
  });
  log(`factlens engine ${ENGINE_VERSION} (pid ${process.pid}, node ${process.version}) starting`);

  if (cfg.model || cfg.preload) {
    // Loaded in the background; requests meanwhile see no model (or wait for it in the queue).
    engine.queue
      .submit({
        method: 'model/load',
        owner: { connection: 'engine', client: 'factlens serve' },
        summary: cfg.model ?? 'tinyworld (embedded)',
        exclusive: true,
        run: async () => {
          engine.model = await loadModel({ dir: cfg.model, backend: cfg.backend });
          engine.loadedAt = new Date();
          log(`preloaded ${engine.model.name} on ${engine.model.backend}`);
        },
      })
      .result.catch((e) => log(`could not preload the model: ${(e as Error).message}`));
  }

  if (!cfg.listen) {
    let ended = false;
    const end = (code: number) => {
      if (ended) return;
      ended = true;
      log('stdio client gone; exiting');
      finish(code);
    };
    process.stdout.on('error', () => end(0));
    engine.attach(process.stdin, process.stdout, 'stdio', 'stdio', () => end(0));
    watchParent(log);
    process.stdin.resume();
    const onSignal = (sig: string) => {
      log(`${sig}; exiting`);
      end(0);
    };
    process.once('SIGINT', () => onSignal('SIGINT'));
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    return done;
  }

  const { host, port } = cfg.listen;
  const server = net.createServer((socket) => {
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    // Connections that have not authenticated yet are capped: each costs a session and a timer.
    const pending = [...engine.sessions.values()].filter((x) => !x.initialized).length;
    if (pending >= MAX_PENDING_CONNECTIONS) {
      log(`refused ${remote}: ${pending} connections are already waiting to authenticate`);
      socket.destroy();
      return;
    }
    socket.setNoDelay(true);
    socket.on('error', (e) => log(`socket ${remote}: ${e.message}`));
    // end(): the last reply (e.g. UNAUTHORIZED) is flushed before the connection goes.
    const s = engine.attach(socket, socket, 'socket', remote, () => {
      socket.end();
      setTimeout(() => socket.destroy(), 1000).unref();
    });
    log(`${s.id}: connected from ${remote}`);
    socket.on('close', () => s.close());
  });
  server.on('error', (e) => {
    log(`cannot listen on ${host}:${port}: ${e.message}`);
    finish(1);
  });
  server.listen(port, host, () => {
    const a = server.address() as net.AddressInfo;
    const shown = a.family === 'IPv6' || a.address.includes(':') ? `[${a.address}]` : a.address;
    log(`listening on ${shown}:${a.port} (token required: from ${cfg.tokenSource})`);
    // A generated token is shown once, and only to a person at a terminal (never to a log file).
    if (cfg.tokenFile && (process.stderr as { isTTY?: boolean }).isTTY) log(`token: ${cfg.token}`);
  });
  const stop = (sig: string) => {
    log(`${sig}; closing ${engine.sessions.size} connection(s) and exiting`);
    for (const s of [...engine.sessions.values()]) s.close();
    server.close();
    if (cfg.tokenFile) fs.rmSync(cfg.tokenFile, { force: true });
    finish(0);
  };
  process.once('SIGINT', () => stop('SIGINT'));
  process.once('SIGTERM', () => stop('SIGTERM'));
  return done;
}

/**
 * A stdio engine whose client died must not live on. Normally stdin closes and the engine
 * exits; but while a job computes synchronously the event loop cannot see that, and a job
 * stuck in a loop would leave an orphan spinning forever. A small worker thread (its own
 * event loop) checks every 2 s whether the parent process is gone (we were re-parented) and
 * then ends the process.
 */
function watchParent(log: (line: string) => void): void {
  try {
    const worker = new Worker(
      `const { workerData } = require('node:worker_threads');
       setInterval(() => {
         if (process.ppid !== workerData.ppid) process.kill(workerData.pid, 'SIGKILL');
       }, 2000);`,
      { eval: true, execArgv: [], workerData: { ppid: process.ppid, pid: process.pid } },
    );
    worker.on('error', (e) => log(`parent watchdog stopped: ${e.message}`));
    worker.unref();
  } catch (e) {
    log(`no parent watchdog: ${(e as Error).message}`);
  }
}

let protectedAlready = false;

/**
 * The engine must not die of a bug in one request: uncaught exceptions and unhandled
 * rejections are logged and serving goes on. In stdio mode stdout carries the protocol, so
 * console.log / console.info (from any library) are sent to stderr instead.
 */
function protectProcess(log: (line: string) => void, stdio: boolean): void {
  if (protectedAlready) return;
  protectedAlready = true;
  process.on('uncaughtException', (e) => log(`uncaught exception (still serving): ${e?.stack ?? e}`));
  process.on('unhandledRejection', (e) => log(`unhandled rejection (still serving): ${(e as Error)?.stack ?? e}`));
  if (stdio) {
    const toStderr = (...args: unknown[]) => console.error(...args);
    console.log = toStderr;
    console.info = toStderr;
    console.debug = toStderr;
  }
}

/** Entry point of dist/engine/server.js. */
export async function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  let cfg: ServeConfig;
  try {
    cfg = serveConfig(parseCommandArgs(argv, serveOptions, 'serve'), process.env);
  } catch (e) {
    process.stderr.write(`factlens engine: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const code = await serve(cfg);
  // Give the last writes a moment, then leave even if a library keeps a handle open.
  setTimeout(() => process.exit(code), 100).unref();
  process.exitCode = code;
}

if (require.main === module) void main();
