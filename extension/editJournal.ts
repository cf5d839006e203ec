/**
 * The user's edits, kept across engine crashes, "Restart engine" and window reloads: one JSON
 * file per model under a folder (the extension's global storage, `edits/<content hash>.json`),
 * keyed by the model's content hash, so switching to another model and back brings its edits
 * back too. Every apply and revert goes through here: the engine acknowledges it, then the
 * file is rewritten atomically (temporary file + rename), then listeners hear of it.
 *
 * `restore` brings a fresh engine to the journal's state by re-applying the stored records
 * (`edit/apply {record}`: the deltas as computed, no recomputation). A file that cannot be
 * read is moved aside (`<hash>.corrupt-<time>.json`) with a warning naming both files, never
 * overwritten; a record the engine refuses stays in the file and is reported.
 *
 * Free of `vscode`, so the tests drive it with a real engine client.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RequestOptions } from '../engine/client/index.js';
import {
  EditApply,
  EditList,
  EditRevert,
  type EditApplyParams,
  type EditRecord,
  type ModelInfo,
} from '../engine/protocol.js';
import type { RequestType } from 'vscode-jsonrpc';

export const EDITS_FORMAT = 'factlens-edits-v1';

export interface EditsFile {
  format: typeof EDITS_FORMAT;
  model: { name: string; contentHash: string; dir: string };
  /** Applied edits, oldest first (the order they are re-applied in). */
  edits: EditRecord[];
}

export type EditsCause = 'apply' | 'revert' | 'restore' | 'model' | 'import';

/** What changed; `edits` is the whole list after the change. */
export interface EditsChange {
  model: ModelInfo | null;
  edits: readonly EditRecord[];
  added: readonly EditRecord[];
  removed: readonly string[];
  cause: EditsCause;
}

/** What the journal needs of the engine client (EngineClient, or EngineService's wrapper). */
export interface Requester {
  request<P, R>(type: RequestType<P, R, unknown>, params: P, opts?: RequestOptions): Promise<R>;
}

export class PersistentEditJournal {
  private model: ModelInfo | null = null;
  private records: EditRecord[] = [];
  private readonly listeners: Array<(c: EditsChange) => void> = [];

  constructor(
    readonly dir: string,
    private readonly warn: (message: string) => void,
  ) {}

  get edits(): readonly EditRecord[] {
    return this.records;
  }

  get currentModel(): ModelInfo | null {
    return this.model;
  }

  /** The file of a model's journal. */
  fileFor(contentHash: string): string {
    if (!/^[0-9a-f]{16,128}$/i.test(contentHash)) throw new Error(`not a model content hash: ${JSON.stringify(contentHash)}`);
    return path.join(this.dir, `${contentHash}.json`);
  }

  get file(): string | null {
    return this.model ? this.fileFor(this.model.contentHash) : null;
  }

  onChange(listener: (c: EditsChange) => void): { dispose(): void } {
    this.listeners.push(listener);
    return { dispose: () => void this.listeners.splice(this.listeners.indexOf(listener), 1) };
  }

  /**
   * A model is loaded in a (possibly fresh) engine: read its journal and re-apply every stored
   * edit the engine does not have. Edits the engine has that the file lacks (none, normally)
   * are kept and written down.
   */
  async restore(client: Requester, model: ModelInfo): Promise<{ reapplied: string[]; failed: Array<{ id: string; message: string }> }> {
    const changedModel = this.model?.contentHash !== model.contentHash;
    this.model = model;
    const stored = this.read(this.fileFor(model.contentHash));
    const present = await client.request(EditList, {});
    const have = new Set(present.map((r) => r.id));
    const reapplied: string[] = [];
    const failed: Array<{ id: string; message: string }> = [];
    for (const record of stored) {
      if (have.has(record.id)) continue;
      try {
        await client.request(EditApply, { record });
        reapplied.push(record.id);
        have.add(record.id);
      } catch (e) {
        failed.push({ id: record.id, message: e instanceof Error ? e.message : String(e) });
      }
    }
    const applied = await client.request(EditList, {});
    // Refused records stay in the file (in order), so nothing is dropped silently.
    const appliedIds = new Set(applied.map((r) => r.id));
    const kept = stored.filter((r) => !appliedIds.has(r.id) && failed.some((f) => f.id === r.id));
    const before = this.records.map((r) => r.id);
    this.records = applied;
    this.write([...applied, ...kept]);
    for (const f of failed) {
      this.warn(`the edit ${f.id} in ${this.file} could not be re-applied: ${f.message} (it stays in the journal)`);
    }
    this.emit({
      cause: changedModel ? 'model' : 'restore',
      added: applied.filter((r) => !before.includes(r.id)),
      removed: before.filter((id) => !appliedIds.has(id)),
    });
    return { reapplied, failed };
  }

  /** The engine was restarted by the client after a crash and re-applied the edits itself. */
  async resync(client: Requester): Promise<void> {
    if (!this.model) return;
    const applied = await client.request(EditList, {});
    const before = this.records.map((r) => r.id);
    this.records = applied;
    this.emit({ cause: 'restore', added: applied.filter((r) => !before.includes(r.id)), removed: before.filter((id) => !applied.some((r) => r.id === id)) });
  }

