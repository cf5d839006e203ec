/**
 * The engine client, used by the VS Code extension and by the tests: spawns the engine process
 * (or connects to a socket engine), performs the handshake, sends typed requests with
 * timeouts, progress and cancellation, and restarts the engine with exponential backoff when
 * it dies or stops answering its heartbeat. An edit journal re-applies the user's edits after a
 * restart, so the model they see never silently loses one; a damaged journal is moved aside and
 * reported (`warning`), never fatal. Listeners in `ClientOptions.listeners` see the start too.
 *
 *   const client = await EngineClient.spawn({ enginePath: 'dist/engine/server.js', journalPath });
 *   await client.request(ModelLoad, {});
 *   const r = await client.request(Trace, { prompt, subject }, { onProgress: (f, m) => ..., token });
 *
 * Nothing here imports tfjs: the extension host loads this module.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import {
  CancellationTokenSource,
  ResponseError,
  type CancellationToken,
  type MessageConnection,
  type RequestType,
} from 'vscode-jsonrpc';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';
import type { EditRecord } from '../protocol/index.js';
import {
  EditApply,
  EditList,
  EditRevert,
  ERROR_CODES,
  errorCodeName,
  Initialize,
  ModelInfoRequest,
  ModelLoad,
  Progress,
  PROTOCOL_VERSION,
  Shutdown,
  type AnyErrorCode,
  type EngineErrorData,
  type InitializeResult,
  type ParamsOf,
  type ProgressParams,
  type ResultOf,
} from '../protocol/index.js';
import { EditJournal } from './journal.js';

export { EditJournal } from './journal.js';

export type EngineState = 'idle' | 'starting' | 'ready' | 'crashed' | 'restarting' | 'failed' | 'stopped';

export interface StateEvent {
  state: EngineState;
  /** Restart attempt (1-based) for 'restarting'. */
  attempt?: number;
  /** Wait before that attempt. */
  delayMs?: number;
  /** Why: the exit code/signal for 'crashed', the error for 'failed'. */
  reason?: string;
}

export interface RestartOptions {
  /** Restarts in a row before giving up ('failed'); default 5. */
  maxAttempts?: number;
  /** First delay; doubles each attempt. Default 500 ms. */
  initialDelayMs?: number;
  /** Cap of the delay. Default 30 s. */
  maxDelayMs?: number;
  /** After this long 'ready', the attempt count starts over. Default 60 s. */
  resetAfterMs?: number;
}

export interface ClientOptions {
  clientName?: string;
  clientVersion?: string;
  /** Persist the edit journal here (re-applied on start and after every restart). */
  journalPath?: string;
  /** Default per-request timeout (0: none). */
  requestTimeoutMs?: number;
  /** Limit for initialize plus re-applying the journal. Default 120 s. */
  handshakeTimeoutMs?: number;
  /** The protocol version sent in initialize (default PROTOCOL_VERSION; tests use others). */
  protocolVersion?: string;
  /** false: never restart. */
  restart?: RestartOptions | false;
  /**
   * Liveness check of a ready engine: a `model/info` every intervalMs (default 10 s). No answer
   * within timeoutMs (default 60 s) from an engine process that is stopped (SIGSTOP; read from
   * /proc where there is one), or within busyTimeoutMs (default 10 min: a running engine may be
   * in a long synchronous tfjs step) from any engine, means it is hung: it is killed and
   * restarted like a crashed one, and its pending requests fail with ENGINE_EXITED. It pauses
   * while this client has a model/load in flight (checkpoints are read synchronously). false: off.
   */
  heartbeat?: { intervalMs?: number; timeoutMs?: number; busyTimeoutMs?: number } | false;
  /**
   * Listeners registered before the client starts, so events of the start itself (a journal
   * moved aside, an edit that could not be re-applied) reach someone.
   */
  listeners?: { [K in keyof EngineClientEvents]?: (...args: EngineClientEvents[K]) => void };
}

export interface SpawnOptions extends ClientOptions {
  /** The engine script: dist/engine/server.js (or engine/server/main.ts with execArgv ['--import', 'tsx']). */
  enginePath: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  /** Node binary (default: this process's; inside VS Code, Electron is run as Node). */
  execPath?: string;
  execArgv?: string[];
  cwd?: string;
}

