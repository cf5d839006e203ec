/**
 * The edit journal: which model the user loaded and which edits they applied to it, in order.
 * The client re-applies it after an engine restart (model/load with the same parameters, then
 * edit/apply {record} for every edit the engine does not have), so the model the user sees
 * never silently loses an edit. Persisted as JSON when a path is given, written atomically
 * (temporary file + rename), so a crash of the extension host leaves the old or the new file.
 * A file that cannot be read as a journal is never overwritten and never stops the client: it
 * is moved aside (`<file>.corrupt-<time>`, kept for the user) and the journal starts empty; the
 * problem is in `problem`, and the client reports it as a `warning` event.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { EditRecord, ModelLoadParams } from '../protocol/index.js';


export const JOURNAL_FORMAT = 'factlens-journal-v1';

export interface JournalData {
  format: typeof JOURNAL_FORMAT;
  /** The last model/load parameters (without progressToken), or null: none loaded. */
  model: Omit<ModelLoadParams, 'progressToken'> | null;
  /** Folder the engine resolved that load to (to tell whether a running engine has it). */
  modelDir: string | null;
  edits: EditRecord[];
}

export class EditJournal {
  private data: JournalData = { format: JOURNAL_FORMAT, model: null, modelDir: null, edits: [] };

  /** Why the file could not be read, and where it was moved (null: read fine, or none). */
  readonly problem: { message: string; file: string; movedTo: string | null } | null = null;

  constructor(public file?: string) {
    if (!file || !fs.existsSync(file)) return;
    let why: string;
    try {
      const raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<JournalData> | null;
      if (raw && raw.format === JOURNAL_FORMAT && Array.isArray(raw.edits) && raw.edits.every((r) => r && typeof r === 'object' && typeof r.id === 'string')) {
        this.data = { format: JOURNAL_FORMAT, model: raw.model ?? null, modelDir: raw.modelDir ?? null, edits: raw.edits };
        return;
      }
      why = `it is not a Fact Lens edit journal (format ${JSON.stringify(raw?.format ?? null)}, or edits without ids)`;
    } catch (e) {
      why = `it is not valid JSON (${(e as Error).message.split('\n')[0]})`;
    }
    const movedTo = `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    let moved: string | null = movedTo;
    try {
      fs.renameSync(file, movedTo);
    } catch {
      moved = null;
    }
    this.problem = {
      file,
      movedTo: moved,
      message:
        `the edit journal ${file} could not be read: ${why}; ` +
        (moved ? `it was moved to ${moved} (kept) and the journal starts empty` : 'it could not be moved aside, so it is left as it is and not used'),
    };
    if (!moved) this.file = undefined; // never overwrite what could not be moved
  }

  get model(): JournalData['model'] {
    return this.data.model;
  }

  get modelDir(): string | null {
    return this.data.modelDir;
  }

  get edits(): readonly EditRecord[] {
    return this.data.edits;
  }

  /** A model was loaded: the edits of the previous one are gone with it. */
  setModel(params: ModelLoadParams, dir: string): void {
    const { progressToken: _drop, ...rest } = params;
    this.data = { format: JOURNAL_FORMAT, model: rest, modelDir: dir, edits: [] };
    this.save();
  }

  add(record: EditRecord): void {
    this.data.edits = [...this.data.edits.filter((r) => r.id !== record.id), record];
    this.save();
  }

  remove(id: string): boolean {
    const before = this.data.edits.length;
    this.data.edits = this.data.edits.filter((r) => r.id !== id);
    if (this.data.edits.length !== before) this.save();
    return this.data.edits.length !== before;
  }

  clear(): void {
    this.data = { format: JOURNAL_FORMAT, model: null, modelDir: null, edits: [] };
    this.save();
  }

  toJSON(): JournalData {
    return this.data;
  }

  private save(): void {
    if (!this.file) return;
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(this.data));
    fs.renameSync(tmp, this.file);
  }
}
