/**
 * The extension's handle on the engine process: spawns dist/engine/server.js through the
 * engine client (engine/client), loads the model the settings name, reports state changes to
 * the status bar and the engine log to the output channel, and restarts on request.
 *
 * It owns the user's edits (PersistentEditJournal, under the extension's global storage,
 * keyed by the model's content hash): every edit is applied and reverted through it, it is
 * re-applied after an engine crash, "Restart engine" and a window reload, and
 * `onDidChangeEdits` tells other features (the Edits tree, decorations) what changed.
 *
 * Imports from engine/ only the protocol and the client (architecture.md, dependency rules).
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { EngineClient, EngineError, type EngineState, type RequestOptions } from '../engine/client/index.js';
import { EditSave, ModelLoad, type EditApplyParams, type EditRecord, type EditSaveResult, type InitializeResult, type ModelInfo } from '../engine/protocol.js';
import type { RequestType } from 'vscode-jsonrpc';
import { readConfig } from './config.js';
import { PersistentEditJournal, type EditsChange } from './editJournal.js';

export type { EditsChange } from './editJournal.js';

export type BackendName = ModelInfo['backend'];

/** What the status bar shows. */
export interface EngineStatus {
  state: EngineState | 'loading' | 'error';
  model: ModelInfo | null;
  info: InitializeResult | null;
  /** The last error (start, load), shown in the tooltip. */
  error?: string;
  detail?: string;
}

export class EngineService implements vscode.Disposable {
  private client: EngineClient | null = null;
  private starting: Promise<EngineClient> | null = null;
  private _status: EngineStatus = { state: 'idle', model: null, info: null };
  private readonly emitter = new vscode.EventEmitter<EngineStatus>();
  readonly onDidChangeStatus = this.emitter.event;
  private generation = 0;
  private readonly journal: PersistentEditJournal;
  private readonly editsEmitter = new vscode.EventEmitter<EditsChange>();
  /** Fired after every change of the applied edits (apply, revert, re-applied after a restart, another model). */
  readonly onDidChangeEdits = this.editsEmitter.event;

  constructor(
    private readonly context: vscode.ExtensionContext,
    private readonly log: vscode.LogOutputChannel,
  ) {
    this.journal = new PersistentEditJournal(path.join(context.globalStorageUri.fsPath, 'edits'), (message) => {
      this.log.warn(message);
      void vscode.window.showWarningMessage(`Fact Lens: ${message}`);
    });
    this.journal.onChange((c) => {
      this.log.info(`edits (${c.cause}): ${c.edits.length} applied${c.added.length ? `, +${c.added.map((r) => r.id).join(', ')}` : ''}${c.removed.length ? `, -${c.removed.join(', ')}` : ''}`);
      this.editsEmitter.fire(c);
    });
  }

  /** The edits applied to the loaded model, oldest first. */
  get edits(): readonly EditRecord[] {
    return this.journal.edits;
  }

  /** Where the loaded model's edits are kept (null before a model is loaded). */
  get journalFile(): string | null {
    return this.journal.file;
  }

  /** Computes an edit (or re-applies a record) and journals it. */
  async applyEdit(params: EditApplyParams, opts?: RequestOptions): Promise<EditRecord> {
    const c = await this.ready();
    return this.journal.apply(c, params, opts);
  }

  async revertEdit(id: string): Promise<void> {
    const c = await this.ready();
    await this.journal.revert(c, id);
  }

  async revertAllEdits(): Promise<void> {
    const c = await this.ready();
    await this.journal.revertAll(c);
  }

  /** Writes the model with its applied edits as a checkpoint folder (engine/edit save). */
  async saveEditedModel(dir: string): Promise<EditSaveResult> {
    const c = await this.ready();
    return c.request(EditSave, { dir });
  }

  async exportJournal(file: string): Promise<number> {
    await this.ready();
    return this.journal.exportTo(file);
  }

  async importJournal(file: string): Promise<{ applied: string[]; skipped: string[] }> {
    const c = await this.ready();
    return this.journal.importFrom(c, file);
  }

  get status(): EngineStatus {
    return this._status;
  }

  private setStatus(s: Partial<EngineStatus>): void {
    this._status = { ...this._status, ...s };
    this.emitter.fire(this._status);
  }

  /** The running client, started (and its model loaded) on first use. */
  async ready(): Promise<EngineClient> {
    if (this.client && this._status.model && this.client.state !== 'failed' && this.client.state !== 'stopped') return this.client;
    if (!this.starting) {
      this.starting = this.start().finally(() => (this.starting = null));
    }
    return this.starting;
  }