  /** Computes (or re-applies) an edit in the engine, then records it. */
  async apply(client: Requester, params: EditApplyParams, opts?: RequestOptions): Promise<EditRecord> {
    this.requireModel();
    const record = await client.request(EditApply, params, opts);
    this.records = [...this.records.filter((r) => r.id !== record.id), record];
    this.write(this.records);
    this.emit({ cause: 'apply', added: [record], removed: [] });
    return record;
  }

  async revert(client: Requester, id: string): Promise<void> {
    this.requireModel();
    const r = await client.request(EditRevert, { id });
    this.records = this.records.filter((x) => x.id !== id && r.remaining.includes(x.id));
    this.write(this.records);
    this.emit({ cause: 'revert', added: [], removed: [id] });
  }

  async revertAll(client: Requester): Promise<void> {
    this.requireModel();
    const ids = [...this.records].reverse().map((r) => r.id);
    const removed: string[] = [];
    try {
      for (const id of ids) {
        await client.request(EditRevert, { id });
        removed.push(id);
      }
    } finally {
      this.records = this.records.filter((r) => !removed.includes(r.id));
      this.write(this.records);
      if (removed.length) this.emit({ cause: 'revert', added: [], removed });
    }
  }

  /** Writes the current model's journal to another file (Export journal…). */
  exportTo(file: string): number {
    const m = this.requireModel();
    const data: EditsFile = { format: EDITS_FORMAT, model: { name: m.name, contentHash: m.contentHash, dir: m.dir }, edits: [...this.records] };
    writeAtomic(file, JSON.stringify(data, null, 1) + '\n');
    return data.edits.length;
  }

  /**
   * Applies the edits of an exported journal that are not applied yet (Import journal…). A
   * journal of another model is refused naming both models; records are re-applied as they
   * are, so an import never recomputes.
   */
  async importFrom(client: Requester, file: string): Promise<{ applied: string[]; skipped: string[] }> {
    const m = this.requireModel();
    let data: EditsFile;
    try {
      data = parseEditsFile(fs.readFileSync(file, 'utf8'));
    } catch (e) {
      throw new Error(`${file} is not a Fact Lens edit journal: ${(e as Error).message}`);
    }
    if (data.model.contentHash !== m.contentHash) {
      throw new Error(
        `${file} holds edits of the model ${data.model.name} (content hash ${data.model.contentHash.slice(0, 12)}…), ` +
          `not of the loaded ${m.name} (${m.contentHash.slice(0, 12)}…); load that model first`,
      );
    }
    const have = new Set(this.records.map((r) => r.id));
    const applied: EditRecord[] = [];
    const skipped: string[] = [];
    for (const record of data.edits) {
      if (have.has(record.id)) {
        skipped.push(record.id);
        continue;
      }
      applied.push(await client.request(EditApply, { record }));
    }
    this.records = [...this.records, ...applied];
    this.write(this.records);
    if (applied.length) this.emit({ cause: 'import', added: applied, removed: [] });
    return { applied: applied.map((r) => r.id), skipped };
  }

  private requireModel(): ModelInfo {
    if (!this.model) throw new Error('no model is loaded yet');
    return this.model;
  }

  private emit(c: Omit<EditsChange, 'model' | 'edits'>): void {
    const change: EditsChange = { ...c, model: this.model, edits: this.records };
    for (const l of [...this.listeners]) l(change);
  }

  /** The stored records; a file that cannot be read is moved aside (never overwritten) with a warning. */
  private read(file: string): EditRecord[] {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    try {
      return parseEditsFile(text).edits;
    } catch (e) {
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      const moved = file.replace(/\.json$/, `.corrupt-${stamp}.json`);
      fs.renameSync(file, moved);
      this.warn(`the edit journal ${file} could not be read (${(e as Error).message}); it was moved to ${moved} and a new journal started`);
      return [];
    }
  }

  private write(records: readonly EditRecord[]): void {
    const m = this.requireModel();
    const data: EditsFile = { format: EDITS_FORMAT, model: { name: m.name, contentHash: m.contentHash, dir: m.dir }, edits: [...records] };
    writeAtomic(this.fileFor(m.contentHash), JSON.stringify(data));
  }
}

/** Parses and checks a journal file's text; throws naming what is wrong. */
export function parseEditsFile(text: string): EditsFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new Error(`not valid JSON: ${(e as Error).message}`);
  }
  const o = raw as Partial<EditsFile> | null;
  if (!o || typeof o !== 'object' || o.format !== EDITS_FORMAT) {
    throw new Error(`format is ${JSON.stringify((o as { format?: unknown } | null)?.format)}, expected "${EDITS_FORMAT}"`);
  }
  if (!o.model || typeof o.model.contentHash !== 'string') throw new Error('model.contentHash is missing');
  if (!Array.isArray(o.edits)) throw new Error('edits is not an array');
  o.edits.forEach((r, i) => {
    if (!r || typeof r !== 'object' || typeof r.id !== 'string' || !Array.isArray(r.deltas) || !r.request) {
      throw new Error(`edits[${i}] is not an edit record (needs id, request and deltas)`);
    }
  });
  return o as EditsFile;
}

function writeAtomic(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}-${crypto.randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}