export interface ConnectOptions extends ClientOptions {
  host: string;
  port: number;
  token?: string;
}

export interface RequestOptions {
  /** Overrides the client's default timeout (0: none). On timeout the request is cancelled in the engine. */
  timeoutMs?: number;
  /** Progress of the job (0..1 and a message); the engine sends it only to this client. */
  onProgress?: (fraction: number, message: string, p: ProgressParams) => void;
  /** Cancels the request: the engine stops the job (queued: at once; running: at its next checkpoint). */
  token?: CancellationToken;
}

/** An error reply of the engine (or TIMEOUT / ENGINE_EXITED from the client). */
export class EngineError extends Error {
  /** JSON-RPC error code. */
  readonly code: number;
  /** Symbolic code (data.code of the reply). */
  readonly kind: AnyErrorCode | string;
  readonly data: EngineErrorData | undefined;
  constructor(code: number, message: string, data?: EngineErrorData) {
    super(message);
    this.name = 'EngineError';
    this.code = code;
    this.data = data;
    this.kind = data?.code ?? errorCodeName(code) ?? 'UNKNOWN';
  }

  static of(kind: AnyErrorCode, message: string, data: Omit<EngineErrorData, 'code'> = {}): EngineError {
    return new EngineError(ERROR_CODES[kind], message, { ...data, code: kind });
  }
}

function toEngineError(e: unknown, method: string): EngineError {
  if (e instanceof EngineError) return e;
  if (e instanceof ResponseError) {
    const data = (e.data && typeof e.data === 'object' ? e.data : undefined) as EngineErrorData | undefined;
    if (e.code === -32097 /* PendingResponseRejected */) {
      return EngineError.of('ENGINE_EXITED', `the engine stopped while ${method} was pending`, { method });
    }
    return new EngineError(e.code, e.message, data);
  }
  const msg = e instanceof Error ? e.message : String(e);
  return EngineError.of('ENGINE_EXITED', `${method}: ${msg}`, { method });
}

interface Link {
  connection: MessageConnection;
  pid?: number;
  /** Ends the engine (spawned) or the connection (socket). */
  kill(signal?: NodeJS.Signals): void;
  exited: boolean;
  /** The heartbeat timer of this link, while it is ready. */
  heartbeat?: NodeJS.Timeout;
  /** Set when the heartbeat found the engine hung (the reason its exit is reported with). */
  hung?: string;
}

interface Pending {
  method: string;
  reject: (e: EngineError) => void;
  /** The link the request was sent on (unset while it waits for the engine). */
  link?: Link;
}

type Mode = { kind: 'spawn'; opts: SpawnOptions } | { kind: 'connect'; opts: ConnectOptions };

export interface EngineClientEvents {
  state: [StateEvent];
  /** A log line: the engine's stderr (source 'engine') or the client's own (source 'client'). */
  log: [string, 'engine' | 'client'];
  /** The journal was re-applied after a (re)start. */
  reapplied: [{ model: boolean; edits: string[] }];
  /** A journal edit could not be re-applied (it stays in the journal). */
  journalError: [{ record: EditRecord; error: EngineError }];
  /** Something the user should know that did not stop the client (a journal moved aside, a hung engine restarted). */
  warning: [{ message: string; file?: string }];
}

export class EngineClient extends EventEmitter<EngineClientEvents> {
  readonly journal: EditJournal;
  private _state: EngineState = 'idle';
  private link: Link | null = null;
  private _info: InitializeResult | null = null;
  private readonly pending = new Set<Pending>();
  private readonly progressHandlers = new Map<string, NonNullable<RequestOptions['onProgress']>>();
  private progressSeq = 0;
  /** model/load requests in flight (the heartbeat pauses for them). */
  private loadsPending = 0;
  private attempts = 0;
  private readyAt = 0;
  private stopping = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private readyWaiters: Array<{ resolve: (l: Link) => void; reject: (e: EngineError) => void }> = [];
  private readonly restart: Required<RestartOptions> | false;
  private readonly opts: ClientOptions;

