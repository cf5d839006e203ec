/**
 * The edit journal: which model the user loaded and which edits they applied to it, in order.
 * The client re-applies it after an engine restart (model/load with the same parameters, then
 * edit/apply {record} for every edit the engine does not have), so the model the user sees
 * never silently loses an edit. Persisted as JSON when a path is given, written atomically
 * (temporary file + rename), so a crash of the extension host leaves the old or the new file.
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

  constructor(readonly file?: string) {
    if (file && fs.existsSync(file)) {
      const raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<JournalData>;
      if (raw.format !== JOURNAL_FORMAT || !Array.isArray(raw.edits)) {
        throw new Error(`${file} is not a Fact Lens edit journal (format ${String(raw.format)})`);
      }
      this.data = { format: JOURNAL_FORMAT, model: raw.model ?? null, modelDir: raw.modelDir ?? null, edits: raw.edits };
    }
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