  private async start(): Promise<EngineClient> {
    const gen = ++this.generation;
    const enginePath = this.context.asAbsolutePath('dist/engine/server.js');
    let client = this.client;
    if (!client || client.state === 'failed' || client.state === 'stopped') {
      this.setStatus({ state: 'starting', model: null, info: null, error: undefined, detail: undefined });
      this.log.info(`starting the engine: ${process.execPath} ${enginePath}`);
      try {
        client = await EngineClient.spawn({
          enginePath,
          clientName: 'vscode-factlens',
          clientVersion: String(this.context.extension.packageJSON.version ?? ''),
          cwd: this.context.extensionPath,
          // The client restarts a crashed engine with backoff; its in-memory journal re-loads
          // the model (and re-applies edits) in the new process.
          restart: { maxAttempts: 5 },
        });
      } catch (e) {
        const msg = errorMessage(e);
        this.log.error(`the engine did not start: ${msg}`);
        this.setStatus({ state: 'failed', error: msg });
        throw e;
      }
      if (gen !== this.generation) {
        await client.stop().catch(() => {});
        throw new EngineError(-1, 'the engine was restarted while starting');
      }
      this.attach(client);
      this.client = client;
      this.setStatus({ state: 'ready', info: client.info });
      this.log.info(
        `engine ${client.info?.engineVersion ?? '?'} ready (pid ${client.pid ?? '?'}, protocol ${client.info?.protocolVersion ?? '?'}); ` +
          `backends: ${(client.info?.backend.available ?? []).map((b) => `${b.name}${b.available ? '' : ' (unavailable)'}`).join(', ')}`,
      );
    }
    await this.loadModel(client);
    return client;
  }

  private attach(client: EngineClient): void {
    client.on('log', (line, source) => {
      if (source === 'engine') this.log.info(`[engine] ${line}`);
      else this.log.info(`[client] ${line}`);
    });
    client.on('state', (e) => {
      if (client !== this.client) return;
      const detail =
        e.state === 'restarting'
          ? `restart ${e.attempt} in ${Math.round((e.delayMs ?? 0) / 100) / 10} s`
          : e.reason
            ? e.reason
            : undefined;
      this.log.info(`engine state: ${e.state}${detail ? ` (${detail})` : ''}`);
      this.setStatus({ state: e.state, detail, info: client.info ?? this._status.info, ...(e.state === 'failed' ? { error: e.reason } : {}) });
    });
    client.on('reapplied', (r) => {
      if (client !== this.client) return;
      if (r.model) this.log.info('the engine restarted; the model was loaded again');
      if (r.edits.length) this.log.info(`the engine restarted; ${r.edits.length} edit(s) re-applied: ${r.edits.join(', ')}`);
      this.journal.resync(client).catch((e) => this.log.warn(`could not list the edits after the restart: ${errorMessage(e)}`));
    });
    client.on('journalError', ({ record, error }) => {
      void vscode.window.showWarningMessage(`Fact Lens: the edit ${record.id} (${record.request.subject} → ${record.request.target}) could not be re-applied after the restart: ${error.message}`);
    });
  }

  /** Loads the model folder and backend the settings name (model/load). */
  async loadModel(client?: EngineClient): Promise<ModelInfo> {
    const c = client ?? (await this.ready());
    const cfg = readConfig();
    this.setStatus({ state: 'loading', error: undefined });
    const what = cfg.modelFolder || 'the embedded tinyworld model';
    this.log.info(`loading ${what}${cfg.backend !== 'auto' ? ` on ${cfg.backend}` : ''}`);
    try {
      // Fields written out (no conditional spreads), so a renamed protocol field fails to compile here.
      const info = await c.request(ModelLoad, {
        dir: cfg.modelFolder || undefined,
        backend: cfg.backend !== 'auto' ? cfg.backend : undefined,
      });
      this.log.info(`model ${info.name} (${info.modelType}, ${info.nLayer} layers, ${(info.parameterCount / 1e6).toFixed(1)}M parameters) on ${info.backend}`);
      // The model's journal: its edits come back as they were computed (no recomputation).
      const r = await this.journal.restore(c, info);
      if (r.reapplied.length) this.log.info(`re-applied ${r.reapplied.length} edit(s) from ${this.journal.file}: ${r.reapplied.join(', ')}`);
      this.setStatus({ state: 'ready', model: info, info: c.info });
      return info;
    } catch (e) {
      const msg = errorMessage(e);
      this.log.error(`model/load failed: ${msg}`);
      this.setStatus({ state: 'error', model: null, error: msg });
      throw e;
    }
  }

  /** Sends a request once the engine and model are ready. */
  async request<P, R>(type: RequestType<P, R, unknown>, params: P, opts?: RequestOptions): Promise<R> {
    const c = await this.ready();
    return c.request(type, params, opts);
  }

  /** Stops the engine and starts a new one (the command and the status-bar menu). */
  async restart(): Promise<void> {
    this.generation++;
    const old = this.client;
    this.client = null;
    this.starting = null;
    this.setStatus({ state: 'restarting', model: null, detail: 'restart requested' });
    if (old) {
      this.log.info('stopping the engine');
      await old.stop().catch((e) => this.log.warn(`stop: ${errorMessage(e)}`));
    }
    await this.ready();
  }

  async dispose(): Promise<void> {
    this.generation++;
    const c = this.client;
    this.client = null;
    this.emitter.dispose();
    this.editsEmitter.dispose();
    await c?.stop().catch(() => {});
  }
}

/** The message of an engine or other error, for notifications and logs. */
export function errorMessage(e: unknown): string {
  if (e instanceof EngineError) return e.message;
  if (e instanceof Error) return e.message;
  return String(e);
}

/** The engine's symbolic error code, when the error came from the engine. */
export function errorCode(e: unknown): string {
  if (e instanceof EngineError) return String(e.kind);
  return 'ERROR';
}