  private constructor(private readonly mode: Mode) {
    super();
    this.opts = mode.opts;
    for (const [event, fn] of Object.entries(mode.opts.listeners ?? {})) {
      if (fn) this.on(event as keyof EngineClientEvents, fn as (...args: unknown[]) => void);
    }
    this.journal = new EditJournal(mode.opts.journalPath);
    if (this.journal.problem) {
      this.log(this.journal.problem.message);
      this.emit('warning', { message: this.journal.problem.message, file: this.journal.problem.movedTo ?? this.journal.problem.file });
    }
    const r = mode.opts.restart;
    this.restart =
      r === false
        ? false
        : {
            maxAttempts: r?.maxAttempts ?? 5,
            initialDelayMs: r?.initialDelayMs ?? 500,
            maxDelayMs: r?.maxDelayMs ?? 30_000,
            resetAfterMs: r?.resetAfterMs ?? 60_000,
          };
  }

  /** Spawns the engine and resolves once it is ready (handshake done, journal re-applied). */
  static async spawn(opts: SpawnOptions): Promise<EngineClient> {
    return EngineClient.startNew({ kind: 'spawn', opts });
  }

  /** Connects to a socket engine (`factlens serve --listen`). Reconnects with backoff if the connection drops. */
  static async connect(opts: ConnectOptions): Promise<EngineClient> {
    return EngineClient.startNew({ kind: 'connect', opts });
  }

  private static async startNew(mode: Mode): Promise<EngineClient> {
    const c = new EngineClient(mode);
    try {
      await c.start();
    } catch (e) {
      // The first start failing is the caller's error, not a crash to recover from.
      await c.stop().catch(() => {});
      throw e;
    }
    return c;
  }

  get state(): EngineState {
    return this._state;
  }

  /** The engine's initialize result (versions, backend, capabilities) of the current run. */
  get info(): InitializeResult | null {
    return this._info;
  }

  /** The engine's process id (spawned engines). */
  get pid(): number | undefined {
    return this.link?.pid;
  }

