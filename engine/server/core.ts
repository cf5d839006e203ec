/**
 * The engine behind the protocol: one model, one job queue, any number of connections
 * (one on stdio; one per client on a socket). Each connection is a Session: it must
 * `initialize` first (with the token, on a socket engine that has one), owns the jobs it
 * starts, and receives only its own progress and results.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  type CancellationToken,
  type MessageConnection,
  ResponseError,
} from 'vscode-jsonrpc';
import { createMessageConnection, StreamMessageWriter } from 'vscode-jsonrpc/node';
import { FactLensError, isFactLensError } from '../errors.js';
import { disposeModel, loadModel, type LoadedModel } from '../model/load.js';
import { predict } from '../predict.js';
import { predictBatch } from '../predict-batch.js';
import { checkSpecificity } from '../specificity/check.js';
import { activeBackend, probeBackends, type BackendName } from '../runtime/backend.js';
import { trace } from '../trace/index.js';
import { readFacts, traceAverage, type Fact } from '../trace/average.js';
import type { JobControl } from '../util/jobs.js';
import {
  ERROR_CODES,
  METHODS,
  PROTOCOL_VERSION,
  Progress,
  isMethod,
  isReapply,
  protocolCompatible,
  type AnyErrorCode,
  type EditRevertResult,
  type EngineErrorData,
  type InitializeResult,
  type JobInfo,
  type JobsListResult,
  type Method,
  type ModelInfo,
  type ParamsOf,
  type ResultOf,
  type ShutdownResult,
} from '../protocol/index.js';
import { modelContentHash } from '../edit/hash.js';
import { FEATURES, unavailableMethods, type Features } from './features.js';
import { JobQueue, type QueuedJob } from './queue.js';
import { LimitedMessageReader } from './transport.js';
import { SCHEMAS } from './schemas.js';
import type * as v from './validate.js';
import pkg from '../../package.json';

export const ENGINE_VERSION: string = pkg.version;

/** An error of the protocol layer, with the symbolic code and data the reply carries. */
export class ProtocolError extends Error {
  constructor(
    readonly code: AnyErrorCode,
    message: string,
    readonly data: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Any thrown value → the JSON-RPC error reply: code from the one table, data naming what was wrong. */
export function toResponseError(e: unknown, method: string): ResponseError<EngineErrorData> {
  if (e instanceof ResponseError) return e as ResponseError<EngineErrorData>;
  if (isFactLensError(e) || e instanceof ProtocolError) {
    const code = e.code as AnyErrorCode;
    return new ResponseError<EngineErrorData>(ERROR_CODES[code] ?? ERROR_CODES.INTERNAL, e.message, { ...e.data, code, method });
  }
  const msg = e instanceof Error ? e.message : String(e);
  return new ResponseError<EngineErrorData>(
    ERROR_CODES.INTERNAL,
    `internal error in ${method}: ${msg} (the engine is still running; see its log for details)`,
    { code: 'INTERNAL', method },
  );
}

export interface EngineOptions {
  /** Largest incoming message. */
  maxMessageBytes: number;
  /** Socket engines: the token every connection's initialize must carry (undefined: none). */
  token?: string;
  /** Backend for model/load requests that name none. */
  preferredBackend?: BackendName;
  /** Jobs one connection may have queued or running at once. */
  maxJobsPerConnection?: number;
  /** Close socket connections that have not initialized within this time. */
  initTimeoutMs?: number;
  log: (line: string) => void;
  /** Stdio engines: called when the connection closes or asks to shut down. */
  onStdioEnd?: (code: number) => void;
  features?: Features;
}

/** The handler of one method: its params and result are exactly the protocol's for that method. */
interface Handler<M extends Method> {
  /** Runs without initialize (initialize itself). */
  open?: boolean;
  /** Called with params that passed SCHEMAS[method]. */
  run(session: Session, params: ParamsOf<M>, token: CancellationToken): Promise<ResultOf<M>> | ResultOf<M>;
}

/** The handler table: a mapped type over the protocol's methods, so none is missing or mistyped. */
type Handlers = { [M in Method]: Handler<M> };

/** What dispatch calls once it has looked a method up (the one place the table is used untyped). */
interface AnyHandler {
  open?: boolean;
  run(session: Session, params: unknown, token: CancellationToken): unknown;
}

let sessionSeq = 0;

/** A socket connection must authenticate within this time, or it is closed. */
const INIT_TIMEOUT_MS = 5_000;
/** How long the reply to a failed authentication waits (one guess per connection, slowly). */
const FAILED_AUTH_DELAY_MS = 300;

/** A text summary of a prompt for the jobs list. */
const clip = (s: string, n = 60) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

// ---------------------------------------------------------------------------------------

export class Engine {
  model: LoadedModel | null = null;
  loadedAt: Date | null = null;
  readonly queue: JobQueue;
  readonly sessions = new Map<string, Session>();
  readonly features: Features;
  private readonly handlers: Handlers;
  private readonly tokenDigest: Buffer | null;

  constructor(readonly opts: EngineOptions) {
    this.queue = new JobQueue(opts.log);
    this.features = opts.features ?? FEATURES;
    this.tokenDigest = opts.token ? digest(opts.token) : null;
    this.handlers = this.makeHandlers();
  }

  get tokenRequired(): boolean {
    return this.tokenDigest !== null;
  }

  /** Constant-time token check (compares SHA-256 digests, so lengths never leak). */
  tokenMatches(token: string | undefined): boolean {
    // A socket engine without a token would be open to every local user: refuse everyone.
    if (!this.tokenDigest) return false;
    return crypto.timingSafeEqual(digest(token ?? ''), this.tokenDigest) && typeof token === 'string';
  }

  /** Serves one connection (stdin/stdout, or a socket). */
  attach(input: NodeJS.ReadableStream, output: NodeJS.WritableStream, kind: 'stdio' | 'socket', remote: string, close: () => void): Session {
    const s = new Session(this, input, output, kind, remote, close);
    this.sessions.set(s.id, s);
    return s;
  }

  detach(s: Session): void {
    this.sessions.delete(s.id);
    const n = this.queue.cancelOwnedBy(s.id, 'cancelled because its connection closed');
    if (n) this.opts.log(`${s.id}: cancelled ${n} job(s) of the closed connection`);
  }

  async dispatch(session: Session, method: string, params: unknown, token: CancellationToken): Promise<unknown> {
    // A socket connection gets one attempt to authenticate: after a failed initialize (or any
    // other request first) nothing it sends is looked at, pipelined guesses included.
    if (session.kind === 'socket' && !session.initialized) {
      if (session.authFailed) {
        // Answered as late as the failed attempt itself, so replies keep the order of requests.
        const err = new ProtocolError('UNAUTHORIZED', 'the connection is closed after a failed attempt', { field: 'token' });
        return new Promise<never>((_, reject) => setTimeout(() => reject(err), FAILED_AUTH_DELAY_MS).unref());
      }
      if (method !== 'initialize') {
        session.refuse();
        throw new ProtocolError('NOT_INITIALIZED', `send initialize (with the token) before ${clip(method, 100)}; the connection is closed`, {
          field: 'method',
        });
      }
    }
    if (!isMethod(method)) {
      throw new ProtocolError('METHOD_NOT_FOUND', `unknown method '${clip(method, 100)}'; this engine answers ${METHODS.join(', ')}`, {
        field: 'method',
      });
    }
    if (params !== undefined && (params === null || typeof params !== 'object' || Array.isArray(params))) {
      throw new FactLensError('INVALID_ARGUMENT', `${method} takes its parameters by name: params must be an object`, {
        field: 'params',
      });
    }
    // Typed per method in the table; looked up by a name known only at run time here.
    const h = this.handlers[method] as unknown as AnyHandler;
    if (!h.open) {
      if (!session.initialized) {
        throw new ProtocolError('NOT_INITIALIZED', `send initialize before ${method}`, { field: 'method' });
      }
      if (session.closing) throw new ProtocolError('SHUTTING_DOWN', 'this connection is shutting down', {});
    }
    const check = SCHEMAS[method] as v.Check<unknown>;
    return h.run(session, check(params, ''), token);
  }

  modelInfo(): ModelInfo | null {
    const m = this.model;
    if (!m) return null;
    return {
      name: m.name,
      dir: m.dir,
      backend: m.backend,
      modelType: m.config.modelType,
      nLayer: m.config.nLayer,
      dModel: m.config.dModel,
      nHead: m.config.nHead,
      dMlp: m.config.dMlp,
      vocabSize: m.config.vocabSize,
      nCtx: m.config.nCtx,
      parameterCount: m.parameterCount,
      contentHash: modelContentHash(m),
      edits: this.features.edit ? this.features.edit.list(m).map((r) => r.id) : [],
      loadedAt: (this.loadedAt ?? new Date()).toISOString(),
    };
  }

  requireModel(): LoadedModel {
    if (!this.model) {
      throw new ProtocolError('NO_MODEL', 'no model is loaded; send model/load first (without a dir it loads the embedded tinyworld model)', {
        field: 'model',
      });
    }
    return this.model;
  }

  /** Runs `run` as a queued job owned by the session; cancellation of the request cancels the job. */
  runJob<R>(
    s: Session,
    method: string,
    opts: { summary: string; exclusive?: boolean; priority?: boolean; progressToken?: string },
    token: CancellationToken,
    run: (control: JobControl) => Promise<R> | R,
  ): Promise<R> {
    const max = this.opts.maxJobsPerConnection ?? 64;
    if (this.queue.countOwnedBy(s.id) >= max) {
      throw new ProtocolError('QUEUE_FULL', `this connection already has ${max} jobs queued or running; wait for some to finish`, {
        limit: max,
      });
    }
    const { job, result } = this.queue.submit<R>({
      method,
      owner: { connection: s.id, client: s.clientName },
      summary: opts.summary,
      exclusive: opts.exclusive,
      priority: opts.priority,
      run,
      onUpdate: (j) => s.progress(j, opts.progressToken),
    });
    const t0 = Date.now();
    const quiet = method === 'predict' || method === 'predict/batch' || method === 'specificity/check';
    if (!quiet) this.opts.log(`${job.id}: ${method} for ${s.id} (${s.clientName}) ${job.state}${opts.summary ? `: ${opts.summary}` : ''}`);
    const sub = token.onCancellationRequested(() => {
      this.opts.log(`${job.id}: cancel requested by ${s.id}`);
      this.queue.cancel(job.id);
    });
    if (token.isCancellationRequested) this.queue.cancel(job.id);
    return result.then(
      (r) => {
        sub.dispose();
        if (!quiet) this.opts.log(`${job.id}: ${method} done in ${Date.now() - t0} ms`);
        return r;
      },
      (e) => {
        sub.dispose();
        const what = isFactLensError(e) && e.code === 'CANCELLED' ? 'cancelled' : `failed: ${(e as Error)?.message ?? e}`;
        this.opts.log(`${job.id}: ${method} ${what} after ${Date.now() - t0} ms`);
        throw e;
      },
    );
  }

  private makeHandlers(): Handlers {
    const feature = <K extends keyof Features>(k: K, method: string): NonNullable<Features[K]> => {
      const f = this.features[k];
      if (!f) {
        throw new ProtocolError('NOT_AVAILABLE', `${method}: ${unavailableMethods(this.features)[method] ?? 'not available'}`, {
          field: 'method',
          method,
        });
      }
      return f as NonNullable<Features[K]>;
    };
    return {
      initialize: {
        open: true,
        run: (s, p) => {
          // The token first: an unauthenticated client learns nothing, not even the version.
          if (s.kind === 'socket' && !this.tokenMatches(p.token)) {
            this.opts.log(`${s.id}: refused ${s.remote}: ${p.token === undefined ? 'no token' : 'wrong token'}`);
            const err = new ProtocolError(
              'UNAUTHORIZED',
              p.token === undefined
                ? 'this engine requires a token: pass the one it was started with (FACTLENS_TOKEN, or its token file)'
                : 'wrong token; the connection is closed',
              { field: 'token' },
            );
            // The answer comes late and the connection closes: guessing costs time per attempt.
            s.refuse();
            return new Promise<never>((_, reject) => setTimeout(() => reject(err), FAILED_AUTH_DELAY_MS).unref());
          }
          if (!protocolCompatible(p.protocolVersion, PROTOCOL_VERSION)) {
            throw new ProtocolError(
              'VERSION_MISMATCH',
              `the client speaks protocol ${p.protocolVersion} but this engine (factlens ${ENGINE_VERSION}) speaks ${PROTOCOL_VERSION}; ` +
                'install matching versions of the extension and the engine',
              { field: 'protocolVersion', client: p.protocolVersion, engine: PROTOCOL_VERSION },
            );
          }
          s.initialized = true;
          s.clientName = p.clientName ?? 'client';
          s.reader.maxMessageBytes = this.opts.maxMessageBytes;
          s.clearInitTimer();
          this.opts.log(`${s.id}: initialized by ${s.clientName}${p.clientVersion ? ` ${p.clientVersion}` : ''} (${s.remote})`);
          const result: InitializeResult = {
            engineVersion: ENGINE_VERSION,
            protocolVersion: PROTOCOL_VERSION,
            pid: process.pid,
            backend: { active: activeBackend(), preferred: this.opts.preferredBackend ?? null, available: probeBackends() },
            capabilities: {
              methods: [...METHODS],
              unavailable: unavailableMethods(this.features),
              predictJumpsQueue: true,
              cancellation: true,
              progress: true,
            },
            limits: { maxMessageBytes: this.opts.maxMessageBytes },
            connection: { id: s.id, transport: s.kind },
            model: this.modelInfo(),
          };
          return result;
        },
      },
      'model/load': {
        run: (s, p, token) => {
          const dir = p.dir ? path.resolve(p.dir) : undefined;
          if (dir && !fs.existsSync(dir)) {
            throw new FactLensError('MODEL_NOT_FOUND', `model folder ${dir} does not exist (on the engine's machine)`, {
              field: 'dir',
              file: dir,
            });
          }
          const summary = dir ? path.basename(dir) : 'tinyworld (embedded)';
          return this.runJob(s, 'model/load', { summary, exclusive: true, progressToken: p.progressToken }, token, async (control) => {
            control.onProgress?.(0, `loading ${summary}`);
            const t0 = Date.now();
            const m = await loadModel({ dir, backend: p.backend ?? this.opts.preferredBackend });
            const old = this.model;
            this.model = m;
            this.loadedAt = new Date();
            if (old) disposeModel(old);
            this.opts.log(`loaded ${m.name} (${m.parameterCount} parameters) on ${m.backend} in ${Date.now() - t0} ms`);
            control.onProgress?.(1, `loaded ${m.name}`);
            return this.modelInfo()!;
          });
        },
      },
      'model/info': {
        run: () => {
          return this.modelInfo();
        },
      },
      predict: {
        run: (s, p, token) => {
          const model = this.requireModel();
          return this.runJob(s, 'predict', { summary: clip(p.prompt), priority: true }, token, () =>
            predict(this.model ?? model, p.prompt, p.k ?? 10),
          );
        },
      },
      'predict/batch': {
        run: (s, p, token) => {
          this.requireModel();
          return this.runJob(s, 'predict/batch', { summary: `${p.prompts.length} prompts`, priority: true }, token, () => {
            const model = this.requireModel();
            const t0 = performance.now();
            const r = predictBatch(model, p.prompts, { k: p.k, targets: p.targets, unedited: p.unedited });
            return { model: model.name, backend: model.backend, unedited: p.unedited === true, ...r, seconds: (performance.now() - t0) / 1000 };
          });
        },
      },
      'specificity/check': {
        run: (s, p, token) => {
          this.requireModel();
          // Reads the weights only, in one synchronous pass: it may run beside a long job, like predict.
          return this.runJob(s, 'specificity/check', { summary: `${p.prompts.length} prompts`, priority: true }, token, () =>
            checkSpecificity(this.requireModel(), p.prompts, { k: p.k }),
          );
        },
      },
      trace: {
        run: (s, p, token) => {
          this.requireModel();
          const { prompt, progressToken: pt, ...opts } = p;
          return this.runJob(s, 'trace', { summary: clip(prompt), progressToken: pt }, token, (control) =>
            trace(this.requireModel(), prompt, opts, control),
          );
        },
      },
      traceAverage: {
        run: (s, p, token) => {
          const model = this.requireModel();
          const { factsFile, facts, progressToken: pt, ...opts } = p;
          if (factsFile && facts) {
            throw new FactLensError('INVALID_ARGUMENT', 'give either factsFile or facts, not both', { field: 'facts' });
          }
          const file = factsFile ? path.resolve(factsFile) : facts ? null : path.join(model.dir, 'facts.jsonl');
          const items = file ? readFacts(file) : (facts as Fact[]).map((fact, i) => ({ line: i + 1, fact }));
          const summary = `${file ? path.basename(file) : `${items.length} facts`}${opts.limit ? ` (limit ${opts.limit})` : ''}`;
          return this.runJob(s, 'traceAverage', { summary, progressToken: pt }, token, (control) =>
            traceAverage(this.requireModel(), items, opts, control),
          );
        },
      },
      'edit/apply': {
        run: (s, p, token) => {
          const edit = feature('edit', 'edit/apply');
          this.requireModel();
          const reapply = isReapply(p) ? p : null;
          const compute = isReapply(p) ? null : p;
          const summary = reapply ? `re-apply ${reapply.record.id}` : `${compute!.request.subject} → ${compute!.request.target}`;
          // Computing a ROME/FT edit reads the weights and never changes them, so predict may run
          // beside it; applying is synchronous (nothing runs in between). MEMIT applies partial
          // edits while it computes, so it is exclusive, like a precomputed record (quick anyway).
          const exclusive = reapply !== null || compute!.request.method === 'memit';
          return this.runJob(s, 'edit/apply', { summary, exclusive, progressToken: p.progressToken }, token, async (control) => {
            const model = this.requireModel();
            const record = reapply ? reapply.record : await edit.compute(model, compute!.request, compute!.options ?? {}, control);
            control.onProgress?.(1, `applying ${record.id}`);
            await edit.apply(model, record, reapply?.force === true);
            return record;
          });
        },
      },
      'edit/revert': {
        run: (s, p, token) => {
          const edit = feature('edit', 'edit/revert');
          this.requireModel();
          return this.runJob(s, 'edit/revert', { summary: p.id, exclusive: true }, token, async (): Promise<EditRevertResult> => {
            const model = this.requireModel();
            await edit.revert(model, p.id);
            return { reverted: p.id, remaining: edit.list(model).map((r) => r.id) };
          });
        },
      },
      'edit/list': {
        run: () => {
          const edit = feature('edit', 'edit/list');
          return edit.list(this.requireModel());
        },
      },
      'edit/probe': {
        run: (s, p, token) => {
          const edit = feature('edit', 'edit/probe');
          this.requireModel();
          const summary = `${p.prompts.length} prompt(s)${p.unedited ? ', unedited' : ''}`;
          return this.runJob(s, 'edit/probe', { summary }, token, () => edit.probe(this.requireModel(), p));
        },
      },
      'edit/save': {
        run: (s, p, token) => {
          const edit = feature('edit', 'edit/save');
          this.requireModel();
          const dir = path.resolve(p.dir);
          // Exclusive: the saved weights are exactly the edits applied when it starts.
          return this.runJob(s, 'edit/save', { summary: dir, exclusive: true }, token, () => edit.save(this.requireModel(), dir));
        },
      },
      'eval/run': {
        run: (s, p, token) => {
          const ev = feature('eval', 'eval/run');
          this.requireModel();
          // An evaluation applies each record's edit temporarily: a predict beside it would answer
          // from an edited model. Only an evaluation without edits (method none) lets reads run.
          const exclusive = (p.method ?? 'rome') !== 'none';
          return this.runJob(s, 'eval/run', { summary: p.dataset ?? 'applied edits', exclusive, progressToken: p.progressToken }, token, (control) =>
            ev.run(this.requireModel(), p, control),
          );
        },
      },
      'stats/compute': {
        run: (s, p, token) => {
          const st = feature('stats', 'stats/compute');
          this.requireModel();
          const summary = p.layers ? `layers ${p.layers.join(', ')}` : 'default layers';
          return this.runJob(s, 'stats/compute', { summary, progressToken: p.progressToken }, token, (control) =>
            st.compute(this.requireModel(), p, control),
          );
        },
      },
      'jobs/list': {
        run: (s): JobsListResult => {
          let position = 0;
          const jobs = this.queue.list().map((j): JobInfo => ({
            id: j.id,
            method: j.method,
            state: j.state,
            position: j.state === 'running' ? 0 : ++position,
            owner: { ...j.owner },
            mine: j.owner.connection === s.id,
            summary: j.summary,
            fraction: j.fraction,
            message: j.message,
            queuedAt: j.queuedAt.toISOString(),
            ...(j.startedAt ? { startedAt: j.startedAt.toISOString() } : {}),
          }));
          return { jobs };
        },
      },
      shutdown: {
        run: (s): ShutdownResult => {
          s.closing = true;
          const n = this.queue.cancelOwnedBy(s.id, 'cancelled by shutdown');
          this.opts.log(`${s.id}: shutdown requested${n ? `; cancelled ${n} job(s)` : ''}`);
          s.closeAfterReply();
          return { exiting: s.kind === 'stdio' };
        },
      },
    };
  }
}

function digest(s: string): Buffer {
  return crypto.createHash('sha256').update(s, 'utf8').digest();
}

export class Session {
  readonly id = `conn-${++sessionSeq}`;
  readonly connection: MessageConnection;
  readonly reader: LimitedMessageReader;
  initialized = false;
  closing = false;
  /** A socket connection whose one attempt to authenticate failed (see Engine.dispatch). */
  authFailed = false;
  clientName = 'client';
  private closed = false;
  private initTimer: NodeJS.Timeout | null = null;
  private readonly writer: StreamMessageWriter;

  constructor(
    private readonly engine: Engine,
    input: NodeJS.ReadableStream,
    private readonly output: NodeJS.WritableStream,
    readonly kind: 'stdio' | 'socket',
    readonly remote: string,
    private readonly closeTransport: () => void,
  ) {
    const log = (line: string) => engine.opts.log(`${this.id}: ${line}`);
    this.writer = new StreamMessageWriter(output);
    // Before initialize, a socket client may only send small messages.
    const preAuthLimit = kind === 'socket' && engine.tokenRequired ? Math.min(64 * 1024, engine.opts.maxMessageBytes) : engine.opts.maxMessageBytes;
    this.reader = new LimitedMessageReader(input, {
      maxMessageBytes: preAuthLimit,
      reply: (m) => {
        if (!this.closed) this.writer.write(m).catch(() => {});
      },
      log,
    });
    this.connection = createMessageConnection(this.reader, this.writer, {
      error: (m) => log(m),
      warn: (m) => log(m),
      info: () => {},
      log: () => {},
    });
    this.connection.onRequest((method, params, token) => this.handle(method, params, token));
    this.connection.onNotification(() => {
      /* unknown notifications are ignored; $/cancelRequest is handled by the connection */
    });
    this.connection.onError(([e]) => log(`connection error: ${e?.message ?? e}`));
    this.connection.onClose(() => this.close());
    this.connection.listen();
    if (kind === 'socket') {
      this.initTimer = setTimeout(() => {
        if (!this.initialized) {
          log('closing: no initialize within the time limit');
          this.close();
        }
      }, engine.opts.initTimeoutMs ?? INIT_TIMEOUT_MS);
      this.initTimer.unref();
    }
  }

  clearInitTimer(): void {
    if (this.initTimer) clearTimeout(this.initTimer);
    this.initTimer = null;
  }

  private async handle(method: string, params: unknown, token: CancellationToken): Promise<unknown> {
    try {
      return await this.engine.dispatch(this, method, params, token);
    } catch (e) {
      const err = toResponseError(e, method);
      if (err.code === ERROR_CODES.INTERNAL) {
        this.engine.opts.log(`${this.id}: ${method} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      }
      throw err;
    }
  }

  /** Sends $/progress for a job of this session, if the request asked for progress. */
  progress(job: QueuedJob, token: string | undefined): void {
    if (!token || this.closed) return;
    this.connection
      .sendNotification(Progress, {
        token,
        jobId: job.id,
        method: job.method,
        fraction: job.fraction,
        message: job.message,
        state: job.state,
      })
      .catch(() => {});
  }

  /** Ends a connection that failed to authenticate: nothing more is read; closed after the reply. */
  refuse(): void {
    this.authFailed = true;
    this.closing = true;
    this.reader.dispose();
    // The refusal closes the connection itself once its reply is written (Session.handle); the
    // init timer must not close it first (on a busy engine both timers can fire at once), so it
    // becomes a later backstop.
    this.clearInitTimer();
    // Closed right after the refusal's reply (header + body) is handed to the socket: a timer
    // could fire before the write when a busy engine runs several expired timers at once.
    const out = this.output as NodeJS.WritableStream & { write: (...a: unknown[]) => boolean };
    const write = out.write.bind(out);
    let writes = 0;
    out.write = (...a: unknown[]) => {
      const r = write(...(a as Parameters<typeof write>));
      if (++writes === 2) setImmediate(() => this.close());
      return r;
    };
    // Backstop for a refusal that is never answered: 10 ticks of 1 s, so a stretch in which
    // the event loop was blocked counts once, not as its length.
    let ticks = 0;
    const backstop = setInterval(() => {
      if (++ticks < 10 && !this.isClosed) return;
      clearInterval(backstop);
      this.close();
    }, 1000);
    backstop.unref?.();
  }

  private get isClosed(): boolean {
    return this.closed;
  }

  /** Closes the connection once the current reply has been written. */
  closeAfterReply(): void {
    this.closing = true;
    setTimeout(() => this.close(), 50).unref?.();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearInitTimer();
    this.engine.detach(this);
    try {
      this.connection.dispose();
    } catch {
      /* already gone */
    }
    try {
      this.closeTransport();
    } catch {
      /* already gone */
    }
  }
}
