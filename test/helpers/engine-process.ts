/**
 * Running the real engine process in tests. By default the sources are run through tsx
 * (`node --import tsx engine/server/main.ts`), so tests never see a stale bundle; set
 * FACTLENS_TEST_ENGINE=bundle to spawn dist/engine/server.js instead (run the build first).
 * FACTLENS_TEST_BACKEND picks the engine's backend, as in the other suites.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { EngineClient, type ConnectOptions, type SpawnOptions } from '../../engine/client/index.js';

export const ROOT = path.resolve(__dirname, '..', '..');
export const SOURCE_ENTRY = path.join(ROOT, 'engine', 'server', 'main.ts');
export const BUNDLE_ENTRY = path.join(ROOT, 'dist', 'engine', 'server.js');
export const BACKEND_ARGS = process.env.FACTLENS_TEST_BACKEND ? ['--backend', process.env.FACTLENS_TEST_BACKEND] : [];

export function engineCommand(bundle = process.env.FACTLENS_TEST_ENGINE === 'bundle'): { enginePath: string; execArgv: string[] } {
  return bundle ? { enginePath: BUNDLE_ENTRY, execArgv: [] } : { enginePath: SOURCE_ENTRY, execArgv: ['--import', 'tsx'] };
}

/** The collected stderr of an engine, for assertions and for failure messages. */
export class LogBuffer {
  lines: string[] = [];
  push(line: string): void {
    this.lines.push(line);
    if (process.env.FACTLENS_TEST_VERBOSE) process.stderr.write(`  | ${line}\n`);
  }
  get text(): string {
    return this.lines.join('\n');
  }
  tail(n = 30): string {
    return this.lines.slice(-n).join('\n');
  }
}

/** An EngineClient on a freshly spawned engine, with its log collected. */
export async function spawnClient(opts: Partial<SpawnOptions> = {}, log = new LogBuffer()): Promise<{ client: EngineClient; log: LogBuffer }> {
  const client = await EngineClient.spawn({
    ...engineCommand(),
    cwd: ROOT,
    clientName: 'test',
    handshakeTimeoutMs: 180_000,
    ...opts,
    args: [...BACKEND_ARGS, ...(opts.args ?? [])],
  });
  client.on('log', (line, src) => log.push(`[${src}] ${line}`));
  return { client, log };
}

export async function connectClient(opts: ConnectOptions, log = new LogBuffer()): Promise<{ client: EngineClient; log: LogBuffer }> {
  const client = await EngineClient.connect({ clientName: 'test', handshakeTimeoutMs: 60_000, ...opts });
  client.on('log', (line, src) => log.push(`[${src}] ${line}`));
  return { client, log };
}

/** A raw engine process (stdio pipes), for framing-level tests and socket servers. */
export interface RawEngine {
  child: ChildProcess;
  log: LogBuffer;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first stderr match (e.g. the listening line). */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  kill(): void;
}

export function startRawEngine(args: string[], env: NodeJS.ProcessEnv = process.env): RawEngine {
  const { enginePath, execArgv } = engineCommand();
  const child = spawn(process.execPath, [...execArgv, enginePath, ...BACKEND_ARGS, ...args], {
    cwd: ROOT,
    env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const log = new LogBuffer();
  const watchers: Array<{ re: RegExp; resolve: (m: RegExpExecArray) => void }> = [];
  let buf = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    buf += s;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      log.push(line);
      for (const w of [...watchers]) {
        const m = w.re.exec(line);
        if (m) {
          watchers.splice(watchers.indexOf(w), 1);
          w.resolve(m);
        }
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => {
      if (buf) log.push(buf);
      resolve({ code, signal });
    }),
  );
  child.stdin!.on('error', () => {});
  return {
    child,
    log,
    exited,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
    waitForLog(re, timeoutMs = 120_000) {
      for (const line of log.lines) {
        const m = re.exec(line);
        if (m) return Promise.resolve(m);
      }
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no log line matching ${re} within ${timeoutMs} ms:\n${log.tail()}`)), timeoutMs);
        watchers.push({
          re,
          resolve: (m) => {
            clearTimeout(t);
            resolve(m);
          },
        });
        void exited.then(() => {
          clearTimeout(t);
          reject(new Error(`the engine exited before logging ${re}:\n${log.tail()}`));
        });
      });
    },
  };
}

/** Encodes one frame (Content-Length framing). */
export function frame(body: string | Buffer): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return Buffer.concat([Buffer.from(`Content-Length: ${b.length}\r\n\r\n`, 'ascii'), b]);
}

/** Splits a byte stream into frames (for reading the engine's replies in raw tests). */
export class FrameParser {
  private buf = Buffer.alloc(0);
  push(chunk: Buffer): unknown[] {
    this.buf = Buffer.concat([this.buf, chunk]);
    const out: unknown[] = [];
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) break;
      const m = /Content-Length: (\d+)/i.exec(this.buf.subarray(0, end).toString('ascii'));
      if (!m) throw new Error(`bad frame header from the engine: ${this.buf.subarray(0, end).toString()}`);
      const len = Number(m[1]);
      if (this.buf.length < end + 4 + len) break;
      out.push(JSON.parse(this.buf.subarray(end + 4, end + 4 + len).toString('utf8')));
      this.buf = this.buf.subarray(end + 4 + len);
    }
    return out;
  }
}

/** Waits until cond() holds (polling), or fails after timeoutMs. */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