  /** Sends a request once the engine is ready (waiting through a restart), with the options' timeout, progress and cancellation. */
  request<P, R>(type: RequestType<P, R, unknown>, params: P, opts: RequestOptions = {}): Promise<R> {
    const method = type.method;
    const timeoutMs = opts.timeoutMs ?? this.opts.requestTimeoutMs ?? 0;
    const cts = new CancellationTokenSource();
    const isLoad = method === ModelLoad.method;
    if (isLoad) this.loadsPending++;
    const userSub = opts.token?.onCancellationRequested(() => cts.cancel());
    if (opts.token?.isCancellationRequested) cts.cancel();
    let progressToken: string | undefined;
    let timer: NodeJS.Timeout | undefined;
    let pending: Pending | undefined;
    const cleanup = () => {
      if (isLoad) this.loadsPending--;
      if (timer) clearTimeout(timer);
      userSub?.dispose();
      if (progressToken) this.progressHandlers.delete(progressToken);
      if (pending) this.pending.delete(pending);
      cts.dispose();
    };
    return new Promise<R>((resolve, reject) => {
      let settled = false;
      const fail = (e: EngineError) => {
        if (settled) return;
        settled = true;
        cleanup();
        reject(e);
      };
      pending = { method, reject: fail };
      this.pending.add(pending);
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          cts.cancel();
          fail(EngineError.of('TIMEOUT', `${method} did not answer within ${timeoutMs} ms (it was cancelled in the engine)`, { method }));
        }, timeoutMs);
      }
      void (async () => {
        const link = await this.whenReady(cts.token, method);
        pending!.link = link;
        let p: unknown = params;
        if (opts.onProgress) {
          progressToken = `p${++this.progressSeq}`;
          this.progressHandlers.set(progressToken, opts.onProgress);
          p = { ...(params as object), progressToken };
        }
        const r = (await link.connection.sendRequest(method, p, cts.token)) as R;
        this.record(type, params, r);
        return r;
      })().then(
        (r) => {
          if (settled) return;
          settled = true;
          cleanup();
          resolve(r);
        },
        (e) => fail(toEngineError(e, method)),
      );
    });
  }

  /** Asks the engine to shut down (then ends it if it does not) and stops restarting it. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    const link = this.link;
    if (link?.heartbeat) clearInterval(link.heartbeat);
    if (link && !link.exited) {
      let asked = false;
      if (this._state === 'ready') {
        try {
          await withTimeout(link.connection.sendRequest(Shutdown, {}), 3000, 'shutdown');
          asked = true;
        } catch {
          /* ended below */
        }
      }
      if (!(asked && (await exitWithin(link, 2000)))) {
        link.kill('SIGTERM');
        if (!(await exitWithin(link, 3000))) {
          link.kill('SIGKILL');
          await exitWithin(link, 2000);
        }
      }
    }
    this.link = null;
    this._info = null;
    this.setState({ state: 'stopped' });
    for (const w of this.readyWaiters.splice(0)) w.reject(EngineError.of('ENGINE_EXITED', 'the client was stopped'));
  }

  // -------------------------------------------------------------------------------------

  private setState(e: StateEvent): void {
    this._state = e.state;
    this.emit('state', e);
  }

  private log(line: string): void {
    this.emit('log', line, 'client');
  }

  private whenReady(token: CancellationToken, method: string): Promise<Link> {
    if (this._state === 'ready' && this.link && !this.link.exited) return Promise.resolve(this.link);
    if (this._state === 'failed' || this._state === 'stopped') {
      return Promise.reject(EngineError.of('ENGINE_EXITED', `the engine is ${this._state}; ${method} was not sent`, { method }));
    }
    return new Promise<Link>((resolve, reject) => {
      const w = { resolve, reject };
      this.readyWaiters.push(w);
      token.onCancellationRequested(() => {
        this.readyWaiters = this.readyWaiters.filter((x) => x !== w);
        reject(EngineError.of('CANCELLED', `${method} was cancelled before the engine was ready`, { method }));
      });
    });
  }

  /** Keeps the journal in step with what the engine acknowledged. */
  private record<P, R>(type: RequestType<P, R, unknown>, params: P, result: R): void {
    // The request constant tells which protocol types params and result are.
    if (type.method === ModelLoad.method) {
      // A folder is kept as the engine resolved it (absolute), the embedded model as "none given".
      const p = params as ParamsOf<'model/load'>;
      const dir = (result as ResultOf<'model/load'>).dir;
      this.journal.setModel(p.dir !== undefined ? { ...p, dir } : p, dir);
    } else if (type.method === EditApply.method) this.journal.add(result as ResultOf<'edit/apply'>);
    else if (type.method === EditRevert.method) this.journal.remove((params as ParamsOf<'edit/revert'>).id);
  }

  private async start(): Promise<void> {
    this.setState({ state: 'starting' });
    let link: Link;
    try {
      link = this.mode.kind === 'spawn' ? this.spawnLink(this.mode.opts) : await this.connectLink(this.mode.opts);
    } catch (e) {
      throw this.startFailed(e);
    }
    this.link = link;
    try {
      const timeout = this.opts.handshakeTimeoutMs ?? 120_000;
      await withTimeout(this.handshake(link), timeout, 'the engine handshake');
    } catch (e) {
      throw this.startFailed(e, link);
    }
    if (link.exited) throw this.startFailed(new Error('the engine exited during the handshake'), link);
    this.readyAt = Date.now();
    this.setState({ state: 'ready' });
    this.startHeartbeat(link);
    for (const w of this.readyWaiters.splice(0)) w.resolve(link);
  }

  /** See ClientOptions.heartbeat. */
  private startHeartbeat(link: Link): void {
    const hb = this.opts.heartbeat;
    if (hb === false) return;
    const intervalMs = hb?.intervalMs ?? 10_000;
    const timeoutMs = hb?.timeoutMs ?? 60_000;
    const busyTimeoutMs = Math.max(timeoutMs, hb?.busyTimeoutMs ?? 600_000);
    let sentAt = 0; // the unanswered heartbeat's send time (0: none outstanding)
    const hung = (why: string) => {
      link.hung = why;
      this.log(`${why}; killing it${this.restart ? ' and restarting' : ''}`);
      this.emit('warning', { message: `${why}; it was ${this.restart ? 'restarted' : 'stopped'}` });
      link.kill('SIGKILL');
    };
    link.heartbeat = setInterval(() => {
      if (link.exited || link !== this.link) return;
      if (sentAt) {
        const waited = Date.now() - sentAt;
        // A stopped process is hung for sure; a running one may be computing a long synchronous
        // step (tfjs blocks the engine's event loop), so it gets the much longer busy limit.
        if (waited > timeoutMs && link.pid !== undefined && processStopped(link.pid)) {
          hung(`the engine did not answer a heartbeat within ${timeoutMs} ms and is stopped (SIGSTOP)`);
        } else if (waited > busyTimeoutMs) {
          hung(`the engine did not answer a heartbeat within ${busyTimeoutMs} ms (hung)`);
        }
        return;
      }
      // Loading a checkpoint reads it synchronously: the heartbeat waits for the load.
      if (this.loadsPending > 0) return;
      sentAt = Date.now();
      // sendRequest throws at once on a connection that just closed (its exit is reported apart).
      Promise.resolve()
        .then(() => link.connection.sendRequest(ModelInfoRequest, {}))
        .then(
          () => (sentAt = 0),
          () => (sentAt = 0),
        );
    }, intervalMs);
    link.heartbeat.unref();
  }

  /** A start failed: fatal (version, token) → 'failed'; otherwise it counts as a crash. */
  private startFailed(e: unknown, link?: Link): EngineError {
    const err = e instanceof EngineError ? e : toEngineError(e, 'initialize');
    const fatal = err.kind === 'VERSION_MISMATCH' || err.kind === 'UNAUTHORIZED';
    this.log(`engine start failed: ${err.message}`);
    if (fatal) {
      this.stopping = true;
      this.setState({ state: 'failed', reason: err.message });
      for (const w of this.readyWaiters.splice(0)) w.reject(err);
    }
    if (link && !link.exited) link.kill('SIGKILL');
    return err;
  }

  private async handshake(link: Link): Promise<void> {
    const c = link.connection;
    const token = this.mode.kind === 'connect' ? this.mode.opts.token : undefined;
    this._info = await c.sendRequest(Initialize, {
      protocolVersion: this.opts.protocolVersion ?? PROTOCOL_VERSION,
      clientName: this.opts.clientName ?? 'factlens-client',
      ...(this.opts.clientVersion ? { clientVersion: this.opts.clientVersion } : {}),
      ...(token !== undefined ? { token } : {}),
    });
    await this.reapply(c);
  }

  /** Brings a fresh (or reconnected) engine to the journal's state: same model, same edits. */
  private async reapply(c: MessageConnection): Promise<void> {
    const j = this.journal;
    if (!j.model) return;
    const info = await c.sendRequest(ModelInfoRequest, {});
    let loaded = false;
    if (!info || info.dir !== j.modelDir || (j.model.backend !== undefined && info.backend !== j.model.backend)) {
      this.log(`re-loading model ${j.modelDir ?? '(embedded)'}`);
      await c.sendRequest(ModelLoad, { ...j.model });
      loaded = true;
    }
    const applied: string[] = [];
    if (j.edits.length) {
      const present = new Set((await c.sendRequest(EditList, {})).map((r) => r.id));
      for (const record of [...j.edits]) {
        if (present.has(record.id)) continue;
        try {
          await c.sendRequest(EditApply, { record });
          applied.push(record.id);
        } catch (e) {
          const error = toEngineError(e, 'edit/apply');
          this.log(`could not re-apply edit ${record.id}: ${error.message}`);
          this.emit('journalError', { record, error });
        }
      }
      if (applied.length) this.log(`re-applied ${applied.length} edit(s): ${applied.join(', ')}`);
    }
    if (loaded || applied.length) this.emit('reapplied', { model: loaded, edits: applied });
  }

  private onLinkGone(link: Link, why: string): void {
    if (link.exited) return;
    link.exited = true;
    if (link.heartbeat) clearInterval(link.heartbeat);
    const reason = link.hung ?? why;
    try {
      link.connection.dispose();
    } catch {
      /* ignore */
    }
    for (const p of [...this.pending]) {
      if (p.link !== link) continue;
      p.reject(EngineError.of('ENGINE_EXITED', `the engine stopped (${reason}) while ${p.method} was pending`, { method: p.method }));
    }
    if (link !== this.link) return;
    this.link = null;
    this._info = null;
    if (this.stopping) return;
    this.setState({ state: 'crashed', reason });
    this.scheduleRestart();
  }

  private scheduleRestart(): void {
    if (this.stopping) return;
    if (this.readyAt && this.restart && Date.now() - this.readyAt > this.restart.resetAfterMs) this.attempts = 0;
    this.readyAt = 0;
    if (!this.restart || this.attempts >= this.restart.maxAttempts) {
      const reason = this.restart ? `the engine crashed ${this.attempts + 1} times in a row; giving up` : 'restart is off';
      this.setState({ state: 'failed', reason });
      for (const w of this.readyWaiters.splice(0)) w.reject(EngineError.of('ENGINE_EXITED', reason));
      return;
    }
    this.attempts++;
    const delayMs = Math.min(this.restart.maxDelayMs, this.restart.initialDelayMs * 2 ** (this.attempts - 1));
    this.setState({ state: 'restarting', attempt: this.attempts, delayMs });
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (this.stopping) return;
      this.start().catch((e) => {
        // A start that failed, not fatally. When its engine was running, that engine's exit
        // (reported by onLinkGone) schedules the next attempt; when none came up, do it here.
        if (this._state !== 'starting' || this.stopping) return;
        if (!this.link || this.link.exited) {
          this.link = null;
          this.setState({ state: 'crashed', reason: (e as Error).message });
          this.scheduleRestart();
        }
      });
    }, delayMs);
  }

  private wire(connection: MessageConnection): void {
    connection.onNotification(Progress, (p) => {
      const h = this.progressHandlers.get(p?.token);
      if (h) {
        try {
          h(p.fraction, p.message, p);
        } catch (e) {
          this.log(`progress handler failed: ${(e as Error).message}`);
        }
      }
    });
    connection.onError(([e]) => this.log(`connection error: ${e?.message ?? e}`));
    connection.listen();
  }

  private spawnLink(o: SpawnOptions): Link {
    const execPath = o.execPath ?? process.execPath;
    const env: NodeJS.ProcessEnv = { ...(o.env ?? process.env) };
    // Inside VS Code, process.execPath is Electron: run it as plain Node.
    if (process.versions.electron && execPath === process.execPath) env.ELECTRON_RUN_AS_NODE = '1';
    const child: ChildProcess = spawn(execPath, [...(o.execArgv ?? []), o.enginePath, ...(o.args ?? [])], {
      cwd: o.cwd,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const connection = createMessageConnection(new StreamMessageReader(child.stdout!), new StreamMessageWriter(child.stdin!));
    const link: Link = {
      connection,
      pid: child.pid,
      exited: false,
      kill: (signal = 'SIGTERM') => {
        try {
          child.kill(signal);
        } catch {
          /* gone */
        }
      },
    };
    child.stdin!.on('error', () => {
      /* EPIPE when the engine died; its exit is reported below */
    });
    let buf = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      buf += s;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.emit('log', buf.slice(0, nl), 'engine');
        buf = buf.slice(nl + 1);
      }
    });
    child.on('error', (e) => this.onLinkGone(link, `could not run the engine: ${e.message}`));
    child.on('exit', (code, signal) => {
      if (buf) this.emit('log', buf, 'engine');
      this.onLinkGone(link, signal ? `killed by ${signal}` : `exit code ${code}`);
    });
    this.wire(connection);
    return link;
  }

  private connectLink(o: ConnectOptions): Promise<Link> {
    return new Promise<Link>((resolve, reject) => {
      const socket = net.connect({ host: o.host, port: o.port });
      socket.setNoDelay(true);
      const onError = (e: Error) => reject(EngineError.of('ENGINE_EXITED', `cannot connect to ${o.host}:${o.port}: ${e.message}`));
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        const connection = createMessageConnection(new StreamMessageReader(socket), new StreamMessageWriter(socket));
        const link: Link = {
          connection,
          exited: false,
          kill: () => socket.destroy(),
        };
        socket.on('error', (e) => this.log(`socket error: ${e.message}`));
        socket.on('close', () => this.onLinkGone(link, 'the connection closed'));
        this.wire(connection);
        resolve(link);
      });
    });
  }
}

/** Whether a process is stopped (SIGSTOP / traced), from /proc; false where that cannot be read. */
function processStopped(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = /\)\s+(\S)/.exec(stat)?.[1];
    return state === 'T' || state === 't';
  } catch {
    return false;
  }
}

/** Waits until the link has exited; false if it is still alive after ms. */
async function exitWithin(link: Link, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!link.exited && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
  return link.exited;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(EngineError.of('TIMEOUT', `${what} took longer than ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
